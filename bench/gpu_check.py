"""GPU check: the device-sensitive tests on the GPU, then the speed a GPU user gets, in one command.

    bash bench/gpu_check.sh "$OUT"                 # on a CUDA machine: installs the carried wheels, then this
    python bench/gpu_check.py --out DIR            # the check (device: CUDA when present)
    python bench/gpu_check.py --smoke              # CPU smoke run: tiny sizes, under a minute, NOT a measurement

Sections, in this order (each guarded: an error or a timeout is recorded in its own row and the next section
still runs; each has a time budget, and on a GPU each runs in its own process, killed at its hard limit):

* ``tests``: ``pytest -m device --device cuda`` over the test files that hold device-marked tests
  (smoke: only collected);
* ``ceiling``: large matmul and 3x3 convolution throughput in fp32 / tf32 / bf16 (bench/ceiling.py);
* ``image``: a training step at the paper's configuration (512 px, 16 views, directional loss,
  relevancy bootstrapping, random ViT-B/32 weights: bench/image_step.py) for plain fp32, the default fast
  path and each precision setting the pack offers (autocast off / bf16 / fp16, CLIP weights bf16 / fp16,
  save_memory), with peak GPU memory and the host-device synchronisations of one fast step;
* ``video``: a video (atlas) step at the paper's configuration (70 frames, 432x768, fg and bg, plain and fast:
  bench/video_step.py);
* ``nla``: flow and an NLA fit to 30 dB on the synthetic 50-frame 432x768 video (bench/nla_bench.py), and
  RAFT per frame pair (random weights: same cost);
* ``render``: apply-layer and atlas-render throughput at 768x432 and at 4K (bench/render_bench.py);
* ``compile``: the fast image step with ``torch.compile`` (last: compiling is slow and may fail).

Every time is reported as a speed-up over plain fp32 on the same device, as a fraction of the device's
measured fp32 and bf16 matmul ceilings (FLOPs counted with torch.utils.flop_counter on the plain path:
useful work), and as the projected time of a 1000-step image edit / a 3000-step video layer. The table
goes to stdout and, with ``--out DIR``, to ``DIR/gpu_check.md`` (the pytest log to ``DIR/gpu_check_pytest.log``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for p in (str(REPO), str(HERE), str(REPO / "tests")):
    if p not in sys.path:
        sys.path.insert(0, p)

from t2l_core.nla.config import NLAFitConfig  # noqa: E402
from t2l_core.settings import default_of  # noqa: E402

SECTIONS = ("tests", "ceiling", "image", "video", "nla", "render", "compile")
PAPER = ("paper: 9 min for a 1000-step image edit on an RTX 6000, 60 min for a 3000-step video layer on an "
         "RTX 8000")


# ------------------------------------------------------------------------------------------------ plan

@dataclass
class Plan:
    """Sizes and budgets of one check: the paper's configuration on a GPU, tiny ones in smoke mode."""

    smoke: bool
    device: str
    budgets: dict  # soft seconds per section (loops stop starting new work after it)
    hard: dict  # seconds after which an isolated section's process is killed
    clip_arch: Optional[str] = "ViT-B-32-quickgelu"  # None = the tiny test CLIP
    image_size: int = 512
    views: int = 16
    image_steps: int = 10  # per path: step 0 (crop + whole image), then crop steps
    image_extra: dict = field(default_factory=dict)  # EditConfig overrides (smoke: small views/generator)
    video_frames: int = 70
    video_hw: tuple = (432, 768)
    video_steps: int = 5  # per run: regular steps, the last one with the whole atlas
    video_fit_iters: int = 300
    video_extra: dict = field(default_factory=dict)
    nla_frames: int = 50
    nla_hw: tuple = (432, 768)
    nla_max_iters: int = 6000
    nla_eval_every: int = 100
    nla_batch: int = default_of(NLAFitConfig, "batch_pixels")
    raft_pairs: int = 3
    render_sizes: tuple = (("768x432", 432, 768, 8), ("4K 3840x2160", 2160, 3840, 2))
    render_generator: Optional[dict] = None
    ceiling_seconds: float = 0.5
    ceiling_size: Optional[int] = None
    compile_steps: int = 6

    @property
    def cuda(self) -> bool:
        return torch.device(self.device).type == "cuda"


def make_plan(smoke: bool, device: str, budget: float) -> Plan:
    if not smoke:
        soft = {"tests": 60, "ceiling": 10, "image": 80, "video": 65, "nla": 45, "render": 30, "compile": 60}
        hard = {"tests": 110, "ceiling": 60, "image": 150, "video": 130, "nla": 100, "render": 80, "compile": 100}
        scale = min(1.0, budget / 420.0)
        return Plan(False, device, {k: v * scale for k, v in soft.items()}, hard)
    small_views = dict(view_short_side=48, view_max_long=64, structure_max_long=80)
    gen = dict(channels_down=16, channels_up=16)
    # every case runs (tiny sizes): a path that breaks shows as an error in CI; the limits only stop a hang
    soft = {k: 600.0 for k in SECTIONS}
    return Plan(True, device, soft, {k: 900.0 for k in SECTIONS}, clip_arch=None, image_size=129, views=2,
                image_steps=2, image_extra=dict(small_views, generator=gen),
                video_frames=8, video_hw=(48, 64), video_steps=2, video_fit_iters=10,
                video_extra=dict(small_views, n_views=2, mask_border=4,
                                 generator=dict(gen, num_scales=5)),
                nla_frames=6, nla_hw=(48, 64), nla_max_iters=40, nla_eval_every=20, nla_batch=2048, raft_pairs=1,
                render_sizes=(("144x192 (stands in for 768x432)", 144, 192, 2),
                              ("160x256 (stands in for 4K)", 160, 256, 1)),
                render_generator=gen, ceiling_seconds=0.05, ceiling_size=256, compile_steps=2)


# ------------------------------------------------------------------------------------------------ rows

@dataclass
class Row:
    """One measured case. Numbers stay raw here; :func:`render_table` formats them."""

    section: str
    case: str
    sec: Optional[float] = None  # seconds per ``unit``
    unit: str = "step"
    peak_gib: Optional[float] = None
    flops: Optional[float] = None  # useful FLOPs per unit (plain path, counted)
    ref: Optional[str] = None  # "section:case" of the plain fp32 row this one is compared with
    project: Optional[int] = None  # steps of a full run: projected minutes = sec * project / 60
    text: Optional[str] = None  # replaces the formatted time (ceilings, totals)
    note: str = ""


class Recorder:
    """Collects a section's rows; with ``path`` every row is written at once (a killed process keeps them)."""

    def __init__(self, section: str, path: Optional[str] = None) -> None:
        self.section, self.path, self.rows, self.extra = section, path, [], {}

    def add(self, case: str, **kw) -> Row:
        row = Row(self.section, case, **kw)
        self.rows.append(row)
        self.flush()
        print(f"  [{self.section}] {case}: {_fmt_time(row)} {row.note}", flush=True)
        return row

    def flush(self) -> None:
        if self.path:
            tmp = self.path + ".part"
            Path(tmp).write_text(json.dumps({"rows": [asdict(r) for r in self.rows], "extra": self.extra}))
            os.replace(tmp, self.path)


def _error_text(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    return f"error: {type(exc).__name__}: {msg[0][:300] if msg else ''}"


# ------------------------------------------------------------------------------------------------ helpers

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _make_clip(plan: Plan, precision: str = "fp32"):
    from t2l_core.clip.loading import build_random_clip, build_tiny_clip

    if plan.clip_arch is None:
        return build_tiny_clip(patch_size=16, seed=0, device=plan.device, precision=precision)
    return build_random_clip(plan.clip_arch, seed=0, device=plan.device, precision=precision)


def _config_kwargs(extra: dict) -> dict:
    from t2l_core.edit.generator import GeneratorConfig

    out = dict(extra)
    if isinstance(out.get("generator"), dict):
        out["generator"] = GeneratorConfig(**out["generator"])
    return out


class _Timer:
    """Hooks that time each training step (device work included) and can stop a run at a deadline."""

    def __init__(self, device: torch.device, deadline: Optional[float] = None) -> None:
        self.device, self.deadline = device, deadline
        self.times: list[float] = []
        self.logs: list[dict] = []
        self._start: Optional[float] = None

    def check(self) -> None:
        if self._start is None:
            self._start = time.perf_counter()
        if self.deadline is not None and time.monotonic() > self.deadline:
            from t2l_core.progress import Cancelled

            raise Cancelled("time budget")

    def on_step(self, step, total, logs, preview) -> None:
        _sync(self.device)
        self.times.append(time.perf_counter() - (self._start or time.perf_counter()))
        self.logs.append(dict(logs))
        self._start = None

    def hooks(self):
        from t2l_core.progress import Hooks

        return Hooks(on_step=self.on_step, check_cancel=self.check, preview_every=0)


@contextlib.contextmanager
def _counting_flops():
    """A FlopCounterMode that also sees attention: SDPA's fused kernels and the native MHA fast path are
    switched to their math equivalents inside (the counter does not see fused kernels)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH), counter:
            yield counter
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


class _FlopSteps:
    """Per-step FLOP counts of a training run under :func:`_counting_flops` (hooks as for :class:`_Timer`)."""

    def __init__(self, counter) -> None:
        self.counter, self.flops, self._f0 = counter, [], None

    def check(self) -> None:
        if self._f0 is None:
            self._f0 = self.counter.get_total_flops()

    def on_step(self, *_a) -> None:
        self.flops.append(self.counter.get_total_flops() - self._f0)
        self._f0 = None

    def hooks(self):
        from t2l_core.progress import Hooks

        return Hooks(on_step=self.on_step, check_cancel=self.check, preview_every=0)


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


# ------------------------------------------------------------------------------------------------ sections

def section_tests(plan: Plan, rec: Recorder, deadline: float, out_dir: Optional[str]) -> None:
    """``pytest -m device --device <device>`` over the files holding device-marked tests (smoke: collect)."""
    files = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_*.py")
                   if "mark.device" in p.read_text())
    dev = torch.device(plan.device).type
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "device", "--device", dev, "-p", "no:cacheprovider",
           "-o", "addopts=", *files]
    if plan.smoke:
        cmd.append("--collect-only")
    t0 = time.perf_counter()
    timeout = max(5.0, deadline - time.monotonic())
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        log, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        log = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        log, rc = log + f"\n[killed after {timeout:.0f} s]", None
    dt = time.perf_counter() - t0
    if out_dir:
        Path(out_dir, "gpu_check_pytest.log").write_text(" ".join(cmd) + "\n\n" + log)
    tail = [ln for ln in log.strip().splitlines() if ln.strip()]
    summary = tail[-1] if tail else "(no output)"
    failed = [ln.split(" ", 1)[1].split(" - ")[0] for ln in log.splitlines() if ln.startswith(("FAILED", "ERROR"))]
    note = summary if rc is not None else f"timed out after {timeout:.0f} s: {summary}"
    if failed:
        note += "; failed: " + ", ".join(failed[:8]) + (" ..." if len(failed) > 8 else "")
    label = f"pytest -m device --device {dev} ({len(files)} files)" + (" --collect-only" if plan.smoke else "")
    rec.add(label, sec=dt, unit="run", note=note)
    if rc not in (0,) and not plan.smoke:
        rec.extra["tests_failed"] = True


def section_ceiling(plan: Plan, rec: Recorder, deadline: float, out_dir: Optional[str]) -> None:
    from ceiling import measure

    device = torch.device(plan.device)
    with torch.no_grad():
        res = measure(device, plan.ceiling_seconds, plan.ceiling_size)
        if device.type == "cuda":  # fp32 matmuls on the TF32 units (what allow_tf32 = True would give)
            before = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = True
            try:
                tf32 = measure(device, plan.ceiling_seconds, plan.ceiling_size)
            finally:
                torch.backends.cuda.matmul.allow_tf32 = before
            res.update({(op, "tf32"): v for (op, prec), v in tf32.items() if prec == "fp32" and "matmul" in op})
    ceil = {}
    for (op, prec), v in res.items():
        rec.add(f"{op} {prec}", text=f"{v:,.0f} GFLOP/s")
        if "matmul" in op:
            ceil[prec] = v
    rec.extra["ceiling"] = ceil
    rec.flush()


def _image_paths(plan: Plan) -> list[tuple[str, dict, str]]:
    """(name, EditConfig overrides, CLIP weight precision) of every precision/speed setting the pack offers."""
    paths = [("plain fp32", dict(fast=False), "fp32"),
             ("fast (default: autocast auto = " + ("bf16" if plan.cuda else "fp32") + ")", dict(fast=True), "fp32"),
             ("fast, autocast off (fp32)", dict(fast=True, autocast="off"), "fp32")]
    if not plan.cuda:  # on CUDA autocast auto is bf16 already
        paths.append(("fast, autocast bf16", dict(fast=True, autocast="bf16"), "fp32"))
    if plan.cuda:
        paths.append(("fast, autocast fp16", dict(fast=True, autocast="fp16"), "fp32"))
    paths.append(("fast + save_memory", dict(fast=True, save_memory=True), "fp32"))
    paths.append(("fast, CLIP weights bf16", dict(fast=True), "bf16"))
    if plan.cuda:
        paths.append(("fast, CLIP weights fp16", dict(fast=True), "fp16"))
    return paths


def _image_config(plan: Plan, iters: int, **overrides):
    from image_step import PROMPTS
    from t2l_core.edit.config import EditConfig

    base = dict(iters=iters, size=plan.image_size, n_views=plan.views, bootstrap_steps=1000, **PROMPTS,
                **_config_kwargs(plan.image_extra))
    base.update(overrides)
    return EditConfig.from_flat(**base)


def _timed_image_run(clip, image, config, device, deadline=None) -> tuple[list[float], float]:
    from memory import peak_gib, reset_peak
    from t2l_core.api import train_edit_layer

    timer = _Timer(device, deadline)
    reset_peak(device)
    train_edit_layer(clip, image, config, hooks=timer.hooks())
    return timer.times, peak_gib(device)


def _amortised(times: list[float]) -> tuple[float, float, float]:
    """(crop step, whole-image step, amortised step) from a run whose step 0 holds the whole image; the first
    crop step is left out when there are others (warm-up of the new shapes)."""
    full = times[0]
    crops = times[2:] if len(times) > 2 else times[1:]
    crop = _median(crops) if crops else full
    return crop, full, (74 * crop + full) / 75


def _plain_image_flops(plan: Plan, rec: Recorder, clip, image) -> Optional[float]:
    """Useful work: the plain path's FLOPs per amortised step (whole-image step and crop steps), or None when
    counting fails (the figures still come, without the ceiling fractions)."""
    try:
        from t2l_core.api import train_edit_layer

        with _counting_flops() as counter:
            fs = _FlopSteps(counter)
            train_edit_layer(clip, image, _image_config(plan, 2, fast=False), hooks=fs.hooks())
        return (74 * fs.flops[1] + fs.flops[0]) / 75
    except Exception as exc:
        rec.add("FLOP count (plain path)", note=_error_text(exc))
        return None


def _time_image_path(plan: Plan, rec: Recorder, clips: dict, image, path: tuple,
                     flops: Optional[float]) -> None:
    """Time one image path ``(name, overrides, CLIP precision)`` and record its row (or why it has none)."""
    name, overrides, precision = path
    device = torch.device(plan.device)
    try:
        if precision not in clips:
            clips[precision] = _make_clip(plan, precision)
        times, peak = _timed_image_run(clips[precision], image, _image_config(plan, plan.image_steps, **overrides),
                                       device)
        crop, full, amort = _amortised(times)
        rec.add(name, sec=amort, peak_gib=peak, flops=flops, ref="image:plain fp32" if name != "plain fp32" else None,
                project=1000, note=f"crop step {crop:.3f} s, whole-image step {full:.3f} s, "
                                   f"{len(times)} steps")
    except RuntimeError as exc:
        if device.type == "cpu" and precision != "fp32":
            # some CPU kernel builds refuse half-precision weights when PyTorch's dispatch is limited below
            # the CPU's own ISA (ATEN_CPU_CAPABILITY=avx2 on an AVX-512 CPU): not the pack's error
            rec.add(name, note=f"skipped: {precision} weights unsupported by this CPU's kernels "
                               f"({str(exc).splitlines()[0][:100]})")
        else:
            rec.add(name, note=_error_text(exc))
    except Exception as exc:
        rec.add(name, note=_error_text(exc))


def section_image(plan: Plan, rec: Recorder, deadline: float, out_dir: Optional[str]) -> None:
    from image_step import paper_image

    device = torch.device(plan.device)
    image = paper_image(plan.image_size)
    clips = {"fp32": _make_clip(plan)}
    flops = _plain_image_flops(plan, rec, clips["fp32"], image)
    if device.type == "cuda":  # warm-up: CUDA context, cuBLAS/cuDNN handles, kernels of both paths
        for fast in (False, True):
            _timed_image_run(clips["fp32"], image, _image_config(plan, 2, fast=fast), device)
    for path in _image_paths(plan):
        if time.monotonic() > deadline:
            rec.add(path[0], note="skipped: the section's time budget ran out")
            continue
        _time_image_path(plan, rec, clips, image, path, flops)
    if device.type == "cuda" and time.monotonic() < deadline:
        try:
            rec.add("host-device syncs in one fast step", text=f"{_count_syncs(clips['fp32'], image, plan)} syncs",
                    note="torch.cuda.set_sync_debug_mode('warn') over one crop step of the default fast path")
        except Exception as exc:
            rec.add("host-device syncs in one fast step", note=_error_text(exc))


def _count_syncs(clip, image, plan: Plan) -> int:
    from t2l_core.progress import Hooks
    from t2l_core.api import train_edit_layer

    count = {"on": False, "n": 0}

    def start():
        if not count["on"] and count.get("armed"):
            count["on"] = True
            torch.cuda.set_sync_debug_mode("warn")

    def on_step(step, total, logs, preview):
        if step == 1:
            count["armed"] = True  # time the second step (a crop step), not the whole-image one
        elif count["on"]:
            torch.cuda.set_sync_debug_mode(0)
            count["on"] = False

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            train_edit_layer(clip, image, _image_config(plan, 2), hooks=Hooks(on_step=on_step, check_cancel=start,
                                                                              preview_every=0))
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return sum("synchroniz" in str(w.message) for w in caught)


def section_compile(plan: Plan, rec: Recorder, deadline: float, out_dir: Optional[str]) -> None:
    from image_step import paper_image

    if plan.smoke:
        rec.add("fast + torch.compile", note="skipped in smoke mode (compiling takes minutes on a small CPU)")
        return
    device = torch.device(plan.device)
    clip = _make_clip(plan)
    try:
        times, peak = _timed_image_run(clip, paper_image(plan.image_size),
                                       _image_config(plan, plan.compile_steps, fast=True, compile=True), device,
                                       deadline=deadline)
        crop, full, amort = _amortised(times)
        rec.add("fast + torch.compile", sec=amort, peak_gib=peak, ref="image:plain fp32", project=1000,
                note=f"first step (compiles) {full:.1f} s, crop step {crop:.3f} s, {len(times)} steps")
    except Exception as exc:
        rec.add("fast + torch.compile", note=_error_text(exc))


def section_video(plan: Plan, rec: Recorder, deadline: float, out_dir: Optional[str]) -> None:
    from video_step import fitted_atlas
    from memory import peak_gib, reset_peak
    from t2l_core.video.config import VideoEditConfig
    from t2l_core.api import train_video_edit_layer

    device = torch.device(plan.device)
    t0 = time.perf_counter()
    nla = fitted_atlas(plan.video_frames, *plan.video_hw, plan.video_fit_iters, device=device)
    rec.add(f"atlas of the synthetic video ({plan.video_frames} frames, {plan.video_fit_iters} fit steps)",
            sec=time.perf_counter() - t0, unit="run", note=f"PSNR {nla.psnr:.1f} dB (setup, not a step)")
    clip = _make_clip(plan)
    extra = _config_kwargs(plan.video_extra)

    def config(layer, fast, iters):
        return VideoEditConfig.from_flat(prompt="golden ball", source_prompt="ball", layer=layer, fast=fast, iters=iters,
                               full_image_every=iters, **extra)

    flops = {}
    for layer in ("fg", "bg"):
        try:
            with _counting_flops() as counter:
                fs = _FlopSteps(counter)
                train_video_edit_layer(clip, nla, config(layer, False, 2), hooks=fs.hooks(), render=False)
            flops[layer] = (74 * fs.flops[0] + fs.flops[1]) / 75
        except Exception as exc:
            rec.add(f"{layer}: FLOP count (plain path)", note=_error_text(exc))
    for layer in ("fg", "bg"):
        for fast in (False, True):
            name = f"{layer}, {'fast (default)' if fast else 'plain fp32'}"
            if time.monotonic() > deadline:
                rec.add(name, note="skipped: the section's time budget ran out")
                continue
            try:
                timer = _Timer(device)
                reset_peak(device)
                train_video_edit_layer(clip, nla, config(layer, fast, plan.video_steps), hooks=timer.hooks(),
                                       render=False)
                regular = timer.times[1:-1] if len(timer.times) > 2 else timer.times[:-1]
                step, full = _median(regular), timer.times[-1]
                rec.add(name, sec=(74 * step + full) / 75, peak_gib=peak_gib(device), flops=flops.get(layer),
                        ref=f"video:{layer}, plain fp32" if fast else None, project=3000,
                        note=f"step {step:.3f} s, whole-atlas step {full:.3f} s")
            except Exception as exc:
                rec.add(name, note=_error_text(exc))


def section_nla(plan: Plan, rec: Recorder, deadline: float, out_dir: Optional[str]) -> None:
    from memory import peak_gib, reset_peak
    from nla_bench import synthetic
    from t2l_core.nla.fit import fit_nla
    from t2l_core.nla.optical_flow import compute_video_flow, make_flow_estimator
    from t2l_core.progress import Cancelled

    device = torch.device(plan.device)
    T, (H, W) = plan.nla_frames, plan.nla_hw
    v = synthetic(T, H, W)
    est, name = make_flow_estimator(device, (), "lk")
    _sync(device)
    t0 = time.perf_counter()
    flow = compute_video_flow(lambda i: v.frames[i], T, est, name)
    t_flow = time.perf_counter() - t0
    rec.add(f"built-in flow ({name}), {T - 1} pairs x 2 directions at {W}x{H}", sec=t_flow / (T - 1), unit="pair")
    cfg = NLAFitConfig(iterations=plan.nla_max_iters, batch_pixels=plan.nla_batch, target_psnr=30.0,
                       eval_every=plan.nla_eval_every, flow="lk")
    timer = _Timer(device, deadline)
    reset_peak(device)
    t1 = time.perf_counter()
    case = f"NLA fit to 30 dB ({T} frames {W}x{H}, batch {plan.nla_batch})"
    try:
        nla = fit_nla(v.frames, v.masks, cfg, hooks=timer.hooks(), device=device, flow=flow)
        dt = time.perf_counter() - t1
        reached = [lg["psnr_sampled"] for lg in timer.logs if "psnr_sampled" in lg]
        note = (f"{nla.steps} steps, full-video PSNR {nla.psnr:.2f} dB"
                + ("" if reached and reached[-1] >= 30 else " (30 dB not reached within the steps)"))
        rec.add(case, sec=dt, unit="run", peak_gib=peak_gib(device),
                text=f"{dt:.1f} s ({dt / max(nla.steps, 1) * 1e3:.1f} ms/step)", note=note + "; incl. final recon")
    except Cancelled:
        sampled = [lg["psnr_sampled"] for lg in timer.logs if "psnr_sampled" in lg]
        rec.add(case, note=f"time budget ran out at step {len(timer.logs)} (sampled PSNR "
                           f"{sampled[-1] if sampled else float('nan'):.2f} dB); step {_median(timer.times) * 1e3:.1f} ms")
    except Exception as exc:
        rec.add(case, note=_error_text(exc))
    if time.monotonic() < deadline:
        try:
            from safetensors.torch import save_file
            from torchvision.models.optical_flow import raft_large

            with tempfile.TemporaryDirectory() as tmp:
                torch.manual_seed(0)
                save_file({k: t.contiguous() for k, t in raft_large(weights=None).state_dict().items()},
                          os.path.join(tmp, "raft_large_random.safetensors"))
                raft, rname = make_flow_estimator(device, [tmp], "raft")
                raft(v.frames[0], v.frames[1])  # warm-up
                _sync(device)
                t2 = time.perf_counter()
                for i in range(plan.raft_pairs):
                    raft(v.frames[i], v.frames[i + 1])
                rec.add(f"RAFT large flow at {W}x{H} (random weights, 20 updates)",
                        sec=(time.perf_counter() - t2) / plan.raft_pairs, unit="pair",
                        note=f"per direction; {plan.raft_pairs} pair(s)")
        except Exception as exc:
            rec.add("RAFT large flow", note=_error_text(exc))


def section_render(plan: Plan, rec: Recorder, deadline: float, out_dir: Optional[str]) -> None:
    from memory import peak_gib, reset_peak
    from render_bench import APPLY, ATLAS_RENDER, PLAIN_LAYOUT, render_cases, synthetic_frames
    from t2l_core.edit.generator import GeneratorConfig

    device = torch.device(plan.device)
    gcfg = GeneratorConfig(**plan.render_generator) if plan.render_generator else GeneratorConfig()
    for label, h, w, n in plan.render_sizes:
        if time.monotonic() > deadline:
            rec.add(label, note="skipped: the section's time budget ran out")
            continue
        try:
            frames = synthetic_frames(n, h, w)
            cases = render_cases(frames, device, gcfg)
            flops = None
            with torch.no_grad():
                cases[APPLY]()  # warm-up
                try:
                    from t2l_core.edit.generator import build_generator

                    with _counting_flops() as counter:
                        build_generator(gcfg, device=device, seed=0).requires_grad_(False)(frames[:1].to(device))
                    flops = counter.get_total_flops()
                except Exception:
                    pass
                for key, short in ((PLAIN_LAYOUT, "generator, standard layout (reference)"),
                                   (APPLY, "apply-layer"), (ATLAS_RENDER, "atlas render fg + bg")):
                    if time.monotonic() > deadline:
                        rec.add(f"{label}: {short}", note="skipped: the section's time budget ran out")
                        continue
                    reset_peak(device)
                    _sync(device)
                    t0 = time.perf_counter()
                    cases[key]()
                    _sync(device)
                    dt = (time.perf_counter() - t0) / n
                    rec.add(f"{label}: {short}", sec=dt, unit="frame", peak_gib=peak_gib(device),
                            flops=flops if key != ATLAS_RENDER else None,
                            ref=f"render:{label}: generator, standard layout (reference)" if key == APPLY else None,
                            note=f"{1 / dt:.2f} frames/s, {n} frames")
        except Exception as exc:
            rec.add(label, note=_error_text(exc))


SECTION_FUNCS: dict[str, Callable] = {"tests": section_tests, "ceiling": section_ceiling, "image": section_image,
                                      "video": section_video, "nla": section_nla, "render": section_render,
                                      "compile": section_compile}


# ------------------------------------------------------------------------------------------------ running

def run_in_process(name: str, plan: Plan, out_dir: Optional[str], deadline: float) -> tuple[list[Row], dict]:
    rec = Recorder(name)
    try:
        SECTION_FUNCS[name](plan, rec, deadline, out_dir)
    except Exception as exc:
        rec.add("(section)", note=_error_text(exc))
        traceback.print_exc()
    return rec.rows, rec.extra


def run_isolated(name: str, plan: Plan, out_dir: Optional[str], soft: float, hard: float,
                 args: argparse.Namespace) -> tuple[list[Row], dict]:
    """The section in its own Python process (a crash, a hang or a CUDA error cannot take the others down)."""
    with tempfile.TemporaryDirectory() as tmp:
        result = os.path.join(tmp, f"{name}.json")
        cmd = [sys.executable, os.path.abspath(__file__), "--section", name, "--result", result,
               "--device", plan.device, "--soft-seconds", f"{soft:.1f}", "--budget", str(args.budget)]
        if plan.smoke:
            cmd.append("--smoke")
        if out_dir:
            cmd += ["--out", out_dir]
        error = None
        try:
            proc = subprocess.run(cmd, cwd=REPO, timeout=hard)
            if proc.returncode != 0:
                error = f"error: the section's process exited with code {proc.returncode}"
        except subprocess.TimeoutExpired:
            error = f"error: killed at its hard time limit ({hard:.0f} s)"
        data = json.loads(Path(result).read_text()) if os.path.isfile(result) else {"rows": [], "extra": {}}
    rows = [Row(**r) for r in data["rows"]]
    if error:
        rows.append(Row(name, "(section)", note=error))
    return rows, data.get("extra", {})


# ------------------------------------------------------------------------------------------------ table

def _fmt_time(r: Row) -> str:
    if r.text:
        return r.text
    if r.sec is None or r.sec != r.sec:
        return "-"
    return f"{r.sec * 1e3:.1f} ms/{r.unit}" if r.sec < 1 else f"{r.sec:.2f} s/{r.unit}"


def render_table(rows: list[Row], ceiling: dict) -> str:
    by_key = {f"{r.section}:{r.case}": r for r in rows}
    headers = ["section", "case", "time", "speed-up vs plain fp32", "peak memory GiB", "useful GFLOP per unit",
               "% of fp32 matmul ceiling", "% of bf16 matmul ceiling", "projected full run", "note"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for r in rows:
        ref = by_key.get(r.ref) if r.ref else None
        speed = f"{ref.sec / r.sec:.2f}x" if ref and ref.sec and r.sec else ""
        pct = ["", ""]
        if r.flops and r.sec:
            rate = r.flops / r.sec / 1e9
            pct = [f"{100 * rate / ceiling[p]:.1f}%" if ceiling.get(p) else "" for p in ("fp32", "bf16")]
        proj = f"{r.project} steps: {r.sec * r.project / 60:.1f} min" if r.project and r.sec else ""
        cells = [r.section, r.case, _fmt_time(r), speed, f"{r.peak_gib:.2f}" if r.peak_gib is not None else "",
                 f"{r.flops / 1e9:.3g}" if r.flops else "", *pct, proj, r.note.replace("|", "/")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _versions() -> str:
    from importlib import metadata

    out = []
    for dist in ("open_clip_torch", "kornia", "madgrad", "torchvision"):
        try:
            out.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            out.append(f"{dist} missing")
    return ", ".join(out)


def header(plan: Plan, total_s: float, argv: list[str]) -> str:
    from report import machine_line

    dev = torch.device(plan.device)
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        devline = (f"{p.name}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs, CUDA "
                   f"{torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}; matmul allow_tf32="
                   f"{torch.backends.cuda.matmul.allow_tf32}, cudnn allow_tf32={torch.backends.cudnn.allow_tf32}")
    else:
        devline = "CPU"
    mode = ("SMOKE RUN (tiny sizes, a couple of steps: checks that every section runs; NOT a measurement)"
            if plan.smoke else "measurement at the paper's configuration")
    return (f"# GPU check: {mode}\n\n`python bench/gpu_check.py {' '.join(argv)}` "
            f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {machine_line()}; python "
            f"{platform.python_version()}; {_versions()})\n\nDevice: {devline}. Total {total_s:.0f} s.\n")


# ------------------------------------------------------------------------------------------------ main

def _parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes and a couple of steps (CI): NOT a measurement")
    ap.add_argument("--out", default=None, help="folder for gpu_check.md and the pytest log (e.g. $OUT)")
    ap.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset of " + ",".join(SECTIONS))
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds for the whole check (default 420; smoke: 3600, every case runs)")
    ap.add_argument("--isolate", choices=["auto", "yes", "no"], default="auto",
                    help="run each section in its own process (auto: yes on CUDA, no in smoke mode)")
    ap.add_argument("--section", default=None, help=argparse.SUPPRESS)  # child process: run one section
    ap.add_argument("--result", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--soft-seconds", type=float, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.budget is None:
        a.budget = 3600.0 if a.smoke else 420.0
    return a


def _run_child_section(a: argparse.Namespace, plan: Plan) -> None:
    """A child process's one section, its rows to ``--result`` as they come."""
    rec = Recorder(a.section, a.result)
    deadline = time.monotonic() + (a.soft_seconds or plan.budgets[a.section])
    try:
        SECTION_FUNCS[a.section](plan, rec, deadline, a.out)
    except Exception as exc:
        rec.add("(section)", note=_error_text(exc))
        traceback.print_exc()


def _run_sections(a: argparse.Namespace, plan: Plan, names: list[str], isolate: bool) -> tuple[list[Row], dict]:
    """Every section in turn within the check's budget: the rows, and the ceilings measured."""
    end = time.monotonic() + a.budget
    rows: list[Row] = []
    ceiling: dict = {}
    for name in names:
        left = end - time.monotonic()
        soft = min(plan.budgets[name], max(left - 5.0, 0.0))
        print(f"== {name} (budget {soft:.0f} s, {left:.0f} s left in all)", flush=True)
        if left < 10.0:
            rows.append(Row(name, "(section)", note=f"skipped: the check's budget ({a.budget:.0f} s) ran out"))
            continue
        if isolate:
            got, extra = run_isolated(name, plan, a.out, soft, min(plan.hard[name], left), a)
        else:
            got, extra = run_in_process(name, plan, a.out, time.monotonic() + soft)
        rows += got
        ceiling.update(extra.get("ceiling", {}))
    return rows, ceiling


def main(argv: Optional[list[str]] = None) -> str:
    a = _parse_args(argv)
    from t2l_core.device import resolve_device

    try:
        device = resolve_device(a.device)
    except (ValueError, RuntimeError) as exc:
        raise SystemExit(f"error: --device {a.device}: {exc}")
    plan = make_plan(a.smoke, str(device), a.budget)
    if a.smoke:
        torch.set_num_threads(1)  # tiny tensors: one thread is faster and leaves the other cores to CI
    if a.out:
        os.makedirs(a.out, exist_ok=True)
    if a.section:
        _run_child_section(a, plan)
        return ""

    names = [s.strip() for s in a.sections.split(",") if s.strip()]
    unknown = [s for s in names if s not in SECTIONS]
    if unknown:
        raise SystemExit(f"error: --sections: unknown {unknown}; choose from {', '.join(SECTIONS)}")
    isolate = (a.isolate == "yes") or (a.isolate == "auto" and device.type == "cuda" and not a.smoke)
    t_start = time.monotonic()
    rows, ceiling = _run_sections(a, plan, names, isolate)
    total = time.monotonic() - t_start
    text = header(plan, total, sys.argv[1:] if argv is None else argv) + "\n" + render_table(rows, ceiling) + "\n\n" + (
        "Speed-up = plain fp32 time / this time on the same device and run. Useful GFLOP = the plain path's "
        "counted FLOPs (torch.utils.flop_counter: matmuls, convolutions, attention) per step / frame; the ceiling "
        "fractions divide the achieved rate by the matmul ceilings measured above. Image steps are amortised "
        "as in training (74 crop steps + 1 whole-image step per 75), video steps likewise (whole atlas every "
        f"75th). {PAPER}.\n")
    print("\n" + text, flush=True)
    if a.out:
        Path(a.out, "gpu_check.md").write_text(text)
    return text

if __name__ == "__main__":
    main()
