"""The fast path of a training step: the plain step's arithmetic, computed faster and in less memory.

:class:`EditRuntime` is a :class:`t2l_core.edit.step_runner.PlainStepRunner` whose passes use the measures of
:class:`t2l_core.runtime.measures.FastMeasures`: channels-last convolutions, the fused CLIP image kernels
(:meth:`t2l_core.clip.model.ClipModel.set_fused`), autocast only where the hardware gains from it
(:mod:`t2l_core.device`, :mod:`t2l_core.runtime.precision`), a staged backward (:mod:`t2l_core.runtime.staged_backward`), the
generator's cheap layers recomputed in the backward pass, and freed CPU memory handed back at once
(:mod:`t2l_core.runtime.cpu_heap`). :func:`step_runner` picks the runner a job's settings ask for.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Optional

import torch

from ..device import autocast, autocast_dtype, generator_autocast_dtype
from ..edit.objective import ObjectivePlan, total_and_report
from ..edit.step_runner import PlainStepRunner
from ..edit.views import ViewAugmenter, ViewConfig
from .cpu_heap import mmap_threshold_scope, release_freed_heap
from .measures import FastMeasures, runtime_measures
from .precision import tf32_scope
from .staged_backward import backward_deferred, deferred_output, staged_objective_backward


class EditRuntime(PlainStepRunner):
    """How a training loop runs its CLIP and generator passes on the fast path.

    Args:
        clip: the loaded CLIP on the training device.
        fast: False gives the plain path's computation (every measure off, no autocast).
        autocast_mode: one of :data:`t2l_core.device.AUTOCAST_MODES`.
        compile: ``torch.compile`` the generator (experimental).
        save_memory: every memory measure on, plus activation checkpointing of the CLIP blocks, the
            generator's full-resolution part and the view augmentations (less memory, slower steps).
        measures: the measures one by one (benchmarks); None = those of
            :func:`~t2l_core.runtime.measures.runtime_measures` for the device.
        threads: CPU threads for the run (0 = leave torch's setting alone).
    """

    def __init__(self, clip, fast: bool = True, autocast_mode: str = "auto", compile: bool = False,
                 save_memory: bool = False, measures: Optional[FastMeasures] = None, threads: int = 0) -> None:
        super().__init__(clip, threads)
        self.fast = bool(fast)
        self.save_memory = self.fast and bool(save_memory)
        if not self.fast:
            measures = FastMeasures.none()
        elif measures is None:
            measures = runtime_measures(self.device, self.save_memory)
        self.measures = measures
        self.clip_amp = autocast_dtype(autocast_mode, self.device) if self.fast else None  # CLIP image passes
        self.amp = generator_autocast_dtype(autocast_mode, self.device) if self.fast else None  # generator
        # TF32 on CUDA where the generator stays fp32 by default ("auto"): ~fp32 gradients, tensor-core speed
        self.tf32 = self.fast and autocast_mode == "auto"
        if measures.fused_clip or self.clip_amp is not None or self.save_memory:
            self.clip = clip.view(fused=True, autocast_dtype=self.clip_amp, grad_checkpointing=self.save_memory)
        self.compile = self.fast and bool(compile)
        self.staged_backward = measures.staged_backward
        on_cpu = self.device.type == "cpu"
        self.mmap_large_blocks = measures.mmap_large_blocks and on_cpu
        self.trim_heap = measures.trim_heap and on_cpu
        self._call: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._deferred: list[tuple[torch.Tensor, torch.Tensor]] = []

    @classmethod
    def from_config(cls, clip, config) -> "EditRuntime":
        """The runtime an edit config's speed settings ask for.

        Args:
            clip: the loaded CLIP on the training device.
            config: an image or video edit config (its :class:`t2l_core.edit.config.RuntimeConfig`).

        Returns:
            The runtime.
        """
        r = config.runtime
        return cls(clip, r.fast, r.autocast, r.compile, r.save_memory, threads=r.threads)

    def prepare(self, generator: torch.nn.Module) -> torch.nn.Module:
        """As the plain path, plus the generator's recomputation, memory layout and optional compilation.

        Args:
            generator: the :class:`t2l_core.edit.generator.SkipGenerator` being trained (set up in place).

        Returns:
            The generator to train (its parameters are the ones the optimizer updates).
        """
        generator.set_recompute(top=self.save_memory, tails=self.measures.recompute_tails)
        generator.set_memory_layout(self.measures.channels_last, self.measures.inplace_activations)
        super().prepare(generator)
        self._call = torch.compile(generator, dynamic=True) if self.compile else generator
        return generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """As the plain path, under the generator's autocast and through the compiled module when asked.

        Args:
            x: [B,3,h,w] in 0..1.

        Returns:
            [B,4,h,w] fp32 in 0..1, standard layout, with its graph.
        """
        with autocast(self.device, self.amp):
            # back to the standard layout: the loss side (crops, resizes, warps, CLIP) is faster on it
            return self._call(x).float().contiguous()

    def generate(self, x: torch.Tensor, deferred: bool = False) -> torch.Tensor:
        """As the plain path; with the staged backward a ``deferred`` example is generated without a graph and
        regenerated for its backward pass (:func:`deferred_output`).

        Args:
            x: [1,3,h,w] in 0..1.
            deferred: whether this is an extra example (the whole image or atlas).

        Returns:
            RGBA [1,4,h,w] in 0..1.
        """
        if not (deferred and self.staged_backward):
            return self.forward(x)
        out = deferred_output(self.forward, x)
        self._deferred.append((x, out))
        return out

    def augmenter(self, views: ViewConfig) -> ViewAugmenter:
        """The CLIP-view augmenter; with ``save_memory`` it recomputes its intermediates in the backward pass.

        (Not on the plain fast path: with the staged backward the augmentations' intermediates are gone before
        the generator's backward pass, where the peak is, so redoing kornia's warps and colour jitter, ~0.1 s
        per 16 views on a CPU, would buy nothing there.)

        Args:
            views: the view settings.

        Returns:
            The augmenter.
        """
        return ViewAugmenter(views, recompute=self.save_memory)

    def loop_scope(self):
        """Around the training loop (CPU): large freed blocks go straight back to the OS
        (:func:`mmap_threshold_scope`); on CUDA with ``autocast="auto"`` TF32 is allowed (:func:`tf32_scope`)."""
        stack = contextlib.ExitStack()
        stack.enter_context(mmap_threshold_scope(enabled=self.mmap_large_blocks))
        stack.enter_context(tf32_scope(self.device, self.tf32))
        return stack

    def backward(self, plan: ObjectivePlan, opacity_terms: dict[str, torch.Tensor], like: torch.Tensor,
                 cancel_point: Callable[[], None]) -> dict[str, torch.Tensor]:
        """As the plain path; with the staged backward one CLIP pass at a time, then the deferred examples
        (:mod:`t2l_core.runtime.staged_backward`). Same gradients up to float summation order.

        Args:
            plan, opacity_terms, like, cancel_point: as :meth:`t2l_core.edit.step_runner.PlainStepRunner.backward`.

        Returns:
            Each weighted term and ``"total"``, detached 0-dim tensors on the device.
        """
        if not self.staged_backward:
            return super().backward(plan, opacity_terms, like, cancel_point)
        deferred, self._deferred = self._deferred, []
        terms = staged_objective_backward(self.clip, plan, opacity_terms, cancel_point)
        backward_deferred(self.forward, [x for x, _ in deferred], [o for _, o in deferred], cancel_point)
        return total_and_report(terms, like)[1]

    def end_step(self) -> None:
        """After each step (CPU, ``trim_heap``): give the heap pages freed during the step back to the OS."""
        if self.trim_heap:
            release_freed_heap()


def step_runner(clip, config) -> EditRuntime:
    """The step runner for an edit config's speed settings (``fast`` off gives the plain computation).

    Args:
        clip: the loaded CLIP on the training device.
        config: an image or video edit config.

    Returns:
        The runner (:meth:`EditRuntime.from_config`).
    """
    return EditRuntime.from_config(clip, config)


def edit_training_bytes(working_size: int) -> int:
    """Rough peak memory of one edit training step at a working size: about 4 GiB at 512 px with the default
    measures (bench/RESULTS.md), growing with the pixel count. What a host (ComfyUI) frees before a run.

    Args:
        working_size: the shorter side the generator trains at (an atlas's long side for a video edit).

    Returns:
        Bytes (an estimate, not a bound).
    """
    return int(4 * 2**30 * max(1.0, (working_size / 512) ** 2))
