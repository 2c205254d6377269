"""Long videos: a layered-atlas fit of a long full-HD ground-truth clip at a working size, measured at full size.

    python bench/long_video.py [--frames 300] [--size 1920x1080] [--working-size 768] [--iters 2000]
                               [--landing-frames 30] [--stride 24] [--threads 2]

The clip is tests/ground_truth_video.py's ``nonrigid`` video (a bending, turning photo cut-out over a panned
photograph, exact correspondences), rendered a frame at a time as uint8 with its true masks as bool (no
full-video float tensor). It is fitted with ``NLAFitConfig.working_size`` (frames, masks and optical flow at
that long side; reconstruction, PSNR and landing at full size) in a fresh process, so the peak RSS is that
run's own (the uint8 clip, the fit and the uint8 full-size reconstruction). Reported: peak RSS, the fit's
memory estimate, the clip's generation time, the fit's wall time (optical flow, steps and the full-size
reconstruction of every frame), the PSNR over every pixel of every frame at full size, and the median / 95th
percentile edit-landing error in full-size frame px (tests/atlas_consistency.py) over ``--landing-frames``
evenly spaced frames (0 = skip the landing measure, e.g. for a memory-only run of a minute of video).
Targets: 300 frames of 1920x1080 in <= 8 GiB, PSNR >= 30 dB, landing p95 <= 3 px.
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

from report import add_no_write_option, fresh_process_row, parse_bench_args, publish, table, write_row  # noqa: E402

from t2l_core.cli.setting_options import add_settings, config_from_args  # noqa: E402
from t2l_core.nla.config import NLAFitConfig  # noqa: E402


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def run_one(a) -> dict:
    """Generate, fit and measure one clip in this process; returns the row as a dict."""
    from atlas_consistency import atlas_consistency
    from ground_truth_video import make_ground_truth_video

    from t2l_core.nla.fit import fit_nla
    from t2l_core.nla.fit_inputs import estimate_fit_memory
    from t2l_core.progress import Hooks

    w, h = (int(s) for s in a.size.lower().split("x"))
    t0 = time.perf_counter()
    video = make_ground_truth_video("nonrigid", frames=a.frames, height=h, width=w, uint8=True)
    gen_s = time.perf_counter() - t0
    gen_rss = _peak_rss_gib()
    print(f"generated {a.frames} frames {w}x{h} in {gen_s:.0f}s, peak RSS {gen_rss:.2f} GiB", flush=True)
    cfg = config_from_args(NLAFitConfig, a)
    estimate = estimate_fit_memory(a.frames, h, w, True, cfg.batch_pixels, cfg.working_size, frame_bytes=1,
                                   keep_reconstruction=a.keep_reconstruction)
    t_start = time.perf_counter()

    def on_step(step, total, logs, preview):
        if step % 200 == 0:
            print(f"[{step}/{total}] {time.perf_counter() - t_start:7.1f}s batch PSNR {logs['psnr_batch']:.2f}",
                  flush=True)

    def on_phase(name, done, total):
        if done == total or done % max(1, total // 10) == 0:
            print(f"  {name}: {done}/{total} at {time.perf_counter() - t_start:7.1f}s", flush=True)

    nla = fit_nla(video.frames, video.masks, cfg, hooks=Hooks(on_step=on_step, on_phase=on_phase),
                  reconstruction="keep" if a.keep_reconstruction else "psnr")
    fit_s = time.perf_counter() - t_start
    fit_rss = _peak_rss_gib()
    row = dict(frames=a.frames, width=w, height=h, working=f"{nla.model.cfg.grid_size()[1]}x{nla.model.cfg.grid_size()[0]}",
               steps=nla.steps, psnr=nla.psnr, gen_s=gen_s, fit_s=fit_s, estimate_gib=estimate / 2 ** 30,
               gen_rss_gib=gen_rss, peak_rss_gib=fit_rss, threads=torch.get_num_threads(), layers={})
    print(json.dumps(row), flush=True)
    if a.landing_frames > 0:
        n = min(a.landing_frames, a.frames)
        frames = sorted({round(i * (a.frames - 1) / max(n - 1, 1)) for i in range(n)})
        t0 = time.perf_counter()
        res = atlas_consistency(video, nla.model, stride=a.stride, frames=frames)
        row["landing_s"] = time.perf_counter() - t0
        row["landing_frames"] = frames
        row["layers"] = {k: v.to_dict() for k, v in res.items()}
    return row


def _fmt(layer: dict | None, key: str) -> str:
    return "-" if layer is None else f"{layer[key]:.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--size", default="1920x1080", help="WxH of the clip")
    add_settings(p, NLAFitConfig, (("--iters", "iterations"), ("--batch", "batch_pixels"), ("--flow", "flow"),
                                   ("--seed", "seed"), ("--working-size", "working_size")))
    p.set_defaults(flow="lk", working_size=768)  # the built-in flow: the same on every machine
    p.add_argument("--landing-frames", type=int, default=30,
                   help="evenly spaced frames the landing error is measured over (0 = none)")
    p.add_argument("--stride", type=int, default=24, help="landing point grid spacing in (texture ~ frame) px")
    p.add_argument("--keep-reconstruction", action="store_true",
                   help="keep the fit's uint8 full-size reconstruction (what the node keeps; the CLI does not)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--result-file", help=argparse.SUPPRESS)
    add_no_write_option(p)
    a = parse_bench_args(p)
    if a.worker:
        write_row(a.result_file, run_one(a))
        return
    r = fresh_process_row(__file__, ["--worker"])
    print(json.dumps(r), flush=True)
    fg, bg = r["layers"].get("fg"), r["layers"].get("bg")
    rows = [[f"{r['frames']}x{r['width']}x{r['height']}", r["working"], r["steps"], f"{r['peak_rss_gib']:.2f}",
             f"{r['estimate_gib']:.2f}", f"{r['gen_rss_gib']:.2f}", f"{r['fit_s'] / 60:.1f}", f"{r['gen_s'] / 60:.1f}",
             f"{r['psnr']:.2f}", _fmt(fg, "landing_median_px"), _fmt(fg, "landing_p95_px"),
             _fmt(bg, "landing_median_px"), _fmt(bg, "landing_p95_px"),
             f"{(fg or {}).get('missing', 0)}/{(fg or {}).get('pairs', 0)}"]]
    measured = (f"landing over {len(r['landing_frames'])} evenly spaced frames, points every {a.stride} px "
                "(every texture point visible in one of them, each with its visible frame nearest to the middle "
                "one as reference; tests/atlas_consistency.py), in full-size frame px"
                if r.get("landing_frames") else "landing not measured (memory run)")
    publish("Long videos: layered atlas at a working size, measured at full size",
            table(["frames x W x H", "fitted at", "steps", "peak RSS GiB", "estimate GiB", "RSS after clip GiB",
                   "fit wall min", "clip generation min", "PSNR dB (all frames, full size)", "fg landing median px",
                   "fg landing p95 px", "bg landing median px", "bg landing p95 px", "fg missing/pairs"], rows),
            notes=f"Ground-truth `nonrigid` clip (tests/ground_truth_video.py) as uint8 frames and bool masks; "
                  f"batch {a.batch_pixels}, flow {a.flow}, working_size {a.working_size}. Fit wall time includes "
                  "the optical flow (at the working size), the steps and the reconstruction of every frame at "
                  "full size (with the PSNR against the uint8 clip; "
                  f"{'kept as uint8' if a.keep_reconstruction else 'not kept, as in the CLI'}); peak RSS is the whole process's "
                  f"(clip included). {measured}. CPU: named on the line above (lscpu model name).")


if __name__ == "__main__":
    main()
