"""Checks every entry point runs on incoming tensors before any work (nodes, CLI and Python API alike), and the
smallest image side any of them accepts."""

from __future__ import annotations

import torch

MIN_INPUT_SIDE = 32  # smaller images are refused (upscaling them 4x+ produces nothing useful)
FINITE_CHECK_VALUES = 2 ** 24  # values checked at once by require_finite


def require_finite(tensor: torch.Tensor, name: str, fix: str = "") -> None:
    """Raise ValueError if ``tensor`` holds NaN or infinite values (non-float tensors always pass).

    The message gives how many values are bad and the first batch item (index along the first dimension)
    that holds one.

    Args:
        tensor: any tensor.
        name: the input as the user sees it (a node input such as ``frames``, a CLI file, an argument).
        fix: what to change (default: replace the values at their source).
    """
    if not torch.is_tensor(tensor) or not tensor.is_floating_point():
        return
    t = tensor.detach()
    # checked a block of items at a time: a long video's flow is gigabytes, and so would its mask be
    items = max(1, FINITE_CHECK_VALUES // max(1, t[0].numel())) if t.ndim else 1
    if all(bool(torch.isfinite(b).all()) for b in (t.split(items) if t.ndim else (t,))):
        return
    bad = ~torch.isfinite(t)
    n_bad, n = int(bad.sum()), tensor.numel()
    where = ""
    if tensor.ndim >= 3:
        first = int(bad.reshape(tensor.shape[0], -1).any(dim=1).nonzero()[0, 0])
        where = f", first in item {first} of {tensor.shape[0]}"
    kinds = [k for k, m in (("NaN", torch.isnan(tensor.detach())), ("infinite", torch.isinf(tensor.detach())))
             if bool(m.any())]
    raise ValueError(
        f"{' and '.join(kinds)} values in {name} ({n_bad:,} of {n:,}{where}). "
        + (fix or "Replace them where they are produced (for example a VAE decode in fp16, or a division by "
                  "zero in an earlier step): every value must be a finite number, images and masks in 0..1.")
    )
