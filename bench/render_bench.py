"""Render and apply-layer throughput (frames per second) at the paper's video size.

    python bench/render_bench.py [--frames 8 --height 432 --width 768 --rounds 2]

* apply-layer: a trained-size edit layer (3.1M-parameter generator, random weights: same cost) applied to
  frames with :meth:`EditLayer.render` (the Apply Edit Layer node / ``apply-layer`` CLI), and the same
  generator run directly in channels-last format (the fast path's memory format), interleaved;
* atlas render: :func:`render_edits` of a foreground and a background atlas edit into every frame of a
  :class:`LayeredAtlas` (the NLA render node / ``render`` CLI).

Peak memory is the process's peak RSS (CUDA: max allocated) during each measurement.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from memory import peak_gib, reset_peak  # noqa: E402
import report  # noqa: E402
from report import publish, table  # noqa: E402

from t2l_core.edit.layer import EditLayer  # noqa: E402
from t2l_core.edit.generator import GeneratorConfig, build_generator  # noqa: E402


def synthetic_frames(n: int, h: int, w: int) -> torch.Tensor:
    """n smooth random frames [n,3,h,w] in 0..1 (seed 0) to render over."""
    g = torch.Generator().manual_seed(0)
    base = torch.rand(1, 3, h // 8, w // 8, generator=g)
    frames = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)
    return (frames + 0.02 * torch.rand(n, 3, h, w, generator=g)).clamp(0, 1)


def _time(fn, n_frames: int, device: torch.device) -> tuple[float, float]:
    reset_peak(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n_frames / (time.perf_counter() - t0), peak_gib(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--height", type=int, default=432)
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    report.add_no_write_option(ap)
    a = report.parse_bench_args(ap)
    device = torch.device(a.device)
    frames = synthetic_frames(a.frames, a.height, a.width)
    load0 = os.getloadavg()
    cases = render_cases(frames, device)
    fps: dict[str, list[float]] = {k: [] for k in cases}
    peak: dict[str, float] = {k: 0.0 for k in cases}
    with torch.no_grad():
        cases[APPLY]()  # warm-up
        for r in range(a.rounds):
            for name in (list(cases) if r % 2 == 0 else list(cases)[::-1]):
                f, p = _time(cases[name], a.frames, device)
                print(f"round {r + 1}: {name}: {f:.2f} frames/s, peak {p:.2f} GiB", flush=True)
                fps[name].append(f)
                peak[name] = max(peak[name], p)
    load1 = os.getloadavg()
    rows = [[name, f"{statistics.median(v):.2f}", f"{1 / statistics.median(v):.2f}", f"{peak[name]:.2f}"]
            for name, v in fps.items()]
    publish(f"Render and apply-layer throughput ({a.frames} frames, {a.width}x{a.height})",
            table(["operation", "frames/s (median)", "s/frame", "peak memory GiB"], rows),
            f"{a.rounds} interleaved rounds. Load average {load0[0]:.2f} at start, {load1[0]:.2f} at end on "
            f"{os.cpu_count()} cores. Random weights (same cost as trained ones).")


APPLY = "apply-layer (EditLayer.render: channels-last, in-place activations)"
PLAIN_LAYOUT = "generator passes in the standard layout (reference)"
ATLAS_RENDER = "atlas render (fg + bg edits)"


def render_cases(frames: torch.Tensor, device: torch.device,
                 generator: GeneratorConfig | None = None) -> dict:
    """The measured operations on ``frames`` [T,3,H,W] (CPU, 0..1), each a no-argument callable: the
    apply-layer path, the same generator in the standard layout, and the atlas render of fg + bg edits."""
    gcfg = generator or GeneratorConfig()
    layer = EditLayer(build_generator(gcfg, seed=0).state_dict(), gcfg, {})
    gen_plain = build_generator(gcfg, device=device, seed=0).requires_grad_(False)

    def apply_layer():
        layer.render(frames, device=device)

    @torch.no_grad()
    def apply_plain_layout():  # the generator as trained on the plain path: standard layout, no in-place ops
        for t in range(frames.shape[0]):
            gen_plain(frames[t : t + 1].to(device)).cpu()

    from t2l_core.nla.atlas_model import AtlasConfig, LayeredAtlas
    from t2l_core.nla.render import AtlasEdit, make_bbox, render_edits

    T, _, height, width = frames.shape
    atlas = LayeredAtlas(AtlasConfig(height=height, width=width, frames=T)).to(device).requires_grad_(False)
    edits = {}
    for layer_name in ("fg", "bg"):
        bbox = make_bbox(atlas, layer_name, resolution=1000)
        edits[layer_name] = AtlasEdit(torch.rand(3, bbox.height, bbox.width), torch.rand(bbox.height, bbox.width), bbox)

    def atlas_render():
        render_edits(atlas, frames, edits["fg"], edits["bg"])

    return {APPLY: apply_layer, PLAIN_LAYOUT: apply_plain_layout, ATLAS_RENDER: atlas_render}


if __name__ == "__main__":
    main()
