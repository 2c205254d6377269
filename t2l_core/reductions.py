"""Sums and means whose floating-point result does not depend on the number of CPU threads.

PyTorch reduces a whole tensor to one value on the CPU by giving each thread a slice and adding the threads'
partial sums, so the rounding of ``x.sum()`` and ``x.mean()`` changes with ``torch.get_num_threads()`` once
the tensor is larger than ATen's parallel grain (32768 elements). A reduction along a dimension with several
outputs computes each output in one thread, in one order. :func:`stable_sum` uses only that kind: it sums
fixed-size chunks, then the chunk sums, so every thread count (and every run) adds in the same order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CHUNK = 4096  # elements summed by one thread; below ATen's parallel grain, so a chunk is never split


def stable_sum(x: torch.Tensor) -> torch.Tensor:
    """The sum of every element, in an order that does not depend on the thread count.

    Args:
        x: any floating tensor (differentiable).

    Returns:
        A 0-dim tensor of ``x``'s dtype.
    """
    flat = x.reshape(-1)
    while flat.numel() > CHUNK:
        flat = F.pad(flat, (0, (-flat.numel()) % CHUNK)).view(-1, CHUNK).sum(1)
    return flat.sum()


def stable_mean(x: torch.Tensor) -> torch.Tensor:
    """The mean of every element, in an order that does not depend on the thread count.

    Args:
        x: any floating tensor with at least one element (differentiable).

    Returns:
        A 0-dim tensor of ``x``'s dtype.
    """
    return stable_sum(x) / x.numel()
