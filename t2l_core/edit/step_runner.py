"""How a training step computes its passes: the plain fp32 way, and the interface faster ways implement.

The training loop (:mod:`t2l_core.edit.training_loop`) says *what* a step computes (sample, generate,
objective, backward, update); a step runner says *how*: which CLIP object runs the passes, how the
generator is called, how the objective is back-propagated. :class:`PlainStepRunner` is the reference: one
autograd graph per step, fp32, the standard memory layout. The fast path
(:class:`t2l_core.runtime.edit_runtime.EditRuntime`) subclasses it and changes only how things are computed.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch

from ..device import free_cuda_memory, thread_scope
from .objective import ObjectivePlan, clip_terms, total_and_report
from .views import ViewAugmenter, ViewConfig


class PlainStepRunner:
    """The plain path: one graph per step, fp32, standard layout.

    Args:
        clip: the loaded CLIP (:class:`t2l_core.clip.model.ClipModel`) on the training device.
        threads: CPU threads for the run (0 = leave torch's setting alone).
    """

    def __init__(self, clip, threads: int = 0) -> None:
        self.clip = clip
        self.device = clip.device
        self.threads = threads
        self.generator: torch.nn.Module | None = None  # the generator being trained (set by prepare)

    # -- around a run ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def run_scope(self):
        """Around a whole job: its CPU threads, and cached CUDA blocks released before and after."""
        with thread_scope(self.threads):
            free_cuda_memory(self.device)
            try:
                yield
            finally:
                free_cuda_memory(self.device)

    def loop_scope(self):
        """Around the training loop (the fast path adds heap and TF32 settings)."""
        return contextlib.nullcontext()

    # -- the generator --------------------------------------------------------------------------------
    def prepare(self, generator: torch.nn.Module) -> torch.nn.Module:
        """Take the generator this runner calls (the fast path sets its layout and recomputation).

        Args:
            generator: the generator being trained.

        Returns:
            The generator to train.
        """
        self.generator = generator
        return generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The generator on ``x`` ([B,3,h,w] in 0..1), with its graph.

        Returns:
            [B,4,h,w] in 0..1, fp32 in the standard memory layout.
        """
        return self.generator(x).float().contiguous()

    def generate(self, x: torch.Tensor, deferred: bool = False) -> torch.Tensor:
        """The generator on one example, with its graph.

        Args:
            x: [1,3,h,w] in 0..1.
            deferred: an extra example (the whole image or atlas) that a runner may regenerate for its
                backward pass instead of keeping its activations; the plain path keeps them.

        Returns:
            RGBA [1,4,h,w] in 0..1.
        """
        return self.forward(x)

    def augmenter(self, views: ViewConfig) -> ViewAugmenter:
        """The CLIP-view augmenter (the fast path's ``save_memory`` recomputes its intermediates).

        Args:
            views: the view settings.

        Returns:
            The augmenter.
        """
        return ViewAugmenter(views)

    # -- the backward pass ----------------------------------------------------------------------------
    def backward(self, plan: ObjectivePlan, opacity_terms: dict[str, torch.Tensor], like: torch.Tensor,
                 cancel_point: Callable[[], None]) -> dict[str, torch.Tensor]:
        """Back-propagate the objective (paper eq. 2) into the generator.

        Args:
            plan: the step's CLIP work.
            opacity_terms: the opacity terms (:func:`t2l_core.edit.objective.opacity_terms`).
            like: the total is accumulated in its dtype.
            cancel_point: called between CLIP passes; raises to cancel.

        Returns:
            Each weighted term and ``"total"``, detached 0-dim tensors on the device (``like``'s dtype).
        """
        terms = clip_terms(self.clip, plan, cancel_point)
        terms.update(opacity_terms)
        total, report = total_and_report(terms, like)
        total.backward()
        return report

    def end_step(self) -> None:
        """After each step's update (the fast path may return freed memory to the OS)."""

