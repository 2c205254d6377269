"""Layered atlas on ground-truth videos: reconstruction PSNR, edit-landing error and atlas spread.

    python bench/atlas_truth.py [--variants rigid,nonrigid,portrait,exit,bg_only] [--frames 50]
                                [--size 768x432] [--iters N] [--threads 2]

Each variant is fitted in a fresh process (so peak RSS is that fit's own), on a video of
tests/ground_truth_video.py (a bending, turning photo cut-out over a panned photograph, exact
correspondences) with the true binary masks (``bg_only``: no foreground, fitted without masks). Reported per
variant: full-video reconstruction PSNR, median / 95th-percentile edit-landing error in frame px for
foreground and background (tests/atlas_consistency.py: a dot painted on the atlas at the atlas position of a
point in its reference frame, where the fitted mapping draws it in every other frame vs where the truth puts
that point; over every texture point visible in some frame, the pairs within ``--border`` px of the frame
border also reported apart), the atlas-coordinate spread in frame px, fit time (wall, including optical flow and the final
reconstruction), the fit process's CPU time, and its peak RSS. ``portrait`` is ``nonrigid`` with width and
height swapped. Targets: PSNR >= 30 dB, median landing <= 1 px, p95 <= 3 px, under 30 minutes per 50 frames
on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import torch  # noqa: E402

from report import add_no_write_option, apply_no_write, fresh_process_row, publish, table, write_row  # noqa: E402

from t2l_core.cli.setting_options import add_setting, add_settings, config_from_args  # noqa: E402
from t2l_core.nla.config import NLAFitConfig  # noqa: E402
from t2l_core.nla.losses import NLALossWeights  # noqa: E402

VIDEO_OF = {"rigid": "rigid", "nonrigid": "nonrigid", "portrait": "nonrigid", "exit": "exit", "bg_only": "bg_only"}


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_one(a) -> dict:
    """Generate, fit and measure one variant in this process; returns the row as a dict."""
    from atlas_consistency import atlas_consistency
    from ground_truth_video import make_ground_truth_video

    from t2l_core.nla.fit import fit_nla
    from t2l_core.progress import Hooks

    w, h = (int(s) for s in a.size.lower().split("x"))
    if a.variant == "portrait":
        w, h = min(w, h), max(w, h)
    video = make_ground_truth_video(VIDEO_OF[a.variant], frames=a.frames, height=h, width=w)
    masks = video.masks if (video.masks is not None and not a.no_masks) else None
    cfg = config_from_args(NLAFitConfig, a)
    cfg.weights.residual_bg = a.residual_bg
    t_start = time.perf_counter()

    def on_step(step, total, logs, preview):
        if step % 100 == 0 or "psnr_sampled" in logs:
            print(f"[{a.variant} {step}/{total}] {time.perf_counter() - t_start:7.1f}s batch PSNR {logs['psnr_batch']:.2f}",
                  flush=True)

    cpu0, wall0 = _cpu_s(), time.perf_counter()
    if a.load_atlas:  # measure an atlas fitted and saved earlier (--save-atlas) on the same video
        from t2l_core.nla.atlas_files import load_nla
        nla = load_nla(a.load_atlas.replace("{variant}", a.variant), frames=video.frames)
        fit_wall = fit_cpu = float("nan")
    else:
        nla = fit_nla(video.frames, masks, cfg, hooks=Hooks(on_step=on_step))
        fit_wall, fit_cpu = time.perf_counter() - wall0, _cpu_s() - cpu0
    if a.save_atlas:
        from t2l_core.nla.atlas_files import save_nla
        save_nla(nla, a.save_atlas.replace("{variant}", a.variant))
    t0 = time.perf_counter()
    t_ref = None if a.ref_frame is None else a.ref_frame % a.frames
    res = atlas_consistency(video, nla.model, t_ref=t_ref, stride=a.stride, points=a.points, border_px=a.border)
    metric_s = time.perf_counter() - t0
    if a.breakdown:
        for layer in nla.model.layers():
            print(json.dumps({f"{layer}_landing_breakdown": landing_breakdown(video, nla.model, a.stride, layer,
                                                                             a.points, t_ref)}, indent=1), flush=True)
    row = dict(variant=a.variant, frames=a.frames, width=w, height=h, masks=masks is not None, steps=nla.steps,
               psnr=nla.psnr, fit_wall_s=fit_wall, fit_cpu_s=fit_cpu, peak_rss_gib=resource.getrusage(
                   resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2, metric_s=metric_s, threads=torch.get_num_threads(),
               layers={k: v.to_dict() for k, v in res.items()})
    return row


def landing_breakdown(video, model, stride: int, layer: str = "bg", points: str = "all",
                      t_ref: int | None = None) -> dict:
    """Where a layer's landing errors are: p95 / share above 3 px of the pairs, grouped by the truth
    position's row (thirds of the frame height), by distance to the frame border, by frame distance from the
    point's reference frame, and by the local texture of the frame (Sobel magnitude, terciles)."""
    from atlas_consistency import layer_consistency, model_uv_fn

    _, pairs = layer_consistency(video, model_uv_fn(model), layer, t_ref=t_ref, stride=stride, keep_pairs=True,
                                 points=points)
    err, truth, frame = pairs["error"], pairs["truth"], pairs["frame"]
    H, W = video.size
    border = torch.minimum(torch.minimum(truth[:, 0], W - 1 - truth[:, 0]), torch.minimum(truth[:, 1], H - 1 - truth[:, 1]))
    gray = video.frames.mean(1, keepdim=True).double()  # [T,1,H,W]
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=torch.float64)[None, None]
    mag = (torch.nn.functional.conv2d(gray, sobel, padding=1) ** 2
           + torch.nn.functional.conv2d(gray, sobel.transpose(-1, -2), padding=1) ** 2).sqrt()[:, 0]
    xi, yi = truth[:, 0].round().long().clamp(0, W - 1), truth[:, 1].round().long().clamp(0, H - 1)
    texture = mag[frame, yi, xi]
    t1, t2 = float(torch.quantile(texture, 1 / 3)), float(torch.quantile(texture, 2 / 3))
    ref = pairs["ref_frame"]
    groups = {
        "row top/middle/bottom": [truth[:, 1] < H / 3, (truth[:, 1] >= H / 3) & (truth[:, 1] < 2 * H / 3),
                                  truth[:, 1] >= 2 * H / 3],
        "border <8/8-24/24-96/>96 px": [border < 8, (border >= 8) & (border < 24), (border >= 24) & (border <= 96),
                                        border > 96],
        "frames from ref <8/8-16/>16": [(frame - ref).abs() < 8, ((frame - ref).abs() >= 8) & ((frame - ref).abs() <= 16),
                                        (frame - ref).abs() > 16],
        "texture low/mid/high": [texture < t1, (texture >= t1) & (texture < t2), texture >= t2],
    }
    out = {}
    for name, masks in groups.items():
        out[name] = [{"pairs": int(m.sum()), "p95_px": round(float(torch.quantile(err[m].clamp(max=1e6), 0.95)), 2)
                      if m.any() else None, "over_3px": round(float((err[m] > 3).double().mean()), 3) if m.any() else None}
                     for m in masks]
    return out


def _fmt(layer: dict | None, key: str) -> str:
    if layer is None:
        return "-"
    return f"{layer[key]:.2f}"


def _variant_row(v: str) -> list:
    """Fit and measure one variant in a worker process (this script with ``--variant``); its table row."""
    r = fresh_process_row(__file__, ["--variant", v])
    print(json.dumps(r), flush=True)
    fg, bg = r["layers"].get("fg"), r["layers"].get("bg")
    return [v, f"{r['frames']}x{r['width']}x{r['height']}", "yes" if r["masks"] else "no", r["steps"],
            f"{r['psnr']:.2f}", _fmt(fg, "landing_median_px"), _fmt(fg, "landing_p95_px"),
            _fmt(fg, "border_landing_p95_px"), _fmt(fg, "inner_landing_p95_px"),
            _fmt(bg, "landing_median_px"), _fmt(bg, "landing_p95_px"), _fmt(bg, "border_landing_p95_px"),
            _fmt(fg, "spread_p95_frame_px"), _fmt(bg, "spread_p95_frame_px"),
            f"{(fg or {}).get('missing', 0)}/{(fg or {}).get('pairs', 0)}",
            f"{r['fit_wall_s'] / 60:.1f}", f"{r['fit_cpu_s'] / 60:.1f}", f"{r['peak_rss_gib']:.2f}"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default="rigid,nonrigid,portrait",
                   help="comma-separated: rigid, nonrigid, portrait, exit, bg_only")
    p.add_argument("--frames", type=int, default=50)
    p.add_argument("--size", default="768x432", help="WxH of landscape video (portrait swaps them)")
    add_settings(p, NLAFitConfig, (("--iters", "iterations"), ("--batch", "batch_pixels"),
                                   ("--target-psnr", "target_psnr"), ("--eval-every", "eval_every"), ("--flow", "flow"),
                                   ("--seed", "seed"), ("--motion-init", "motion_init")))
    p.set_defaults(flow="lk")  # the built-in estimator: no weights to find, the same flow on every machine
    p.add_argument("--breakdown", action="store_true",
                   help="also print where the background's landing errors are (rows, border, frames, texture)")
    p.add_argument("--stride", type=int, default=12, help="point grid spacing in (texture ~ frame) px")
    p.add_argument("--points", default="all", choices=["all", "reference"],
                   help="measured points: every point visible in some frame (all), or the grid pixels of the "
                        "reference frame (reference)")
    p.add_argument("--ref-frame", type=int, default=None,
                   help="each point's reference is its visible frame nearest to this one (default: the middle "
                        "frame; -1: the last)")
    p.add_argument("--border", type=float, default=24.0, help="width in px of the border band reported apart")
    p.add_argument("--load-atlas", default="",
                   help="measure this saved atlas instead of fitting ({variant} is replaced by the variant); "
                        "fit times are then nan")
    p.add_argument("--no-masks", action="store_true", help="fit without masks (background-only atlas)")
    add_setting(p, NLALossWeights, "--residual-bg", "residual_bg", "the background's motion prior weight")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--save-atlas", default="",
                   help="also save each fitted atlas here (.safetensors; {variant} is replaced by the variant)")
    p.add_argument("--variant", help=argparse.SUPPRESS)      # worker mode: one variant, its row as JSON in
    p.add_argument("--result-file", help=argparse.SUPPRESS)  # this file
    add_no_write_option(p)
    a = p.parse_args()
    apply_no_write(a)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.variant:
        write_row(a.result_file, run_one(a))
        return
    rows = [_variant_row(v) for v in a.variants.split(",")]
    ref = "the middle frame" if a.ref_frame is None else f"frame {a.ref_frame % a.frames}"
    publish("Layered atlas on ground-truth videos: PSNR and edit-landing error",
            table(["variant", "frames x W x H", "masks", "steps", "PSNR dB", "fg landing median px",
                   "fg landing p95 px", "fg border p95 px", "fg inner p95 px", "bg landing median px",
                   "bg landing p95 px", "bg border p95 px", "fg spread p95 px",
                   "bg spread p95 px", "fg missing/pairs", "fit wall min", "fit CPU min", "peak RSS GiB"], rows),
            notes=f"batch {a.batch_pixels}, flow {a.flow}, motion_init {a.motion_init}, background motion prior "
                  f"residual_bg {a.residual_bg:g}, points every {a.stride} px: "
                  + (f"every texture point visible in some frame, each with its visible frame nearest to {ref} "
                     "as its reference" if a.points == "all" else f"the grid pixels of {ref}")
                  + ". Landing error: frame px between where a dot painted on the atlas at a "
                  "point's atlas position in its reference frame is drawn in another frame and where the truth "
                  "puts that point (tests/atlas_consistency.py); missing pairs count as infinite. Border p95: "
                  f"the pairs whose truth position is within {a.border:g} px of the frame border; inner p95: the "
                  "others. Spread: distance of a "
                  "canonical point's atlas position in one frame to its mean over frames, in frame px. Fit time "
                  "includes optical flow and the final reconstruction; CPU min is the fit process's user+system "
                  "time. Targets: PSNR >= 30 dB, median landing <= 1 px, p95 <= 3 px, <= 30 min per 50 frames.")


if __name__ == "__main__":
    main()
