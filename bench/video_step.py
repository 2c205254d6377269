"""Video (atlas) edit: seconds per training step at the paper's video configuration, fast vs plain path.

    python bench/video_step.py [--frames 70 --height 432 --width 768 --steps 3 --rounds 1 --layers fg bg]

Paper configuration (paper appendix A.4, supplement section 3): 70 frames at 432x768, 6 CLIP views, the video loss weights
(:class:`VideoEditConfig` defaults), 3-frame examples + the direct pass, the whole atlas every 75 steps,
a CLIP of the ViT-B/32 architecture with random weights (same cost as the real one). The atlas is the
synthetic video of tests/synthetic_video.py (real photographs, known motion, masks) with an NLA fitted for
``--fit-iters`` steps on the ground-truth flow: the step cost depends on the atlas and crop sizes, not
on how well the atlas reconstructs the video. Paths are interleaved in one process (alternating order).

"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

from image_step import StepTimer  # noqa: E402
from memory import peak_gib, reset_peak  # noqa: E402
import report  # noqa: E402
from report import publish, table  # noqa: E402

from t2l_core.clip.loading import build_random_clip  # noqa: E402


def fitted_atlas(frames: int, height: int, width: int, iters: int, device: str | torch.device = "auto"):
    """A FittedNLA of the synthetic video (ground-truth flow, ``iters`` fitting steps on ``device``)."""
    from synthetic_video import make_synthetic_video

    from t2l_core.nla.fit import NLAFitConfig, fit_nla
    from t2l_core.nla.optical_flow import VideoFlow

    v = make_synthetic_video(frames=frames, height=height, width=width, bg_velocity=(1.0, 0.3), fg_velocity=(-1.5, 0.7))
    fwd = torch.stack([v.true_flow(t) for t in range(frames - 1)]).half()
    ok = torch.ones(frames - 1, height, width, dtype=torch.bool)
    flow = VideoFlow(fwd, -fwd.clone(), ok, ok.clone(), estimator="ground truth")
    return fit_nla(v.frames, v.masks, NLAFitConfig(iterations=iters), flow=flow, device=device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=70)
    ap.add_argument("--height", type=int, default=432)
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--steps", type=int, default=3, help="steps per run (the last one adds the whole atlas)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--layers", nargs="+", default=["fg", "bg"])
    ap.add_argument("--paths", nargs="+", default=["plain", "fast"], choices=["plain", "fast"])
    ap.add_argument("--atlas-scales", nargs="+", type=float, default=[1.0],
                    help="VideoEditConfig.atlas_scale values to time (atlas texels per native texel; the authors' "
                         "density is about 2.08 at 768x432)")
    ap.add_argument("--fit-iters", type=int, default=300)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    report.add_no_write_option(ap)
    a = report.parse_bench_args(ap)
    from t2l_core.video.config import VideoEditConfig
    from t2l_core.api import train_video_edit_layer
    device = torch.device(a.device)
    load0 = os.getloadavg()
    print(f"fitting the atlas ({a.frames} frames, {a.fit_iters} steps)...", flush=True)
    nla = fitted_atlas(a.frames, a.height, a.width, a.fit_iters)
    clip = build_random_clip("ViT-B-32-quickgelu", seed=0, device=device)
    prompts = dict(prompt="golden ball", source_prompt="ball")
    if a.steps < 2:
        raise SystemExit("--steps must be at least 2 (regular steps, then one step with the whole atlas)")
    # the whole atlas joins every 75th step in training; here the last step of each run, to time it too
    fasts = [p == "fast" for p in a.paths]
    runs = {(layer, fast, scale): VideoEditConfig.from_flat(layer=layer, fast=fast, iters=a.steps, full_image_every=a.steps,
                                                  atlas_scale=scale, **prompts)
            for layer in a.layers for scale in a.atlas_scales for fast in fasts}
    crop = {k: [] for k in runs}
    full = {k: [] for k in runs}
    peak = {k: 0.0 for k in runs}
    keys = list(runs)
    for r in range(a.rounds):
        for key in (keys if r % 2 == 0 else keys[::-1]):
            print(f"round {r + 1}: layer {key[0]}, {'fast' if key[1] else 'plain fp32'}, atlas_scale {key[2]}",
                  flush=True)
            timer = StepTimer()
            reset_peak(device)
            train_video_edit_layer(clip, nla, runs[key], hooks=timer.hooks(), render=False)
            peak[key] = max(peak[key], peak_gib(device))
            full[key].append(timer.times[-1])
            crop[key] += timer.times[:-1]
    load1 = os.getloadavg()
    rows = []
    for layer in a.layers:
        for scale in a.atlas_scales:
            plain_amort = None
            for fast in fasts:
                k = (layer, fast, scale)
                med = statistics.median(crop[k]) if crop[k] else float("nan")
                fm = statistics.median(full[k])
                amort = (74 * med + fm) / 75
                plain_amort = amort if not fast else plain_amort
                ratio = f"{plain_amort / amort:.2f}x" if plain_amort else "-"
                rows.append([layer, f"{scale:g}", "fast" if fast else "plain fp32", f"{med:.2f}", f"{fm:.2f}",
                             f"{amort:.2f}", f"{amort * 3000 / 3600:.1f}", ratio, f"{peak[k]:.2f}"])
    mem = "max allocated GiB" if device.type == "cuda" else "peak RSS GiB"
    publish(f"Video edit step at the paper's configuration ({a.frames} frames, {a.width}x{a.height}, 6 views)",
            table(["layer", "atlas_scale", "path", "step s (median)", "whole-atlas step s", "amortised s/step", "3000 steps h",
                   "speed-up vs plain", mem], rows),
            f"Synthetic video, NLA fitted {a.fit_iters} steps on ground-truth flow. {a.rounds} interleaved round(s) x "
            f"{a.steps} steps. Load average {load0[0]:.2f} at start, {load1[0]:.2f} at end on {os.cpu_count()} cores.")


if __name__ == "__main__":
    main()
