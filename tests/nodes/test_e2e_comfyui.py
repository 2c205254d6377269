"""End to end against a REAL ComfyUI server (opt-in).

    T2L_COMFYUI_DIR=/path/to/ComfyUI [T2L_COMFYUI_PYTHON=/path/to/venv/bin/python] \
        python -m pytest tests/nodes/test_e2e_comfyui.py -m e2e -q

Starts ``main.py --cpu`` on 127.0.0.1 with a temporary ``--base-directory`` whose ``custom_nodes`` holds a
symlink to this repository and whose ``models/text2live`` holds a tiny random CLIP; waits for our node ids in
``/object_info``; checks that ComfyUI serves them as V3 nodes (comfy_entrypoint) whose entries are the classic
declarations; runs the workflows the previous node version shipped (tests/workflows_previous, one with every widget
changed) unchanged; asks the template route for each workflow and its thumbnail (what the frontend's template
browser opens) and the model folder their Load CLIP's download metadata names; runs every shipped workflow
(converted to the API format, at tiny sizes) through ``POST /prompt``; polls ``/history`` for success and fetches
every output through ``/view`` (the mp4s at the input video's frame rate, with its sound); sends a video with a
sound track through Load Video -> Fit Layered Atlas -> Train Edit Layer -> Atlas Render -> Save Video and reads
the mp4 with PyAV (frame rate, frame count, the sound); reads pyproject.toml with ComfyUI's own parser; saves, loads and applies an edit layer (the trained composite within 1/255); checks
that a missing CLIP refuses the whole video prompt with one message, that bad settings (a colour Composite
cannot read, fp16 on the CPU) are refused by POST /prompt before any node runs with one message per node,
and that a setting wired from another node is checked when its node runs; then interrupts a long training run and
checks it stops within seconds, leaves a checkpoint, and the server keeps serving; sends NaN frames (from a
test-only node pack installed next to ours) into Fit Layered Atlas and checks for a clear error and a server
that answers the next prompt; checks that ``POST /free`` with ``unload_models`` releases a Train Edit Layer
prompt's CLIP (the server's resident memory drops, ComfyUI loads the CLIP anew for the next prompt, which gives
the identical image), and, in a separate process against ComfyUI's own ``comfy.model_management`` (no server),
that our models are loaded whole where ComfyUI asks for a partial load and come back after an unload.
With Playwright and Chromium present it also loads each workflow in the real frontend and compares the
frontend's own API conversion with ours.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from comfy_websocket import ComfyWebSocket
from conftest import REPO
from v3_info import classic_info, v3_expected
from workflow_format import check_workflow, iter_workflows, load_json, node_defs, output_nodes, set_widget, to_api

pytestmark = pytest.mark.e2e

COMFY_DIR = os.environ.get("T2L_COMFYUI_DIR")
if not COMFY_DIR:
    pytest.skip("set T2L_COMFYUI_DIR to a ComfyUI checkout to run the end-to-end tests", allow_module_level=True)

COMFY_PYTHON = os.environ.get("T2L_COMFYUI_PYTHON", sys.executable)
WORKFLOWS = list(iter_workflows(REPO / "example_workflows"))
#: the workflows the previous node version shipped (saved before the schema move), and one of them with every
#: widget of every node changed from its default (already at tiny sizes with the tiny CLIP: it runs as saved)
PREVIOUS = sorted((REPO / "tests" / "workflows_previous").glob("*.json"))
EVERY_WIDGET = "image_edit_every_widget_changed"
FRAMES, HEIGHT, WIDTH = 8, 144, 176  # small video: the video edit generator needs >= 129 px frames
FPS = 10  # the videos' frame rate, which the saved videos must keep
SOUND_RATE, TONE = 22050, 440.0  # the sound track of input_video.mp4 and with_sound.mp4: a 440 Hz sine
SOUND_FPS = 12  # with_sound.mp4's frame rate (another than input_video.mp4's)
PACK_NAME = "comfyui-text2live"  # the folder name under custom_nodes, as ComfyUI names our routes


# ---------------------------------------------------------------------------------------------- HTTP + WS
class Comfy:
    def __init__(self, port: int, base: Path, proc: subprocess.Popen, log: Path):
        self.port, self.base, self.proc, self.log = port, base, proc, log
        self.url = f"http://127.0.0.1:{port}"

    def get(self, path: str, timeout: float = 30):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            body = r.read()
            return json.loads(body) if r.headers.get_content_type() == "application/json" else body

    def post(self, path: str, payload: dict, timeout: float = 30):
        req = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                body = r.read()
                return r.status, (json.loads(body) if body else None)
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def queue(self, prompt: dict, client_id: str = "t2l-e2e") -> str:
        status, body = self.post("/prompt", {"prompt": prompt, "client_id": client_id})
        assert status == 200, f"/prompt refused the workflow: {json.dumps(body, indent=1)[:3000]}"
        assert not body.get("node_errors"), body
        return body["prompt_id"]

    def wait_history(self, prompt_id: str, timeout: float) -> dict:
        end = time.time() + timeout
        while time.time() < end:
            h = self.get(f"/history/{prompt_id}")
            if prompt_id in h and h[prompt_id].get("status", {}).get("completed") is not None:
                if h[prompt_id]["status"].get("status_str") in ("success", "error"):
                    return h[prompt_id]
            assert self.proc.poll() is None, "ComfyUI exited:\n" + self.log.read_text()[-3000:]
            time.sleep(0.5)
        raise AssertionError(f"prompt {prompt_id} did not finish in {timeout} s")


# ------------------------------------------------------------------------------------------------ fixtures
TEST_NODES = '''"""Test-only nodes for the end-to-end tests of comfyui-text2live (never shipped)."""
import torch


class T2LTestFrames:
    """A smooth moving pattern as an IMAGE batch; with nan=True one frame holds a block of NaN values."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"frames": ("INT", {"default": 4, "min": 2, "max": 64}),
                             "height": ("INT", {"default": 32, "min": 16, "max": 1024}),
                             "width": ("INT", {"default": 40, "min": 16, "max": 1024}),
                             "nan": ("BOOLEAN", {"default": False})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "make"
    CATEGORY = "testing"

    def make(self, frames, height, width, nan):
        ys = torch.linspace(0, 1, height)[:, None]
        xs = torch.linspace(0, 1, width)[None, :]
        out = torch.stack([torch.stack([0.5 + 0.4 * torch.sin(6.28 * (2 * xs + ys) + 0.3 * t + c)
                                        for c in (0.0, 1.0, 2.0)], -1) for t in range(frames)])
        if nan:
            out[1, 4:8, 4:8, :] = float("nan")
        return (out.float().contiguous(),)


NODE_CLASS_MAPPINGS = {"T2LTest_Frames": T2LTestFrames}
'''
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_mp4(path: Path, clip, fps: int, sound: bool) -> None:
    """[T,3,H,W] frames in 0..1 -> an H.264 mp4 at ``fps``, with a mono 440 Hz sine AAC track when ``sound``."""
    import av
    import numpy as np

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = clip.shape[3], clip.shape[2], "yuv420p"
        stream.options = {"crf": "10"}
        audio = out.add_stream("aac", rate=SOUND_RATE, layout="mono") if sound else None
        for f in clip:
            arr = (f.permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
        if audio is None:
            return
        n = round(clip.shape[0] / fps * SOUND_RATE)
        wave = (0.4 * np.sin(2 * np.pi * TONE * np.arange(n) / SOUND_RATE)).astype(np.float32)[None]
        for i in range(0, n, 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[:, i:i + 1024]), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = SOUND_RATE, i
            for packet in audio.encode(frame):
                out.mux(packet)
        for packet in audio.encode():
            out.mux(packet)


def _write_inputs(input_dir: Path) -> None:
    """What the workflows' Notes ask the user for, made here: a photo, a video (with sound) + mask video, an RGBA
    overlay; and a video with sound at another frame rate for the VIDEO pipeline."""
    import numpy as np
    from PIL import Image
    from skimage import data

    from synthetic_video import make_synthetic_video

    Image.fromarray(data.chelsea()).resize((192, 128), Image.LANCZOS).save(input_dir / "chelsea.jpg", quality=95)
    vid = make_synthetic_video(frames=FRAMES, height=HEIGHT, width=WIDTH)
    _write_mp4(input_dir / "input_video.mp4", vid.frames, FPS, sound=True)
    _write_mp4(input_dir / "input_video_masks.mp4", vid.masks[:, None].expand(-1, 3, -1, -1), FPS, sound=False)
    _write_mp4(input_dir / "with_sound.mp4", vid.frames.flip(-1), SOUND_FPS, sound=True)
    rgba = np.zeros((16, 24, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 0
    rgba[4:12, 4:20, 3] = 255  # an opaque red bar with a transparent border
    Image.fromarray(rgba, "RGBA").save(input_dir / "overlay.png")


@pytest.fixture(scope="module")
def comfy(tmp_path_factory, pack):
    from t2l_core.clip.loading import TINY_NOTE, build_tiny_clip, save_clip

    base = tmp_path_factory.mktemp("comfy_base")
    for d in ("custom_nodes", "models/text2live", "input", "output", "temp", "user"):
        (base / d).mkdir(parents=True, exist_ok=True)
    (base / "custom_nodes" / PACK_NAME).symlink_to(REPO, target_is_directory=True)
    (base / "custom_nodes" / "t2l_e2e_test_nodes").mkdir()
    (base / "custom_nodes" / "t2l_e2e_test_nodes" / "__init__.py").write_text(TEST_NODES)
    save_clip(build_tiny_clip(patch_size=16, seed=0, device="cpu"), base / "models/text2live/tiny-clip.safetensors",
              note=TINY_NOTE)
    _write_inputs(base / "input")
    port = _free_port()
    log = base / "comfyui.log"
    cmd = [COMFY_PYTHON, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch",
           "--base-directory", str(base), "--database-url", "sqlite:///:memory:"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=COMFY_DIR, stdout=fh, stderr=subprocess.STDOUT, env=env)
    server = Comfy(port, base, proc, log)
    try:
        ids = sorted(pack.NODE_CLASS_MAPPINGS)
        end = time.time() + 300
        while True:
            assert proc.poll() is None, "ComfyUI exited:\n" + log.read_text()[-3000:]
            try:
                info = server.get("/object_info/" + ids[0], timeout=5)
                if ids[0] in info:
                    break
            except (urllib.error.URLError, ConnectionError, socket.timeout):
                pass
            assert time.time() < end, "ComfyUI did not serve our nodes in 300 s:\n" + log.read_text()[-3000:]
            time.sleep(1)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def defs(pack):
    return node_defs(pack.NODE_CLASS_MAPPINGS)


def small(ui: dict, defs: dict, **train) -> dict:
    """The shipped workflow at tiny sizes with the tiny CLIP."""
    sets = [("T2L_LoadCLIP", "model", "tiny-clip.safetensors"), ("T2L_LoadCLIP", "device", "cpu"),
            ("T2L_TrainEditLayer", "iterations", 2), ("T2L_TrainEditLayer", "size", 129),
            ("T2L_TrainEditLayer", "views", 2), ("T2L_TrainEditLayer", "preview_every", 1),
            ("T2L_NLAFit", "iterations", 20), ("T2L_NLAFit", "batch_pixels", 512),
            ("ImageScale", "width", WIDTH), ("ImageScale", "height", HEIGHT)]
    sets += [("T2L_TrainEditLayer", k, v) for k, v in train.items()]
    for node_type, name, value in sets:
        ui = set_widget(ui, node_type, name, value, defs)
    return ui


# ---------------------------------------------------------------------------------------------------- tests
def test_server_lists_every_node_of_ours(comfy, pack):
    info = comfy.get("/object_info")
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert node_id in info, f"{node_id} missing from /object_info"
        assert info[node_id]["display_name"] == cls.DISPLAY_NAME
        assert info[node_id]["output"] == list(cls.RETURN_TYPES)
    assert "IMPORT FAILED" not in "\n".join(l for l in comfy.log.read_text().splitlines() if "text2live" in l)


def test_core_table_matches_the_server(comfy, defs):
    """Our hand-kept table of core nodes has the widget order the running ComfyUI reports."""
    from workflow_format import CORE_NODES

    info = comfy.get("/object_info")
    for node_type in CORE_NODES:
        assert node_type in info, node_type
        srv = info[node_type]
        order = [n for s in ("required", "optional") for n in srv.get("input_order", {}).get(s, [])]
        assert order == [i.name for i in defs[node_type].inputs], node_type
        assert srv["output"] == list(defs[node_type].outputs), node_type


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_workflow_runs(comfy, defs, path):
    prompt = to_api(small(load_json(path), defs), defs)
    t0 = time.time()
    pid = comfy.queue(prompt)
    entry = comfy.wait_history(pid, timeout=600)
    status = entry["status"]
    assert status["status_str"] == "success", json.dumps(status["messages"], indent=1)[-4000:]
    print(f"\n{path.stem}: success in {time.time() - t0:.1f} s")
    outs = entry["outputs"]
    for nid in output_nodes(prompt, defs):
        assert nid in outs, f"output node {nid} ({prompt[nid]['class_type']}) produced nothing"
        if prompt[nid]["class_type"] == "T2L_SaveEditLayer":
            (layer_file,) = outs[nid]["text"]
            assert Path(layer_file).is_file()
            assert Path(comfy.base, "output", "text2live", "layers") in Path(layer_file).parents
            continue
        files = outs[nid].get("images", [])
        assert files, outs[nid]
        for f in files:
            body = _view(comfy, f)
            assert len(body) > 100, f
            if prompt[nid]["class_type"] == "SaveVideo":  # the source's frame rate, frame count and sound
                assert _mp4_facts(body) == {"fps": FPS, "frames": FRAMES, "sound_rate": SOUND_RATE}, path.name


def _file_combos(cls) -> set:
    """The combos of a node whose options are the files of a folder (they differ between this process and the
    server)."""
    return {n for rule in getattr(cls, "RULES", ()) if rule.own_choices for n in rule.widgets}


def test_the_server_runs_our_nodes_through_the_v3_api(comfy, pack):
    """ComfyUI loads the pack's V3 extension (comfy_entrypoint), not the classic mappings: every node's
    /object_info entry is the classic declaration plus the fields ComfyUI adds only to V3 nodes."""
    info = comfy.get("/object_info")
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        served = dict(info[node_id])
        assert served.pop("python_module") == f"custom_nodes.{PACK_NAME}", node_id
        expected = v3_expected(classic_info(node_id, cls, pack.NODE_DISPLAY_NAME_MAPPINGS))
        for name in _file_combos(cls):
            for entry in (served, expected):
                group = "required" if name in entry["input"]["required"] else "optional"
                entry["input"][group][name][0] = "the files of its folder"
        assert served == expected, node_id
    ours = "\n".join(line for line in comfy.log.read_text().splitlines() if "text2live" in line.lower())
    assert "classic nodes load" not in ours and "IMPORT FAILED" not in ours, ours


@pytest.mark.parametrize("path", PREVIOUS, ids=[p.stem for p in PREVIOUS])
def test_a_workflow_saved_by_the_previous_version_runs_unchanged(comfy, defs, path):
    """The workflows shipped before the schema move (node ids, input names and widget values as saved, fewer
    widgets than today's nodes have: the newer ones keep their defaults, as in the frontend) are accepted by
    POST /prompt and run through the V3 nodes; the one with every widget changed runs exactly as saved."""
    ui = load_json(path)
    if path.stem != EVERY_WIDGET:
        ui = small(ui, defs)
    prompt = to_api(ui, defs, saved_before=True)
    entry = comfy.wait_history(comfy.queue(prompt, client_id="t2l-previous"), timeout=600)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"]["messages"], indent=1)[-4000:]
    for nid in output_nodes(prompt, defs):
        assert nid in entry["outputs"], f"output node {nid} ({prompt[nid]['class_type']}) produced nothing"
    if path.stem == EVERY_WIDGET:  # the changed values reached the nodes: a file under the changed prefix
        (layer_file,) = entry["outputs"][next(n for n, v in prompt.items()
                                              if v["class_type"] == "T2L_SaveEditLayer")]["text"]
        assert "every_widget" in layer_file and Path(layer_file).is_file()


def test_a_combo_value_not_in_its_list_is_refused_when_queued(comfy, defs):
    """The V3 nodes keep the classic list declaration of combos, which ComfyUI checks at queue time."""
    prompt = to_api(small(load_json(REPO / "tests" / "workflows_previous" / "image_edit.json"), defs), defs,
                    saved_before=True)
    node = next(n for n, v in prompt.items() if v["class_type"] == "T2L_TrainEditLayer")
    prompt[node]["inputs"]["generator_resolution"] = "huge"
    status, body = comfy.post("/prompt", {"prompt": prompt})  # outputs not behind the node still run (status 200)
    (error,) = body["node_errors"][node]["errors"]
    assert error["type"] == "value_not_in_list" and "generator_resolution" in error["details"], (status, error)
    if status == 200:
        comfy.wait_history(body["prompt_id"], timeout=600)


def _mp4_facts(body: bytes) -> dict:
    """Frame rate, decoded frame count and sample rate of an mp4 (PyAV); the sound must be the 440 Hz sine."""
    import av
    import numpy as np

    with av.open(io.BytesIO(body)) as c:
        video = c.streams.video[0]
        facts = {"fps": video.average_rate, "frames": sum(1 for _ in c.decode(video=0)), "sound_rate": None}
        if c.streams.audio:
            facts["sound_rate"] = c.streams.audio[0].sample_rate
            c.seek(0)
            sound = np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1)[0]
            spectrum = np.abs(np.fft.rfft(sound))
            peak = np.fft.rfftfreq(sound.size, 1 / facts["sound_rate"])[int(spectrum.argmax())]
            assert abs(peak - TONE) < 10, f"the sound peaks at {peak:.0f} Hz, not the source's {TONE:.0f} Hz"
            assert sound.size >= 0.9 * facts["frames"] / facts["fps"] * facts["sound_rate"], "the sound is cut short"
    return facts


def _view(comfy: "Comfy", f: dict) -> bytes:
    q = urllib.parse.urlencode({"filename": f["filename"], "subfolder": f["subfolder"], "type": f["type"]})
    return comfy.get(f"/view?{q}")


def test_templates_open_from_the_template_route(comfy):
    """What the frontend's template browser fetches: the list (each template once, from example_workflows/),
    each workflow JSON and its thumbnail."""
    for route in ("/workflow_templates", "/api/workflow_templates"):
        listing = comfy.get(route)
        assert sorted(listing[PACK_NAME]) == sorted(p.stem for p in WORKFLOWS) == ["atlas_chaining", "image_edit",
                                                                                   "video_edit"], route
    for p in WORKFLOWS:
        served = comfy.get(f"/api/workflow_templates/{PACK_NAME}/{p.name}")
        assert served == load_json(p), p.name
        thumb = comfy.get(f"/api/workflow_templates/{PACK_NAME}/{p.stem}.jpg")
        assert thumb[:3] == b"\xff\xd8\xff" and thumb == p.with_suffix(".jpg").read_bytes(), p.name
    js = comfy.get(f"/extensions/{PACK_NAME}/fixed_seeds.js")
    assert b"registerExtension" in js


def test_the_missing_model_dialog_has_what_it_needs(comfy):
    """The frontend offers a template's properties.models entry when the named folder is one of the server's
    model folders (/experiment/models) and the file is not listed in it: Load CLIP's file, in models/text2live."""
    comfy.get("/object_info")  # what the frontend loads first (Load CLIP's file list registers the folder)
    folders = {f["name"]: f["folders"] for f in comfy.get("/experiment/models")}
    offered = [m for p in WORKFLOWS for n in load_json(p)["nodes"] for m in n.get("properties", {}).get("models", [])]
    assert len(offered) == 2
    for model in offered:
        assert model["directory"] in folders, model
        assert str(comfy.base / "models" / "text2live") in folders[model["directory"]]
        present = [f["name"] for f in comfy.get(f"/experiment/models/{model['directory']}")]
        assert "tiny-clip.safetensors" in present and model["name"] not in present


def test_pyproject_reads_with_comfyuis_own_parser():
    """ComfyUI's comfy_config (the registry's schema) reads [tool.comfy]: publisher, display name, icon and the
    minimum ComfyUI version."""
    code = ("import json; from comfy_config import config_parser as p; c = p.extract_node_configuration(%r); "
            "print(json.dumps({'comfy': c.tool_comfy.model_dump(), 'comfyui': c.project.supported_comfyui_version, "
            "'name': c.project.name}))" % str(REPO))
    out = subprocess.run([COMFY_PYTHON, "-c", code], cwd=COMFY_DIR, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    facts = json.loads(out.stdout.strip().splitlines()[-1])
    assert facts["name"] == PACK_NAME and facts["comfyui"] == ">=0.3.64"
    assert facts["comfy"]["publisher_id"] and facts["comfy"]["display_name"].startswith("Text2LIVE")
    assert facts["comfy"]["icon"].endswith("/assets/icon.png") and (REPO / "assets" / "icon.png").is_file()


def test_a_video_with_sound_goes_through_the_atlas_and_keeps_its_frame_rate_and_sound(comfy):
    """Load Video -> Fit Layered Atlas (the VIDEO alone) -> Train Edit Layer -> Atlas Render -> Save Video: the
    mp4 has the source's frame rate, frame count and sound track."""
    prompt = {
        "1": {"class_type": "LoadVideo", "inputs": {"file": "with_sound.mp4"}},
        "2": {"class_type": "T2L_NLAFit", "inputs": {"video": ["1", 0], "iterations": 20, "atlas_resolution": 0,
                                                     "seed": 3, "batch_pixels": 512, "flow": "lk"}},
        "3": {"class_type": "GetVideoComponents", "inputs": {"video": ["1", 0]}},
        "4": {"class_type": "T2L_LoadCLIP", "inputs": {"model": "tiny-clip.safetensors", "device": "cpu",
                                                       "precision": "fp32", "architecture": ""}},
        "5": {"class_type": "T2L_TrainEditLayer", "inputs": {
            "clip": ["4", 0], "image": ["3", 0], "nla": ["2", 0], "atlas_layer": "background",
            "prompt": "a snowy scene", "screen_prompt": "snow", "source_prompt": "", "iterations": 2, "size": 129,
            "seed": 3, "views": 2, "resume": False}},
        "6": {"class_type": "T2L_AtlasRender", "inputs": {"nla": ["2", 0], "bg_edit_layer": ["5", 4]}},
        "7": {"class_type": "SaveVideo", "inputs": {"video": ["6", 1], "filename_prefix": "text2live/with_sound",
                                                    "format": "auto", "codec": "auto"}},
    }
    t0 = time.time()
    entry = comfy.wait_history(comfy.queue(prompt), timeout=600)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"]["messages"], indent=1)[-4000:]
    (saved,) = entry["outputs"]["7"]["images"]
    assert saved["filename"].endswith(".mp4")
    facts = _mp4_facts(_view(comfy, saved))
    print(f"\nvideo with sound through the atlas: {facts} in {time.time() - t0:.1f} s")
    assert facts == {"fps": SOUND_FPS, "frames": FRAMES, "sound_rate": SOUND_RATE}


def test_saved_layer_loads_and_applies_to_the_trained_composite(comfy, defs):
    """Save Edit Layer -> Load Edit Layer -> Apply Edit Layer gives the trained composite within 1/255."""
    import numpy as np
    from PIL import Image

    ui = small(load_json(REPO / "example_workflows" / "image_edit.json"), defs, seed=901, resume=False)
    prompt = to_api(ui, defs)
    entry = comfy.wait_history(comfy.queue(prompt), timeout=600)
    assert entry["status"]["status_str"] == "success", entry["status"]
    by_type = {v["class_type"]: k for k, v in prompt.items() if v["class_type"] in ("T2L_SaveEditLayer", "T2L_Composite")}
    (layer_path,) = entry["outputs"][by_type["T2L_SaveEditLayer"]]["text"]
    composite_node = next(k for k, v in prompt.items() if v["class_type"] == "SaveImage"
                          and v["inputs"]["images"][0] == by_type["T2L_Composite"])
    trained = np.asarray(Image.open(io.BytesIO(_view(comfy, entry["outputs"][composite_node]["images"][0]))))
    rel = Path(layer_path).relative_to(comfy.base / "output" / "text2live" / "layers").as_posix()
    assert rel in comfy.get("/object_info/T2L_LoadEditLayer")["T2L_LoadEditLayer"]["input"]["required"]["file"][0]
    apply_prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "chelsea.jpg"}},
        "2": {"class_type": "T2L_LoadEditLayer", "inputs": {"file": rel}},
        "3": {"class_type": "T2L_ApplyEditLayer", "inputs": {"edit_layer": ["2", 0], "image": ["1", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "text2live/reapplied"}},
    }
    entry = comfy.wait_history(comfy.queue(apply_prompt), timeout=300)
    assert entry["status"]["status_str"] == "success", entry["status"]
    again = np.asarray(Image.open(io.BytesIO(_view(comfy, entry["outputs"]["4"]["images"][0]))))
    assert again.shape == trained.shape
    assert int(np.abs(again.astype(int) - trained.astype(int)).max()) <= 1
    # a file that is not a layer is refused before anything runs, with one message naming it
    bad = comfy.base / "output" / "text2live" / "layers" / "broken.safetensors"
    bad.write_bytes(b"\x08\x00")
    status, body = comfy.post("/prompt", {"prompt": dict(apply_prompt, **{"2": {"class_type": "T2L_LoadEditLayer",
                                                                                "inputs": {"file": "broken.safetensors"}}})})
    assert status == 400, body
    errors = body["node_errors"]["2"]["errors"]
    assert len(errors) == 1 and "broken.safetensors" in errors[0]["details"], errors


def test_a_protect_mask_from_load_image_leaves_its_pixels_and_is_reported(comfy):
    """Load Image's MASK (1 - alpha) as Train Edit Layer's protect_mask: the saved composite equals the saved
    input there, byte for byte, and the node's text reports the opacity inside the protected region."""
    import numpy as np
    from PIL import Image

    rgba = np.asarray(Image.open(comfy.base / "input" / "chelsea.jpg").convert("RGBA")).copy()
    rgba[:, :96, 3] = 0  # transparent left half: Load Image's mask is 1 there
    Image.fromarray(rgba, "RGBA").save(comfy.base / "input" / "chelsea_left_protected.png")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "chelsea_left_protected.png"}},
        "2": {"class_type": "T2L_LoadCLIP", "inputs": {"model": "tiny-clip.safetensors", "device": "cpu",
                                                       "precision": "fp32", "architecture": ""}},
        "3": {"class_type": "T2L_TrainEditLayer", "inputs": {
            "clip": ["2", 0], "image": ["1", 0], "prompt": "leopard fur", "screen_prompt": "", "source_prompt": "",
            "iterations": 3, "size": 129, "seed": 11, "views": 2, "resume": False, "protect_mask": ["1", 1]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "text2live/protected"}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "text2live/unedited"}},
    }
    entry = comfy.wait_history(comfy.queue(prompt), timeout=600)
    assert entry["status"]["status_str"] == "success", entry["status"]
    edited, unedited = (np.asarray(Image.open(io.BytesIO(_view(comfy, entry["outputs"][k]["images"][0]))))
                        for k in ("4", "5"))
    assert np.array_equal(edited[:, :96], unedited[:, :96])
    assert not np.array_equal(edited[:, 96:], unedited[:, 96:])
    text = entry["outputs"]["3"]["text"]
    assert any("inside the protected region" in line for line in text), text
    print("\nTrain Edit Layer's text with a protect mask: " + " | ".join(text))


def test_missing_clip_refuses_the_whole_video_prompt(comfy, defs):
    """Without CLIP weights nothing of the video workflow starts (no atlas fit), with one message."""
    ui = small(load_json(REPO / "example_workflows" / "video_edit.json"), defs)
    ui = set_widget(ui, "T2L_LoadCLIP", "model", "not-there.safetensors", defs)
    status, body = comfy.post("/prompt", {"prompt": to_api(ui, defs)})
    assert status == 400, body
    clip_id = next(k for k, v in to_api(ui, defs).items() if v["class_type"] == "T2L_LoadCLIP")
    errors = body["node_errors"][clip_id]["errors"]
    assert len(errors) == 1, errors
    assert "not-there.safetensors" in errors[0]["details"] and "press R" in errors[0]["details"]
    assert "--clip" not in errors[0]["details"]


def test_interrupt_during_training_stops_quickly_and_server_keeps_serving(comfy, defs):
    ui = small(load_json(REPO / "example_workflows" / "image_edit.json"), defs, iterations=100000, seed=777, resume=False)
    prompt = to_api(ui, defs)
    train_id = next(k for k, v in prompt.items() if v["class_type"] == "T2L_TrainEditLayer")
    client_id = uuid.uuid4().hex
    ws = ComfyWebSocket(comfy.port, client_id)
    ckpt_dir = comfy.base / "output" / "text2live" / "checkpoints"
    before = set(ckpt_dir.glob("*.safetensors")) if ckpt_dir.exists() else set()
    try:
        pid = comfy.queue(prompt, client_id)
        steps = 0
        end = time.time() + 300
        while steps < 3:  # training is really running
            msg = ws.recv(timeout=max(1.0, end - time.time()))
            assert msg is not None and time.time() < end, "no training progress within 300 s"
            if msg["type"] == "progress" and msg["data"].get("node") == train_id:
                steps = msg["data"]["value"]
            assert msg["type"] != "execution_error", msg
        t0 = time.time()
        status, _ = comfy.post("/interrupt", {})
        assert status == 200
        while True:
            msg = ws.recv(timeout=30)
            assert msg is not None, "no execution_interrupted within 30 s of /interrupt"
            if msg["type"] in ("execution_interrupted", "execution_error", "execution_success"):
                break
        stopped = time.time() - t0
    finally:
        ws.close()
    print(f"\ninterrupt: stopped {stopped:.2f} s after POST /interrupt (at training step {steps})")
    assert msg["type"] == "execution_interrupted", msg
    assert stopped < 5.0
    entry = comfy.wait_history(pid, timeout=30)
    assert entry["status"]["status_str"] == "error"
    assert any(m[0] == "execution_interrupted" for m in entry["status"]["messages"])
    assert set(ckpt_dir.glob("*.safetensors")) - before, "cancelling left no resumable checkpoint"
    # the server keeps serving: object_info answers and a new short run succeeds
    assert "T2L_TrainEditLayer" in comfy.get("/object_info/T2L_TrainEditLayer")
    pid = comfy.queue(to_api(small(load_json(REPO / "example_workflows" / "image_edit.json"), defs, seed=778), defs))
    assert comfy.wait_history(pid, timeout=300)["status"]["status_str"] == "success"


def test_nan_frames_into_fit_layered_atlas_give_an_error_and_the_server_keeps_serving(comfy):
    def fit_prompt(nan: bool) -> dict:
        return {"1": {"class_type": "T2LTest_Frames", "inputs": {"frames": 4, "height": 32, "width": 40, "nan": nan}},
                "2": {"class_type": "T2L_NLAFit", "inputs": {"frames": ["1", 0], "iterations": 10, "atlas_resolution": 0,
                                                             "seed": 0, "batch_pixels": 512, "flow": "lk"}},
                "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 1]}}}

    assert "T2LTest_Frames" in comfy.get("/object_info/T2LTest_Frames"), "the test node pack did not load"
    entry = comfy.wait_history(comfy.queue(fit_prompt(True)), timeout=120)
    assert entry["status"]["status_str"] == "error"
    errors = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert errors and errors[0]["node_type"] == "T2L_NLAFit", entry["status"]["messages"]
    message = errors[0]["exception_message"]
    print(f"\nNaN frames into Fit Layered Atlas: {errors[0]['exception_type']}: {message}")
    assert "NaN values in the frames input" in message and "item 1 of 4" in message
    assert comfy.proc.poll() is None, "ComfyUI exited:\n" + comfy.log.read_text()[-3000:]
    # the server answers the next prompt: the same fit with finite frames succeeds, and leaves no files behind
    entry = comfy.wait_history(comfy.queue(fit_prompt(False)), timeout=300)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"]["messages"], indent=1)[-3000:]
    nla_dir = comfy.base / "output" / "text2live" / "nla"
    assert not list(nla_dir.glob("checkpoint_*")) and not list(nla_dir.glob("flow_*"))


def test_real_frontend_loads_each_workflow_and_converts_it_like_we_do(comfy, defs):
    import comfy_frontend

    if not comfy_frontend.available():
        pytest.skip("Playwright and /usr/bin/chromium are needed for the frontend check")
    with comfy_frontend.comfy_page(comfy.url) as page:
        # our frontend extension: new training/fitting nodes start "fixed", core nodes keep "randomize"
        assert comfy_frontend.new_node_controls(page, ["T2L_TrainEditLayer", "T2L_NLAFit", "KSampler"]) == \
            ["fixed", "fixed", "randomize"]
        for path in WORKFLOWS:
            ui = load_json(path)
            comfy_frontend.load_workflow(page, ui)
            assert comfy_frontend.missing_node_types(page) == [], path.name
            theirs = comfy_frontend.frontend_prompt(page)
            ours = to_api(ui, defs)
            # the frontend also sends values of its display-only widgets (LoadVideo's 'video-preview');
            # the server ignores inputs a node does not define, so compare the defined ones
            theirs = {k: (v["class_type"], {n: x for n, x in v["inputs"].items() if defs[v["class_type"]].input(n)})
                      for k, v in theirs.items()}
            assert theirs == {k: (v["class_type"], v["inputs"]) for k, v in ours.items()}, path.name
            saved = comfy_frontend.serialized_workflow(page)
            assert check_workflow(saved, defs) == [], path.name  # what a user re-saves still passes our check
            assert to_api(saved, defs) == ours, path.name
            by_id = {n["id"]: n for n in saved["nodes"]}
            for n in ui["nodes"]:  # the frontend keeps our positional widget values as they are
                assert by_id[n["id"]]["widgets_values"] == n["widgets_values"], (path.name, n["type"])


def test_real_frontend_offers_the_clip_download_when_the_file_is_missing(comfy):
    """The frontend's missing-models dialog lists Load CLIP's file with its folder, and a download it allows
    (Hugging Face, .safetensors): tiny-clip.safetensors is all models/text2live holds here."""
    import comfy_frontend

    if not comfy_frontend.available():
        pytest.skip("Playwright and /usr/bin/chromium are needed for the frontend check")
    with comfy_frontend.comfy_page(comfy.url) as page:
        for path in WORKFLOWS:
            ui = load_json(path)
            text = comfy_frontend.missing_models_dialog(page, ui)
            if any(n["type"] == "T2L_LoadCLIP" for n in ui["nodes"]):
                assert "text2live / ViT-B-32-openai.safetensors" in text and "Copy URL" in text, (path.name, text)
                assert "not allowed" not in text and "Invalid directory" not in text, (path.name, text)
            else:
                assert "ViT-B-32" not in text, (path.name, text)


# ------------------------------------------------------------------------------------ checks at queue time
def _edit_over_colour(fill_color="#00B140", precision="fp32", colour_from=None) -> dict:
    """Train Edit Layer (tiny) -> Composite over a solid colour -> SaveImage; ``colour_from`` wires fill_color
    to a PrimitiveString holding that text instead of typing it in the widget."""
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "chelsea.jpg"}},
        "2": {"class_type": "T2L_LoadCLIP", "inputs": {"model": "tiny-clip.safetensors", "device": "cpu",
                                                       "precision": precision, "architecture": ""}},
        "3": {"class_type": "T2L_TrainEditLayer", "inputs": {
            "clip": ["2", 0], "image": ["1", 0], "prompt": "leopard fur", "screen_prompt": "", "source_prompt": "",
            "iterations": 2, "size": 129, "seed": 5, "views": 2, "resume": False}},
        "4": {"class_type": "T2L_Composite", "inputs": {"color": ["3", 1], "opacity": ["3", 2],
                                                        "fill_color": fill_color}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "text2live/over_colour"}},
    }
    if colour_from is not None:
        prompt["6"] = {"class_type": "PrimitiveString", "inputs": {"value": colour_from}}
        prompt["4"]["inputs"]["fill_color"] = ["6", 0]
    return prompt


def test_bad_settings_are_refused_when_queued_before_any_node_runs(comfy):
    """A colour the Composite cannot read is refused by POST /prompt, with one message naming the widget and
    what to write, before Train Edit Layer (upstream) runs; so is a bad combination of two Load CLIP widgets
    (a check that reads several inputs), and two bad nodes give one message each."""
    before = comfy.get("/history")
    status, body = comfy.post("/prompt", {"prompt": _edit_over_colour(fill_color="blue")})
    assert status == 400, body
    assert set(body["node_errors"]) == {"4"}, body["node_errors"]
    (error,) = body["node_errors"]["4"]["errors"]
    assert "fill_color" in error["details"] and "'blue'" in error["details"], error
    assert "#RRGGBB" in error["details"] and "R,G,B" in error["details"], error
    print(f"\nPOST /prompt with fill_color 'blue': {status} {error['message']}: {error['details']}")

    status, body = comfy.post("/prompt", {"prompt": _edit_over_colour(precision="fp16")})
    assert status == 400, body
    (error,) = body["node_errors"]["2"]["errors"]
    assert "'precision'" in error["details"] and "fp32 or bf16" in error["details"], error

    status, body = comfy.post("/prompt", {"prompt": _edit_over_colour(fill_color="1,2", precision="fp16")})
    assert status == 400, body
    assert {k: len(v["errors"]) for k, v in body["node_errors"].items()} == {"2": 1, "4": 1}, body["node_errors"]
    assert comfy.get("/history") == before  # nothing was queued, nothing ran
    assert comfy.get("/queue") == {"queue_running": [], "queue_pending": []}


def test_a_wired_setting_is_checked_when_the_node_runs(comfy):
    """ComfyUI passes None to VALIDATE_INPUTS for an input wired to another node (its value exists only when
    the graph runs): the prompt is accepted, and the same rule refuses the colour when the Composite runs."""
    pid = comfy.queue(_edit_over_colour(colour_from="blue"))
    entry = comfy.wait_history(pid, timeout=600)
    assert entry["status"]["status_str"] == "error"
    err = next(m[1] for m in entry["status"]["messages"] if m[0] == "execution_error")
    assert err["node_id"] == "4" and "fill_color" in err["exception_message"], err
    assert "#RRGGBB" in err["exception_message"], err
    # a readable colour through the same wire runs through
    entry = comfy.wait_history(comfy.queue(_edit_over_colour(colour_from="255,255,255")), timeout=600)
    assert entry["status"]["status_str"] == "success", entry["status"]


# --------------------------------------------------------------------------------- ComfyUI's model management
def _rss_mib(pid: int) -> float:
    """Resident memory of a process (VmRSS), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


def _wait_for_log(comfy: "Comfy", start: int, text: str, timeout: float = 60) -> str:
    """The server log written since offset ``start``, once it holds ``text``."""
    end = time.time() + timeout
    while True:
        new = comfy.log.read_text()[start:]
        if text in new:
            return new
        assert time.time() < end, f"'{text}' not logged within {timeout} s:\n{new[-3000:]}"
        time.sleep(0.2)


def _train_over_image(model: str, seed: int) -> dict:
    """Load CLIP -> Train Edit Layer (tiny) -> SaveImage of the composite."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "chelsea.jpg"}},
        "2": {"class_type": "T2L_LoadCLIP", "inputs": {"model": model, "device": "cpu", "precision": "fp32",
                                                       "architecture": ""}},
        "3": {"class_type": "T2L_TrainEditLayer", "inputs": {
            "clip": ["2", 0], "image": ["1", 0], "prompt": "leopard fur", "screen_prompt": "", "source_prompt": "",
            "iterations": 2, "size": 129, "seed": seed, "views": 2, "resume": False}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "text2live/managed"}},
    }


def test_free_unloads_the_clip_and_the_next_prompt_reloads_it_with_the_same_result(comfy):
    """POST /free {"unload_models": true} after a Train Edit Layer prompt: ComfyUI unloads the CLIP (it leaves
    current_loaded_models: the next prompt makes ComfyUI log "Requested to load CLIP" again) and, on --cpu where
    there is no other device to offload to, its weights are released: the server's resident memory drops by
    about their size. Load CLIP's output stays in ComfyUI's cache, so the next prompt does not run Load CLIP
    again: Train Edit Layer reads the weights back and gives the bit-identical image."""
    import numpy as np
    from PIL import Image

    from t2l_core.clip.loading import TINY_NOTE, build_tiny_clip, save_clip

    # a random CLIP (NOT a real model) with a wide text tower, so that its weights show in the process's memory
    clip = build_tiny_clip(patch_size=16, seed=3, device="cpu", text_width=768, text_layers=1)
    weights_mib = sum(t.numel() * t.element_size() for t in clip.model.state_dict().values()) / 2**20
    save_clip(clip, comfy.base / "models" / "text2live" / "wide-text-clip.safetensors", note=TINY_NOTE)
    del clip

    def run(seed: int) -> np.ndarray:
        entry = comfy.wait_history(comfy.queue(_train_over_image("wide-text-clip.safetensors", seed)), timeout=600)
        assert entry["status"]["status_str"] == "success", json.dumps(entry["status"]["messages"], indent=1)[-3000:]
        return np.asarray(Image.open(io.BytesIO(_view(comfy, entry["outputs"]["4"]["images"][0]))))

    pid = comfy.proc.pid
    first = run(seed=11)
    mark = len(comfy.log.read_text())
    run(seed=12)  # replaces Train Edit Layer's cached result; Load CLIP's stays cached, its CLIP loaded
    assert "Requested to load CLIP" not in comfy.log.read_text()[mark:], "the loaded CLIP was loaded again"
    time.sleep(2)
    loaded = _rss_mib(pid)
    mark = len(comfy.log.read_text())
    status, _ = comfy.post("/free", {"unload_models": True})
    assert status == 200
    line = f"unloaded, {weights_mib:.1f} MiB of weights released"
    _wait_for_log(comfy, mark, line)
    time.sleep(2)
    unloaded = _rss_mib(pid)
    mark = len(comfy.log.read_text())
    t0 = time.time()
    third = run(seed=11)
    seconds = time.time() - t0
    new_log = comfy.log.read_text()[mark:]
    reloaded = _rss_mib(pid)
    print(f"\n/free unload_models with a {weights_mib:.1f} MiB CLIP on --cpu: server RSS {loaded:.0f} MiB loaded -> "
          f"{unloaded:.0f} MiB after /free ({loaded - unloaded:.0f} MiB less) -> {reloaded:.0f} MiB after the "
          f"next prompt ({seconds:.1f} s, weights read back)")
    assert loaded - unloaded >= 0.8 * weights_mib
    assert "Requested to load CLIP" in new_log and "reloading its weights" in new_log
    assert "Load CLIP's model" not in new_log  # no error about the file
    assert reloaded - unloaded >= 0.8 * weights_mib
    assert third.shape == first.shape and np.array_equal(third, first), "the reloaded CLIP gave another image"


MODEL_MANAGEMENT_SCRIPT = r'''
"""Run with ComfyUI's Python in its checkout: the pack's patchers against the real comfy.model_management."""
import importlib.util, json, os, sys, tempfile
from pathlib import Path

repo, work = Path(sys.argv[1]), Path(sys.argv[2])
sys.path[:0] = [os.getcwd(), str(repo)]
import comfy.cli_args
comfy.cli_args.args.cpu = True
import comfy.model_management as mm
import comfy.model_patcher
import folder_paths
import torch

folder_paths.set_temp_directory(str(work / "temp"))
spec = importlib.util.spec_from_file_location("t2l_pack", repo / "__init__.py", submodule_search_locations=[str(repo)])
pack = importlib.util.module_from_spec(spec)
sys.modules["t2l_pack"] = pack
spec.loader.exec_module(pack)
pmm = pack.nodes.model_management
from t2l_core.clip.loading import build_tiny_clip, save_clip
from t2l_core.nla.atlas_model import AtlasConfig, LayeredAtlas
from t2l_core.nla.fitted import FittedNLA
from t2l_core.runtime.weight_release import module_tensors, tensor_bytes

out = {"available": pmm.available()}
save_clip(build_tiny_clip(patch_size=16, seed=0), work / "models" / "tiny.safetensors", note="tiny")
pack.nodes.comfy_bridge.register_model_folder()
folder_paths.add_model_folder_path("text2live", str(work / "models"))
image = torch.rand(1, 96, 128, 3, generator=torch.Generator().manual_seed(0))
with torch.inference_mode():
    (clip,) = pack.nodes.NODE_CLASS_MAPPINGS["T2L_LoadCLIP"]().load("tiny.safetensors", "auto", "fp32")
    patcher = clip.comfy_patcher
    out["devices"] = [str(patcher.load_device), str(patcher.offload_device)]
    first, _ = pack.nodes.NODE_CLASS_MAPPINGS["T2L_RelevancyMap"]().run(clip, image, "cat")
out["loaded_after_node"] = patcher in mm.loaded_models()
size = patcher.model_size()
# what --lowvram / --novram ask of a model: load it partially; ours loads whole, a plain ModelPatcher does not
patcher.partially_load(mm.get_torch_device(), extra_memory=1)
plain = comfy.model_patcher.ModelPatcher(build_tiny_clip(patch_size=16, seed=0).model, torch.device("cpu"),
                                         torch.device("cpu"))
plain.partially_load(torch.device("cpu"), extra_memory=1)
out["partial_load_share"] = {"ours": patcher.loaded_size() / size, "plain": plain.loaded_size() / plain.model_size()}
held = tensor_bytes(clip.model)
mm.unload_all_models()
out["clip_unloaded"] = {"in_loaded_models": patcher in mm.loaded_models(), "bytes_before": held,
                        "bytes_after": tensor_bytes(clip.model)}
with torch.inference_mode():
    again, _ = pack.nodes.NODE_CLASS_MAPPINGS["T2L_RelevancyMap"]().run(clip, image, "cat")
out["clip_reloaded"] = {"in_loaded_models": patcher in mm.loaded_models(), "equal": bool(torch.equal(again, first)),
                        "bytes": tensor_bytes(clip.model)}
# a fitted atlas (no file): spilled to ComfyUI's temp folder when unloaded, read back when used
torch.manual_seed(0)
nla = FittedNLA(model=LayeredAtlas(AtlasConfig(height=16, width=24, frames=2)).requires_grad_(False),
                frames_u8=torch.zeros(2, 3, 16, 24, dtype=torch.uint8), fit_config={})
weights = {k: v.clone() for k, v in module_tensors(nla.model).items()}
pmm.use(pmm.manage_atlas(nla))
out["atlas_loaded"] = nla.comfy_patcher in mm.loaded_models()
mm.unload_all_models()
spill = sorted(str(p) for p in (work / "temp" / "text2live").glob("*.pt"))
out["atlas_unloaded"] = {"bytes": tensor_bytes(nla.model), "spill_files": len(spill)}
pmm.use(nla)
now = module_tensors(nla.model)
out["atlas_reloaded"] = {"equal": all(torch.equal(now[k], weights[k]) for k in weights),
                         "spill_left": any(os.path.exists(p) for p in spill)}
print("RESULT " + json.dumps(out))
'''


def test_the_real_comfy_model_management_loads_unloads_and_reloads_our_models(tmp_path):
    """In-process, against ComfyUI's own model_management and ModelPatcher (no server): our models are
    loaded whole even when ComfyUI asks for a partial load (--lowvram / --novram), leave the loaded models
    on unload_all_models with their weights released on the CPU, and come back bit-identical (the CLIP from its
    file, a fitted atlas from its spill in ComfyUI's temp folder)."""
    script = tmp_path / "check.py"
    script.write_text(MODEL_MANAGEMENT_SCRIPT)
    proc = subprocess.run([COMFY_PYTHON, str(script), str(REPO), str(tmp_path)], cwd=COMFY_DIR, capture_output=True,
                          text=True, timeout=600)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(lines[-1][len("RESULT "):])
    print(f"\nreal comfy.model_management: {json.dumps(out)}")
    assert out["available"] and out["devices"] == ["cpu", "cpu"] and out["loaded_after_node"]
    assert out["partial_load_share"]["ours"] == 1.0 and out["partial_load_share"]["plain"] < 1.0
    assert out["clip_unloaded"] == {"in_loaded_models": False, "bytes_before": out["clip_unloaded"]["bytes_before"],
                                    "bytes_after": 0}
    assert out["clip_reloaded"] == {"in_loaded_models": True, "equal": True,
                                    "bytes": out["clip_unloaded"]["bytes_before"]}
    assert out["atlas_loaded"]
    assert out["atlas_unloaded"]["bytes"] == 0 and out["atlas_unloaded"]["spill_files"] == 1
    assert out["atlas_reloaded"] == {"equal": True, "spill_left": False}
