"""Rendering a trained edit layer at a 4K input: generator at the working size + guided upsampling (default)
against the generator at the input's own resolution (``resolution="native"``).

    python bench/output_resolution.py [--height 2160 --width 3840 --working 512] [--device cpu] [--no-write]

A trained-size generator (3.1M parameters, random weights: the same cost as trained ones) that says it was
trained at a 512 px working size renders one 3840x2160 photograph-like image through :meth:`EditLayer.render`
(Apply Edit Layer / ``apply-layer``, and the final render of Train Edit Layer). Each mode runs in a fresh
process, so its peak memory is its own (CPU: peak RSS of the whole process; CUDA: max allocated). The default
memory budget applies (CPU: half the available RAM, at most 8 GiB): a native pass that does not fit is run at the
largest size that fits and upscaled, as a user would get it; the table says at which size the generator ran.
The default's output is checked: input size, and the composite equal to the input bit for bit where the opacity
is 0.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from memory import peak_gib, reset_peak  # noqa: E402
import report  # noqa: E402
from report import publish, table  # noqa: E402

from t2l_core.edit.layer import EditLayer  # noqa: E402
from t2l_core.edit.generator import GeneratorConfig, build_generator  # noqa: E402


def _image(h: int, w: int) -> torch.Tensor:
    """A photograph-like test image: smooth shapes with sharp edges and fine noise."""
    g = torch.Generator().manual_seed(0)
    base = torch.nn.functional.interpolate(torch.rand(1, 3, 9, 16, generator=g), size=(h, w), mode="bicubic",
                                           align_corners=False)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    disc = ((xx * w / h) ** 2 + yy**2 < 0.3).float()
    return (0.6 * base + 0.3 * disc + 0.03 * torch.rand(1, 3, h, w, generator=g)).clamp(0, 1)


def child(mode: str, h: int, w: int, working: int, device: torch.device) -> dict:
    gen = build_generator(GeneratorConfig(), seed=0)
    with torch.no_grad():  # a local edit: opacity = sigmoid(500 z) is exactly 0 (fp32) wherever z < -0.2
        gen.head.weight[3] = 500.0 * gen.head.weight[0]
        gen.head.bias[3] = 500.0 * gen.head.bias[0]
    layer = EditLayer(gen.state_dict(), GeneratorConfig(), {"size": working,
                                                            "working_size": [working, round(working * w / h)]})
    image = _image(h, w)
    layer.render(image[..., : h // 8, : w // 8], device=device)  # warm-up (kernels, allocator)
    reset_peak(device)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = layer.render(image, device=device, resolution=mode)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = peak_gib(device)
    ran_at = f"{working * w // h}x{working}" if mode == "working" else f"{w}x{h}"
    for wmsg in caught:
        text = str(wmsg.message)
        if "generated at" in text:
            ran_at = text.split("generated at ")[1].split(" and")[0] + " (memory budget)"
    assert out.composite.shape == image.shape
    zero = out.alpha == 0
    exact = bool(torch.equal(out.composite[zero.expand_as(out.composite)], image[zero.expand_as(image)]))
    return {"seconds": seconds, "peak_gib": peak, "ran_at": ran_at, "zero_share": float(zero.float().mean()),
            "exact_where_zero": exact}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--height", type=int, default=2160)
    ap.add_argument("--width", type=int, default=3840)
    ap.add_argument("--working", type=int, default=512)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    report.add_no_write_option(ap)
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args.height, args.width, args.working, device)))
        return
    report.apply_no_write(args)
    rows = {}
    for mode in ("working", "native"):
        cmd = [sys.executable, __file__, "--child", mode, "--height", str(args.height), "--width", str(args.width),
               "--working", str(args.working), "--device", args.device]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows[mode] = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
    body = table(["resolution", "generator ran at", "time (s)", "peak memory (GiB)", "share of opacity 0",
                  "composite = input where opacity 0"],
                 [[f"{m}{' (default)' if m == 'working' else ''}", r["ran_at"], r["seconds"], r["peak_gib"],
                   r["zero_share"], "bit for bit" if r["exact_where_zero"] else "NO"] for m, r in rows.items()])
    ratio = rows["native"]["seconds"] / rows["working"]["seconds"]
    publish(f"Output resolution: {args.width}x{args.height} input, working size vs native generator", body,
            f"The native pass takes {ratio:.1f}x the time of the default. Each row is a fresh process (peak RSS of "
            "the whole process on CPU).")


if __name__ == "__main__":
    main()
