"""The TF32 context of the fast path (what a precision setting means, and its autocast context:
:mod:`t2l_core.device`).

Precision (``autocast``): the generator's gradients must agree with fp32 ones
(:mod:`t2l_core.runtime.precision_check`, bench/RESULTS.md). bf16 autocast of the generator does not (its
BatchNorm-normalised 7-scale stack loses the gradient's direction at initialisation), bf16 autocast of CLIP
alone does, as in the authors' code
(fp32 generator, fp16 CLIP). So ``"auto"`` is ``"bf16-clip"`` on CUDA with TF32 matrix products, and fp32
on CPU, where bf16 matrix products and convolutions run *slower* than fp32 on CPUs without AMX
(bench/RESULTS.md). ``"bf16"``/``"fp16"`` autocast the generator too (not a default: they fail the gradient
agreement); ``"off"`` is plain fp32 everywhere.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def tf32_scope(device: torch.device, enabled: bool) -> Iterator[None]:
    """Allow TF32 matrix products and convolutions on CUDA inside the block (restored after); a no-op on CPU.

    Args:
        device: the training device.
        enabled: False makes the block a no-op.
    """
    if not enabled or device.type != "cuda":
        yield
        return
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    before = (matmul.fp32_precision, conv.fp32_precision)
    matmul.fp32_precision, conv.fp32_precision = "tf32", "tf32"
    try:
        yield
    finally:
        matmul.fp32_precision, conv.fp32_precision = before

