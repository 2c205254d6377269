"""The fast path's measures, one setting each, and which of them a device gets by default.

Each measure changes how a training step is computed, never what: see :class:`FastMeasures`. Their costs
and savings were measured one at a time (bench/fast_measures.py, bench/RESULTS.md).
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, fields, replace
from typing import Iterator, Optional

import torch

from ..device import channels_last_pays


@dataclass(frozen=True)
class FastMeasures:
    """Which measures of the fast path are on. Each changes how a step is computed, never what.

    Args:
        channels_last: the generator in channels-last layout.
        inplace_activations: the generator's LeakyReLUs in place (one feature map fewer kept per activation).
        fused_clip: the CLIP image side with its fused kernels (:meth:`t2l_core.clip.model.ClipModel.set_fused`).
        staged_backward: back-propagate CLIP pass by CLIP pass; extra examples regenerated for their backward.
        recompute_tails: the generator's layers after each 3x3 convolution recomputed in the backward pass.
        mmap_large_blocks: on CPU, blocks of 4 MiB and more mmapped while training, so freeing one gives its
            pages straight back (:func:`t2l_core.runtime.cpu_heap.mmap_threshold_scope`).
        trim_heap: on CPU, the heap's free pages returned to the OS after each step
            (:func:`t2l_core.runtime.cpu_heap.release_freed_heap`).
    """

    channels_last: bool = True
    inplace_activations: bool = True
    fused_clip: bool = True
    staged_backward: bool = True
    recompute_tails: bool = True
    mmap_large_blocks: bool = True
    trim_heap: bool = True

    @classmethod
    def none(cls) -> "FastMeasures":
        """Every measure off: the plain path's computation."""
        return cls(**{f.name: False for f in fields(cls)})

    def without(self, *names: str) -> "FastMeasures":
        """A copy with some measures off.

        Args:
            *names: field names, e.g. ``without("trim_heap")``.

        Returns:
            The copy.
        """
        return replace(self, **{n: False for n in names})


_FORCED_MEASURES: contextvars.ContextVar[Optional[FastMeasures]] = contextvars.ContextVar("forced_measures",
                                                                                        default=None)


@contextlib.contextmanager
def forced_measures(measures: FastMeasures) -> Iterator[None]:
    """Inside the block, fast-path runtimes use exactly ``measures`` (for benchmarks that ablate them).

    Args:
        measures: the measures every :class:`t2l_core.runtime.edit_runtime.EditRuntime` made inside uses.
    """
    token = _FORCED_MEASURES.set(measures)
    try:
        yield
    finally:
        _FORCED_MEASURES.reset(token)


def runtime_measures(device: torch.device, save_memory: bool = False) -> FastMeasures:
    """The measures a fast-path runtime made now uses: those of :func:`forced_measures` inside its block, else
    :func:`default_measures`.

    Args:
        device: the training device.
        save_memory: every measure on.

    Returns:
        The measures.
    """
    return _FORCED_MEASURES.get() or default_measures(device, save_memory)


def default_measures(device: torch.device, save_memory: bool = False) -> FastMeasures:
    """The fast path's measures on ``device``: the fastest set that keeps the memory target.

    Measured one at a time at 512 px on AVX-512 and AVX2 CPUs (bench/fast_measures.py, bench/RESULTS.md):

    * the fused CLIP kernels, the staged backward and in-place activations pay everywhere (faster or free);
    * blocks of 4 MiB and more mmapped and the generator's recomputed tails cost ~5% each and keep the
      peak under 4 GiB at 512 px (without them it is ~4.5 and ~3.9 GiB);
    * trimming the heap after every step costs ~8% and saves nothing once large blocks are mmapped:
      only ``save_memory`` turns it on;
    * the channels-last layout is faster on some CPUs and much slower on others (AVX2 without AVX-512):
      on CPU it follows :func:`channels_last_pays`, from the CPU's vector instructions.

    ``save_memory`` turns every measure on (and the runtime adds activation checkpointing), channels-last
    included even where it is slower: the standard layout's convolution backward allocates im2col buffers
    that raise the peak again.

    Args:
        device: the training device.
        save_memory: every measure on.

    Returns:
        The measures.
    """
    if save_memory:
        return FastMeasures()
    if device.type != "cpu":
        return FastMeasures(trim_heap=False, mmap_large_blocks=False)
    return FastMeasures(trim_heap=False, channels_last=channels_last_pays())
