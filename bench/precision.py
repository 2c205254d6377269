"""Gradient agreement with fp32 of each precision setting (``autocast`` modes), at the real model sizes.

    python bench/precision.py [--size 256 --views 8 --device cpu] [--no-write]

One step of the image objective at initialisation: the trained-size generator (3.1M parameters) on a real
photograph (skimage astronaut) at ``--size`` px, CLIP ViT-B/32 with random weights (real weights are not
shipped; the arithmetic is the same), the same views and seed for every setting. Measures are those of
:mod:`t2l_core.runtime.precision_check` (whole-gradient cosine, smallest per-tensor cosine over non-negligible
tensors) and the bound a default must reach. fp16 settings need CUDA and are measured only there.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import report  # noqa: E402
from report import publish, table  # noqa: E402

from t2l_core.clip.loading import build_random_clip  # noqa: E402
from t2l_core.device import AUTOCAST_MODES, CPU_DEFAULT_AUTOCAST, CUDA_DEFAULT_AUTOCAST  # noqa: E402
from t2l_core.edit.generator import GeneratorConfig  # noqa: E402
from t2l_core.image.internal_dataset import working_image  # noqa: E402
from t2l_core.runtime.precision_check import AGREEMENT_BOUND, agreement, generator_gradients  # noqa: E402
from t2l_core.edit.config import EditConfig  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--views", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    report.add_no_write_option(ap)
    args = ap.parse_args()
    report.apply_no_write(args)
    from skimage import data

    device = torch.device(args.device)
    image = torch.from_numpy(data.astronaut()).permute(2, 0, 1)[None].float() / 255.0
    x = working_image(image, args.size)
    clip = build_random_clip("ViT-B-32-quickgelu", seed=0, device=device)
    config = EditConfig.from_flat(prompt="golden astronaut", source_prompt="astronaut", n_views=args.views)
    gen_cfg = GeneratorConfig()
    generator_gradients(clip, x, config, "off", gen_cfg, weights_seed=0, views_seed=1)  # warm-up
    t0 = time.perf_counter()
    ref = generator_gradients(clip, x, config, "off", gen_cfg, weights_seed=0, views_seed=1)
    t_ref = time.perf_counter() - t0
    rows = [["off (fp32)", 1.0, 1.0, "yes", t_ref, "CPU default" if CPU_DEFAULT_AUTOCAST == "off" else ""]]
    modes = [m for m in AUTOCAST_MODES if m not in ("auto", "off") and (device.type == "cuda" or "fp16" not in m)]
    for mode in modes:
        t0 = time.perf_counter()
        a = agreement(mode, generator_gradients(clip, x, config, mode, gen_cfg, weights_seed=0, views_seed=1), ref)
        rows.append([mode, a.cosine, a.min_tensor_cosine, "yes" if a.passes() else "NO", time.perf_counter() - t0,
                     "CUDA default" if mode == CUDA_DEFAULT_AUTOCAST else "not a default"])
    other = agreement("off", generator_gradients(clip, x, config, "off", gen_cfg, weights_seed=0, views_seed=2), ref)
    rows.append(["off, other view seed (scale)", other.cosine, other.min_tensor_cosine,
                 "yes" if other.passes() else "NO", "", ""])
    body = table(["setting", "gradient cosine vs fp32", "smallest tensor cosine", "meets bound", "step time (s)",
                  "role"], rows)
    publish(f"Precision settings: generator gradient agreement with fp32 ({x.shape[-1]}x{x.shape[-2]} px, "
            f"{args.views} views, random ViT-B/32)", body,
            f"Bound a default must meet: whole-gradient cosine >= {AGREEMENT_BOUND['cosine']} and every non-negligible "
            f"tensor's cosine >= {AGREEMENT_BOUND['min_tensor_cosine']} (t2l_core/runtime/precision_check.py). Defaults "
            "(autocast='auto'): CPU = fp32, the setting that runs well on any CPU (bf16 matrix products are emulated "
            "and slower than fp32 on CPUs without bf16/AMX instructions, e.g. AVX2 machines; on a CPU with AMX, "
            "bf16-clip meets the bound and may be chosen); "
            "CUDA = bf16-clip (CLIP passes in bf16, generator fp32 with TF32), the setting that meets the bound. "
            "bf16/fp16 (generator autocast too) are offered but are not defaults. Step times on a shared CPU are "
            "indicative only.")


if __name__ == "__main__":
    main()
