"""Peak memory of a real ComfyUI server running the image-edit workflow at 512 px, and how soon Train Edit Layer
shows progress.

    python bench/comfy_memory.py --comfyui-dir /path/to/ComfyUI [--python /path/to/venv/bin/python]
                                 [--iters 3 --size 512 --image assets/chelsea.jpg --no-write]

Starts ``main.py --cpu`` on 127.0.0.1 with a temporary ``--base-directory`` whose ``custom_nodes`` links this
repository and whose ``models/text2live`` holds a CLIP of the ViT-B/32 architecture with random weights (it
costs exactly what the real one costs; no download), then queues the shipped image-edit workflow
(``tests/workflows_api/image_edit.json``: Load CLIP, Relevancy Map, Train Edit Layer, Composite, saves and
previews) on ``--image`` (the bundled photo, 451x300: a 770x512 working image at 512 px) with that CLIP,
``--size`` and ``--iters``. Measured from the server process
(``/proc/<pid>/status``): RSS once the server is idle before the prompt, its peak while the prompt runs
(VmHWM, reset just before queueing) and RSS sampled every 0.2 s; from the websocket: seconds from Train Edit
Layer's start to its first progress event and to its first training step.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(HERE))

import report  # noqa: E402
from comfy_websocket import ComfyWebSocket  # noqa: E402
from report import publish, table  # noqa: E402

GIB = 2.0**30


def _status_gib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024 / GIB
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def _post(url: str, payload: dict):
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def _prompt(size: int, iters: int, clip_file: str) -> dict:
    prompt = json.loads((REPO / "tests" / "workflows_api" / "image_edit.json").read_text())
    for node in prompt.values():
        if node["class_type"] == "T2L_LoadCLIP":
            node["inputs"].update(model=clip_file, device="cpu")
        if node["class_type"] == "T2L_TrainEditLayer":
            node["inputs"].update(iterations=iters, size=size, resume=False, preview_every=1)
        if node["class_type"] == "LoadImage":
            node["inputs"]["image"] = "photo.png"
    return prompt


def _parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--comfyui-dir", default=os.environ.get("T2L_COMFYUI_DIR"), help="a ComfyUI checkout")
    ap.add_argument("--python", default=os.environ.get("T2L_COMFYUI_PYTHON", sys.executable),
                    help="the Python that runs ComfyUI")
    ap.add_argument("--size", type=int, default=512, help="Train Edit Layer's working size")
    ap.add_argument("--iters", type=int, default=3, help="training steps")
    ap.add_argument("--image", default=str(REPO / "assets" / "chelsea.jpg"), help="the photo to edit")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds the prompt may take")
    report.add_no_write_option(ap)
    args = ap.parse_args()
    report.apply_no_write(args)
    if not args.comfyui_dir:
        ap.error("give --comfyui-dir (or set T2L_COMFYUI_DIR)")
    return args


def _prepare_base(base: Path, image: str) -> tuple[str, tuple[int, int]]:
    """The server's base directory: this pack linked, the photo as input/photo.png, a random ViT-B/32 CLIP.
    Returns the CLIP's file name and the photo's size (w, h)."""
    from PIL import Image

    from t2l_core.clip.loading import build_random_clip, save_clip

    for d in ("custom_nodes", "models/text2live", "input", "output", "temp", "user"):
        (base / d).mkdir(parents=True, exist_ok=True)
    (base / "custom_nodes" / "comfyui-text2live").symlink_to(REPO, target_is_directory=True)
    with Image.open(image) as im:
        im.convert("RGB").save(base / "input" / "photo.png")
        photo_size = im.size
    clip_file = "random-vit-b-32.safetensors"
    save_clip(build_random_clip("ViT-B-32-quickgelu", seed=0), base / "models" / "text2live" / clip_file,
              note="random weights: a benchmark stand-in, NOT a real model")
    return clip_file, photo_size


def _start_server(args: argparse.Namespace, base: Path, port: int) -> subprocess.Popen:
    """ComfyUI on ``port``, once it serves this pack's nodes (its log in base/comfyui.log)."""
    log = open(base / "comfyui.log", "w")
    cmd = [args.python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
           "--disable-auto-launch", "--base-directory", str(base), "--database-url", "sqlite:///:memory:"]
    proc = subprocess.Popen(cmd, cwd=args.comfyui_dir, stdout=log, stderr=subprocess.STDOUT,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    end = time.time() + 300
    while True:
        if proc.poll() is not None:
            raise SystemExit("ComfyUI exited:\n" + (base / "comfyui.log").read_text()[-3000:])
        try:
            if "T2L_TrainEditLayer" in _get(f"http://127.0.0.1:{port}/object_info/T2L_TrainEditLayer", timeout=5):
                return proc
        except (urllib.error.URLError, ConnectionError, socket.timeout):
            pass
        if time.time() > end:
            raise SystemExit("ComfyUI did not serve our nodes in 300 s")
        time.sleep(1)


def _stop_server(proc: subprocess.Popen | None) -> None:
    if proc is None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


class _RssSampler:
    """The server's RSS every 0.2 s on a thread: ``samples`` (time, GiB)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.time(), _status_gib(self.pid, "VmRSS")))
            except (OSError, RuntimeError):
                return
            time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class _PromptRun:
    """What the websocket said while the prompt ran: times (time.time()) and the executor's progress."""

    queued: float
    train: float | None = None  # Train Edit Layer started
    first: float | None = None  # its first progress event
    first_event: str | None = None
    step1: float | None = None  # its first training step (the first preview image)
    done: float | None = None
    running: list[tuple[float, object]] = field(default_factory=list)  # (time, node id) as the executor moves on

    def read(self, msg: dict | None, t: float, pid: str, train_id: str) -> bool:
        """Take one websocket message (None = a preview image); True once the prompt has finished."""
        if msg is None:  # with preview_every 1, the first preview comes with training step 1
            if self.train is not None and self.step1 is None:
                self.step1 = t
            return False
        data, kind = msg.get("data", {}), msg["type"]
        if kind in ("execution_error", "execution_interrupted"):
            raise SystemExit(f"the prompt failed: {json.dumps(msg)[:3000]}")
        if kind == "progress" and data.get("node") == train_id and self.first is None:
            self.first, self.first_event = t, f"{data['value']}/{data['max']}"
        if kind != "executing":
            return False
        if data.get("prompt_id") == pid:
            self.running.append((t, data.get("node")))
        if data.get("node") == train_id and self.train is None:
            self.train = t
        if data.get("node") is None and data.get("prompt_id") == pid:
            self.done = t
            return True
        return False


def _run_prompt(port: int, prompt: dict, timeout: float) -> _PromptRun:
    """Queue ``prompt`` and follow it on the websocket until it finishes."""
    client_id = uuid.uuid4().hex
    ws = ComfyWebSocket(port, client_id)
    train_id = next(k for k, v in prompt.items() if v["class_type"] == "T2L_TrainEditLayer")
    run = _PromptRun(queued=time.time())
    pid = _post(f"http://127.0.0.1:{port}/prompt", {"prompt": prompt, "client_id": client_id})["prompt_id"]
    end = time.time() + timeout
    while True:
        got = ws.frame(timeout=max(1.0, end - time.time()))
        if got is None or time.time() > end:
            raise SystemExit("the prompt did not finish in time")
        if run.read(got[1], got[0], pid, train_id):
            ws.close()
            return run


def _per_node(run: _PromptRun, samples: list[tuple[float, float]], prompt: dict) -> list[str]:
    """The most RSS sampled while each node ran, 'class_type GiB' in run order."""
    out = []
    for (t0, node), (t1, _) in zip(run.running, run.running[1:]):
        values = [v for t, v in samples if t0 <= t < t1]
        if node is not None and values:
            out.append(f"{prompt[node]['class_type']} {max(values):.2f}")
    return out


def _publish(args: argparse.Namespace, photo_size: tuple[int, int], memory: dict, run: _PromptRun,
             per_node: list[str], phases: list[str]) -> None:
    idle, peak = memory["idle"], memory["peak"]
    w, h = photo_size
    work = (round(w * args.size / min(w, h)), round(h * args.size / min(w, h)))
    rows = [[f"{Path(args.image).name} {w}x{h} (working {work[0]}x{work[1]}), {args.iters} steps, 16 views, "
             "relevancy mask", f"{idle:.2f}", f"{peak:.2f}", f"{memory['sampled']:.2f}", f"{peak - idle:.2f}",
             f"{run.first - run.train:.2f}", f"{run.step1 - run.train:.1f}", f"{run.done - run.queued:.1f}"]]
    body = table(["workflow (tests/workflows_api/image_edit.json)", "server RSS idle before the prompt GiB",
                  "server peak RSS during the prompt GiB (VmHWM)", "max sampled RSS GiB (0.2 s)",
                  "peak minus idle GiB", "s to first progress of Train Edit Layer",
                  "s to its first training step", "s for the whole prompt"], rows)
    comfy_version = subprocess.run(["git", "-C", args.comfyui_dir, "log", "-1", "--format=%h %cs"],
                                   capture_output=True, text=True).stdout.strip()
    notes = (f"ComfyUI {comfy_version} (`main.py --cpu`), its own Python: {args.python}. CLIP: ViT-B/32 architecture "
             "with random weights, fp32, loaded by Load CLIP from models/text2live. Server peak RSS over its whole "
             f"life (start-up included): {memory['startup_peak']:.2f} GiB before the prompt. First progress event of "
             f"Train Edit Layer: {run.first_event}. Start-up phases the node reported: {'; '.join(phases) or 'none'}. "
             f"Most RSS sampled while each node ran (GiB, in run order): {', '.join(per_node)}.")
    publish(f"ComfyUI server memory, image-edit workflow at {args.size} px (random ViT-B/32)", body, notes)


def main() -> None:
    args = _parse_args()
    base = Path(tempfile.mkdtemp(prefix="t2l_comfy_memory_"))
    proc = None
    try:
        clip_file, photo_size = _prepare_base(base, args.image)
        port = _free_port()
        proc = _start_server(args, base, port)
        time.sleep(5)  # idle: the server's resting memory
        memory = {"idle": _status_gib(proc.pid, "VmRSS"), "startup_peak": _status_gib(proc.pid, "VmHWM")}
        Path(f"/proc/{proc.pid}/clear_refs").write_text("5")  # VmHWM from here on: the prompt's peak
        sampler = _RssSampler(proc.pid)
        prompt = _prompt(args.size, args.iters, clip_file)
        run = _run_prompt(port, prompt, args.timeout)
        memory["peak"] = _status_gib(proc.pid, "VmHWM")
        print(f"idle {memory['idle']:.2f} GiB, peak {memory['peak']:.2f} GiB, first progress "
              f"{run.first - run.train:.2f} s, step 1 {run.step1 - run.train:.1f} s", flush=True)
        sampler.stop()
        log_text = (base / "comfyui.log").read_text()
        phases = [line.split("Text2LIVE: ", 1)[1] for line in log_text.splitlines() if "Text2LIVE: start-up" in line]
    finally:
        _stop_server(proc)
        shutil.rmtree(base, ignore_errors=True)
    memory["sampled"] = max(v for _, v in sampler.samples)
    _publish(args, photo_size, memory, run, _per_node(run, sampler.samples, prompt), phases)


if __name__ == "__main__":
    main()
