"""The machine's own ceiling: large matmul and 3x3 convolution throughput in fp32 and bf16 (GFLOP/s).

Every other benchmark states its figures as a fraction of this. Run: ``python bench/ceiling.py``.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from report import publish, table


def _rate(fn, flops: float, min_time: float, device: torch.device = torch.device("cpu")) -> float:
    """GFLOP/s of ``fn`` repeated for at least ``min_time`` s (CUDA: the queue is drained before each clock read)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()  # warm-up (kernel selection, allocation)
    sync()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        sync()
        dt = time.perf_counter() - t0
        if dt >= min_time:
            return flops * n / dt / 1e9


def measure(device: torch.device, min_time: float = 2.0, size: int | None = None) -> dict:
    """Matmul and conv throughput in GFLOP/s by (operation, precision). ``size``: the matmul's side
    (default 2048 on a CPU, 8192 on a GPU, where 2048 is too small to fill the chip)."""
    out = {}
    m = size or (8192 if device.type == "cuda" else 2048)
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(m, m, device=device, dtype=dtype)
        b = torch.randn(m, m, device=device, dtype=dtype)
        out[(f"matmul {m}^3", name)] = _rate(lambda: a @ b, 2 * m**3, min_time, device)
        # the generator's dominant layer: 3x3 conv, 128 -> 128 channels, on a 256x256 map
        x = torch.randn(1, 128, 256, 256, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
        w = torch.randn(128, 128, 3, 3, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
        flops = 2 * 128 * 128 * 9 * 256 * 256
        out[("conv3x3 128ch 256^2 (channels-last)", name)] = _rate(lambda: F.conv2d(x, w, padding=1), flops, min_time,
                                                                   device)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()
    with torch.no_grad():
        res = measure(torch.device(args.device), args.seconds)
    rows = [[op, prec, round(v, 1)] for (op, prec), v in res.items()]
    publish("Machine ceiling", table(["operation", "precision", "GFLOP/s"], rows))


if __name__ == "__main__":
    main()
