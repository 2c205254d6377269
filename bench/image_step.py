"""Image edit: seconds per training step and peak memory at the paper's configuration, fast vs plain path.

    python bench/image_step.py [--steps 3 --rounds 2 --size 512 --threads 0 --compile --save-memory]

Paper configuration (paper appendices A.2-A.3): shorter side 512 (skimage astronaut, 512x512), 16 CLIP views,
directional loss on, relevancy bootstrapping on (linear schedule), the 3.1M-parameter generator and a
CLIP of the ViT-B/32 architecture with random weights (it costs exactly what the real one costs).

The paths run interleaved in ONE process (order alternating every round, same seeds) so machine-load
drift hits both alike. Each run starts at step 0, which holds the crop AND the whole image (as every
75th step does); later steps hold only the crop. Reported: median crop-step time, the full-image step,
the amortised time per step (74 crop steps + 1 full-image step per 75), peak memory (CPU peak RSS of the
whole process incl. the 0.6 GiB CLIP, CUDA max allocated) of each path run alone in a fresh process, as a
user's run starts, and of the timed runs (there the C heap a path inherits from the other path's runs
changes its peak RSS by up to ~1.5 GiB: bench/RESULTS.md), FLOPs per step counted with
torch.utils.flop_counter (matmuls, convolutions, attention) for each path, and the floor those FLOPs give
at the machine's fp32 ceiling measured in the same run (bench/ceiling.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Callable, Optional

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from ceiling import measure as measure_ceiling  # noqa: E402
from memory import peak_gib, reset_peak  # noqa: E402
import report  # noqa: E402
from report import publish, table  # noqa: E402

from t2l_core.clip.loading import build_random_clip  # noqa: E402
from t2l_core.edit.objective import TextBanks  # noqa: E402
from t2l_core.progress import Hooks  # noqa: E402
from t2l_core.edit.config import EditConfig  # noqa: E402
from t2l_core.api import train_edit_layer  # noqa: E402

PROMPTS = dict(prompt="golden astronaut", source_prompt="astronaut", roi_text="astronaut")


def paper_image(size: int) -> torch.Tensor:
    from skimage import data

    img = torch.from_numpy(data.astronaut()).permute(2, 0, 1).unsqueeze(0).float() / 255.0
    if img.shape[-1] != size:
        img = torch.nn.functional.interpolate(img, size=(size, size), mode="bilinear", antialias=True)
    return img


class StepTimer:
    """Hooks that time every step: check_cancel's first call of a step marks its start."""

    def __init__(self, flops: "torch.utils.flop_counter.FlopCounterMode | None" = None) -> None:
        self.times: list[float] = []
        self.flops: list[float] = []
        self._start: float | None = None
        self._flop0 = 0
        self.counter = flops

    def check(self) -> None:
        if self._start is None:
            self._start = time.perf_counter()
            self._flop0 = self.counter.get_total_flops() if self.counter else 0

    def on_step(self, step, total, losses, preview) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # the step's device work is done before the clock is read
        self.times.append(time.perf_counter() - self._start)
        if self.counter:
            self.flops.append(self.counter.get_total_flops() - self._flop0)
        self._start = None
        print(f"    step {step}/{total}: {self.times[-1]:.2f}s total={losses['total']:.4f}", flush=True)

    def hooks(self) -> Hooks:
        return Hooks(on_step=self.on_step, check_cancel=self.check, preview_every=0)


def paper_inputs(size: int, steps: int, views: int, device: torch.device) -> tuple:
    """The timed paths' shared inputs: a random ViT-B/32 on ``device`` (text cache warmed with the prompts), the
    astronaut at ``size`` px, and the flat settings every path starts from."""
    clip = build_random_clip("ViT-B-32-quickgelu", seed=0, device=device)
    TextBanks.build(clip, PROMPTS["prompt"], None, PROMPTS["source_prompt"])  # warm the text cache
    base = dict(iters=steps, size=size, n_views=views, bootstrap_steps=1000, **PROMPTS)
    return clip, paper_image(size), base


def run(clip, image, config: EditConfig, flops: bool = False) -> tuple[StepTimer, float]:
    counter = None
    if flops:
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
    timer = StepTimer(counter)
    reset_peak(clip.device)
    if counter is not None:
        with counter:
            train_edit_layer(clip, image, config, hooks=timer.hooks())
    else:
        train_edit_layer(clip, image, config, hooks=timer.hooks())
    return timer, peak_gib(clip.device)


def fresh_process_peak(config: EditConfig, size: int, threads: int, device: str) -> float:
    """Peak memory of one training run with ``config`` in a new Python process (GiB; see ``--child``)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(config.to_dict()), "--size", str(size),
           "--threads", str(threads), "--device", device]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return float(next(line.split()[1] for line in out.splitlines() if line.startswith("PEAK ")))


def child(config_json: str, size: int, device: torch.device) -> None:
    """``--child``: build the random CLIP, train with the given config, print ``PEAK <GiB>`` of the run."""
    clip = build_random_clip("ViT-B-32-quickgelu", seed=0, device=device)
    config = EditConfig.from_dict(json.loads(config_json))
    _, pk = run(clip, paper_image(size), config)
    print(f"PEAK {pk:.4f}", flush=True)


def begin(a: argparse.Namespace, child_main: Callable[[str, int, torch.device], None]) -> Optional[tuple]:
    """The start of a timed bench on ``--device``: in a ``--child`` process, ``child_main(a.child, a.size,
    device)`` and None; else ``(device, load average now, paper inputs)`` (:func:`paper_inputs`)."""
    device = torch.device(a.device)
    if a.child is not None:
        child_main(a.child, a.size, device)
        return None
    return device, os.getloadavg(), paper_inputs(a.size, a.steps, a.views, device)


def _parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--memory-steps", type=int, default=6,
                    help="steps of the fresh-process memory run of each path (step 0 = full-image step)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=3, help="steps per run (step 0 = full-image step)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds per path")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--views", type=int, default=16)
    ap.add_argument("--threads", type=int, default=0, help="0 = torch's default")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--compile", action="store_true", help="also time the fast path with torch.compile")
    ap.add_argument("--save-memory", action="store_true",
                    help="also time the fast path with activation checkpointing (EditConfig.save_memory)")
    ap.add_argument("--cpu-bf16", action="store_true", help="also time the fast path with bf16 autocast on CPU")
    ap.add_argument("--ceiling-seconds", type=float, default=2.0)
    report.add_no_write_option(ap)
    return report.parse_bench_args(ap)


def timed_paths(a: argparse.Namespace, base: dict) -> dict[str, EditConfig]:
    """The paths to time: plain and fast, and those the options add."""
    paths = {"plain fp32": EditConfig.from_flat(fast=False, **base),
             "fast": EditConfig.from_flat(fast=True, save_memory=False, **base)}
    if a.save_memory:
        paths["fast + save_memory"] = EditConfig.from_flat(fast=True, save_memory=True, **base)
    if a.compile:
        paths["fast + torch.compile"] = EditConfig.from_flat(fast=True, compile=True, **base)
    if a.cpu_bf16:
        paths["fast + bf16 autocast"] = EditConfig.from_flat(fast=True, autocast="bf16", **base)
    return paths


def with_seed(config: EditConfig, seed: int) -> EditConfig:
    """``config`` with another seed."""
    return EditConfig.from_dict({**config.to_dict(), "seed": seed})


def interleaved_rounds(names: list[str], rounds: int,
                       run_one: Callable[[str, int], tuple[StepTimer, float]]) -> dict[str, dict]:
    """Each path once per round, in alternating order, so machine-load drift hits every path alike.

    Args:
        names: the paths.
        rounds: how many times each runs.
        run_one: ``(path, seed) -> (its step timer, peak memory GiB)``; the seed is the round's index.

    Returns:
        Per path: its crop-step and full-image step times, the peak memory of its runs and the mean
        crop-step time of each round.
    """
    stats = {k: {"crop": [], "full": [], "peak": 0.0, "per_round": []} for k in names}
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            print(f"round {r + 1}/{rounds}: {name}", flush=True)
            timer, pk = run_one(name, r)
            st = stats[name]
            st["full"].append(timer.times[0])
            st["crop"] += timer.times[1:]
            if timer.times[1:]:
                st["per_round"].append(statistics.mean(timer.times[1:]))
            st["peak"] = max(st["peak"], pk)
    return stats


def step_flops(clip, image, paths: dict[str, EditConfig], fp32_ceiling: float) -> tuple[list, dict[str, float]]:
    """FLOPs of a full-image step and of a crop step, per path (same seed, so the same crops): the fast path
    skips work (CLS-only last CLIP block) and adds some (recomputed generator tails, regenerated whole image).
    Returns the table rows and each path's floor (s/step at ``fp32_ceiling`` FLOP/s)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    flop_rows, floor = [], {}
    for name in paths:
        print(f"counting FLOPs ({name}, 2 steps)", flush=True)
        # the flop counter does not see the fused CPU attention kernels (SDPA's flash kernel, and the native
        # multi-head attention nn.MultiheadAttention runs without gradients): count their math equivalents
        mha_fastpath = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            with sdpa_kernel(SDPBackend.MATH):
                timer, _ = run(clip, image, EditConfig.from_dict({**paths[name].to_dict(), "iters": 2}), flops=True)
        finally:
            torch.backends.mha.set_fastpath_enabled(mha_fastpath)
        full_flops, crop_flops = timer.flops[0], timer.flops[1]  # per-step counts
        amort_flops = (74 * crop_flops + full_flops) / 75
        floor[name] = amort_flops / fp32_ceiling
        flop_rows.append([name, f"{crop_flops / 1e9:.0f}", f"{full_flops / 1e9:.0f}", f"{amort_flops / 1e9:.0f}",
                          f"{floor[name]:.2f}"])
    return flop_rows, floor


def time_table(a: argparse.Namespace, stats: dict[str, dict], floor: dict[str, float], fresh: dict[str, float],
               device: torch.device) -> tuple[str, dict[str, float]]:
    """The table of step times and peak memory per path, and the paired per-round speed-ups."""
    med = {k: statistics.median(v["crop"]) if v["crop"] else float("nan") for k, v in stats.items()}
    fmed = {k: statistics.median(v["full"]) for k, v in stats.items()}
    amort = {k: (74 * med[k] + fmed[k]) / 75 for k in stats}
    rows = [[name, f"{med[name]:.2f}", f"{fmed[name]:.2f}", f"{amort[name]:.2f}",
             f"{amort[name] * 1000 / 60:.1f}", f"{amort['plain fp32'] / amort[name]:.2f}x",
             f"{amort[name] / floor[name]:.2f}", f"{fresh[name]:.2f}", f"{stats[name]['peak']:.2f}"] for name in stats]
    mem_kind = "max allocated GiB" if device.type == "cuda" else "peak RSS GiB"
    body = table(["path", "crop step s (median)", "full-image step s", "amortised s/step", "1000 steps min",
                  "speed-up vs plain", "time / floor", f"{mem_kind}, own process ({a.memory_steps} steps)",
                  f"{mem_kind}, timed runs (one process)"], rows)
    plain_rounds = stats["plain fp32"]["per_round"]
    paired = {k: statistics.geometric_mean([p / f for p, f in zip(plain_rounds, v["per_round"])])
              for k, v in stats.items() if v["per_round"]}
    return body, paired


def main() -> None:
    a = _parse_args()
    started = begin(a, child)
    if started is None:
        return
    device, load0, (clip, image, base) = started
    paths = timed_paths(a, base)
    with torch.no_grad():
        ceil = measure_ceiling(device, a.ceiling_seconds)
    stats = interleaved_rounds(list(paths), a.rounds, lambda name, seed: run(clip, image, with_seed(paths[name], seed)))
    fresh: dict[str, float] = {}
    for name in paths:  # each path alone in a new process, as a user's run starts (no other path's heap)
        print(f"peak memory in a fresh process ({name}, {a.memory_steps} steps)", flush=True)
        cfg = EditConfig.from_dict({**paths[name].to_dict(), "iters": a.memory_steps})
        fresh[name] = fresh_process_peak(cfg, a.size, a.threads, a.device)
    with torch.no_grad():
        ceil2 = measure_ceiling(device, a.ceiling_seconds)
    ceil = {k: max(v, ceil2[k]) for k, v in ceil.items()}
    load1 = os.getloadavg()

    fp32_ceiling = max(v for (op, prec), v in ceil.items() if prec == "fp32") * 1e9
    flop_rows, floor = step_flops(clip, image, paths, fp32_ceiling)
    body, paired = time_table(a, stats, floor, fresh, device)
    body += "\n\n" + table(["path", "crop step GFLOP", "full-image step GFLOP", "amortised GFLOP",
                            "floor s/step (fp32 ceiling)"], flop_rows)
    body += "\n\n" + table(["ceiling (same run, best of before/after)", "precision", "GFLOP/s"],
                           [[op, prec, f"{v:.1f}"] for (op, prec), v in ceil.items()])
    body += "\n\nPaired per-round crop-step speed-up vs plain (geometric mean over rounds, each round runs every " \
            "path back to back): " + ", ".join(f"{k} {v:.2f}x" for k, v in paired.items())
    notes = ("Floor = the path's amortised FLOPs / best fp32 ceiling (time / floor uses each path's own). "
             "Load average (1/5/15 min) "
             f"{load0[0]:.2f}/{load0[1]:.2f}/{load0[2]:.2f} at start, {load1[0]:.2f}/{load1[1]:.2f}/{load1[2]:.2f} "
             f"at end on {os.cpu_count()} cores. {a.rounds} interleaved rounds x {a.steps} steps per path; "
             f"crop-step samples per path: {len(stats['plain fp32']['crop'])}.")
    publish(f"Image edit step at the paper's configuration ({a.size} px, {a.views} views, bootstrapping, "
            f"random ViT-B/32)", body, notes)

if __name__ == "__main__":
    main()
