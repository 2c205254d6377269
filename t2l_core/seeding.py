"""Local, reproducible randomness without touching the caller's global RNG.

All our own sampling draws from a ``torch.Generator`` owned by the training run. Kornia augmentations draw
from torch's global RNG, so they run inside :func:`forked_rng`, which seeds a forked copy of the global RNG
from the local generator and restores the caller's state afterwards.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


def make_generator(seed: int) -> torch.Generator:
    """A CPU generator for a run.

    Args:
        seed: the run's seed.

    Returns:
        The generator.
    """
    g = torch.Generator(device="cpu")
    g.manual_seed(int(seed))
    return g


def uniform(generator: torch.Generator, low: float, high: float) -> float:
    """One float ~ U(low, high).

    Args:
        generator: the RNG.
        low, high: the range.

    Returns:
        The float.
    """
    return float(low + (high - low) * torch.rand((), generator=generator).item())


def randint(generator: torch.Generator, low: int, high: int) -> int:
    """One int uniform in [low, high] (inclusive).

    Args:
        generator: the RNG.
        low, high: the range, ``low <= high``.

    Returns:
        The int.
    """
    return int(torch.randint(low, high + 1, (), generator=generator).item())


@contextlib.contextmanager
def forked_rng(generator: torch.Generator) -> Iterator[None]:
    """Run the block with the global CPU (and CUDA) RNG seeded from ``generator``; restore it afterwards.

    Args:
        generator: the run's RNG (one draw is taken from it).
    """
    seed = int(torch.randint(0, 2**62, (), generator=generator).item())
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
