"""What each measure of the fast path costs and saves on this CPU: time per step and peak RSS, one at a time.

    python bench/fast_measures.py [--steps 3 --rounds 2 --size 512 --memory-steps 5]

Same configuration as bench/image_step.py (512 px, 16 views, bootstrapping, random ViT-B/32). Paths:
plain fp32, the fast path with every measure (:class:`t2l_core.runtime.measures.FastMeasures`), the fast path
with one measure off at a time, the default that :func:`t2l_core.runtime.measures.default_measures` picks on this
CPU, and ``save_memory``. They run interleaved in one process (order reversed every round, same seeds);
peak RSS is measured for each path alone in a fresh process (``--memory-steps`` steps, step 0 holds the
whole image too). Run it once as is and once with the vector ISA limited to AVX2, e.g.

    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 python bench/fast_measures.py
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from image_step import begin, interleaved_rounds, paper_image, run, with_seed  # noqa: E402
import report  # noqa: E402
from report import publish, table  # noqa: E402

from t2l_core.clip.loading import build_random_clip  # noqa: E402
from t2l_core.runtime.measures import FastMeasures, default_measures, forced_measures  # noqa: E402
from t2l_core.edit.config import EditConfig  # noqa: E402

MEASURES = [f.name for f in dataclasses.fields(FastMeasures)]


def paths(base: dict, device: torch.device) -> dict[str, tuple[EditConfig, FastMeasures | None]]:
    """Name -> (config, forced measures or None for the runtime's own choice)."""
    out: dict[str, tuple[EditConfig, FastMeasures | None]] = {
        "plain fp32": (EditConfig.from_flat(fast=False, **base), None),
        "fast, every measure": (EditConfig.from_flat(fast=True, **base), FastMeasures()),
    }
    for name in MEASURES:
        out[f"fast without {name}"] = (EditConfig.from_flat(fast=True, **base), FastMeasures().without(name))
    out["default (this CPU)"] = (EditConfig.from_flat(fast=True, **base), None)
    out["save_memory"] = (EditConfig.from_flat(fast=True, save_memory=True, **base), None)
    return out


def run_path(clip, image, config: EditConfig, measures: FastMeasures | None):
    if measures is None:
        return run(clip, image, config)
    with forced_measures(measures):
        return run(clip, image, config)


def child(spec: str, size: int, device: torch.device) -> None:
    """``--child``: one path alone in this process; prints ``PEAK <GiB>``."""
    d = json.loads(spec)
    clip = build_random_clip("ViT-B-32-quickgelu", seed=0, device=device)
    measures = FastMeasures(**d["measures"]) if d["measures"] is not None else None
    _, pk = run_path(clip, paper_image(size), EditConfig.from_dict(d["config"]), measures)
    print(f"PEAK {pk:.4f}", flush=True)


def fresh_peak(config: EditConfig, measures: FastMeasures | None, a) -> float:
    spec = json.dumps({"config": config.to_dict(),
                       "measures": dataclasses.asdict(measures) if measures is not None else None})
    cmd = [sys.executable, os.path.abspath(__file__), "--child", spec, "--size", str(a.size), "--device", a.device,
           "--threads", str(a.threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return float(next(line.split()[1] for line in out.splitlines() if line.startswith("PEAK ")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=3, help="steps per timed run (step 0 = full-image step)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--memory-steps", type=int, default=5)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--views", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (0 = torch's default)")
    ap.add_argument("--only", default="", help="comma-separated path names to run (default: all)")
    report.add_no_write_option(ap)
    a = report.parse_bench_args(ap)
    started = begin(a, child)
    if started is None:
        return
    device, load0, (clip, image, base) = started
    todo = paths(base, device)
    if a.only:
        keep = {s.strip() for s in a.only.split(",")}
        todo = {k: v for k, v in todo.items() if k in keep or k == "plain fp32"}
    names = list(todo)
    stats = interleaved_rounds(names, a.rounds,
                               lambda name, seed: run_path(clip, image, with_seed(todo[name][0], seed), todo[name][1]))
    fresh = {}
    for name in names:
        print(f"peak RSS in a fresh process: {name}", flush=True)
        cfg, measures = todo[name]
        fresh[name] = fresh_peak(EditConfig.from_dict({**cfg.to_dict(), "iters": a.memory_steps}), measures, a)
    load1 = os.getloadavg()
    chosen = default_measures(device)
    rows = []
    for name in names:
        st = stats[name]
        paired = statistics.geometric_mean([p / f for p, f in zip(stats["plain fp32"]["per_round"], st["per_round"])])
        rows.append([name, f"{statistics.median(st['crop']):.2f}", f"{statistics.median(st['full']):.2f}",
                     f"{paired:.2f}x", f"{fresh[name]:.2f}"])
    body = table(["path", "crop step s (median)", "full-image step s", "paired speed-up vs plain",
                  f"peak RSS GiB, own process ({a.memory_steps} steps)"], rows)
    on = [n for n in MEASURES if getattr(chosen, n)]
    notes = (f"Default measures on this CPU: {', '.join(on) or 'none'}. "
             f"ISA limits: ATEN_CPU_CAPABILITY={os.environ.get('ATEN_CPU_CAPABILITY', '-')}, "
             f"ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', '-')}, "
             f"MKL_ENABLE_INSTRUCTIONS={os.environ.get('MKL_ENABLE_INSTRUCTIONS', '-')}. "
             f"Load average {load0[0]:.2f} at start, {load1[0]:.2f} at end on {os.cpu_count()} cores; "
             f"{a.rounds} interleaved rounds x {a.steps} steps.")
    publish(f"Fast-path measures one at a time ({a.size} px, {a.views} views, random ViT-B/32)", body, notes)


if __name__ == "__main__":
    main()
