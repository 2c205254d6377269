"""Opacity bootstrapping (paper section 3.1, eq. 8): the target maps and the weight λ_b(t) over the steps."""

from __future__ import annotations

from typing import Callable

import torch

from .losses import bootstrap_weight


def bootstrap_schedule(config) -> Callable[[int], float]:
    """``step -> λ_b(step)`` (paper appendix A.3: the bootstrap term is annealed) for an edit config (``lambda_bootstrap``, ``bootstrap_schedule``, ``bootstrap_steps``
    (None = ``iters``), ``bootstrap_min``)."""
    steps = config.bootstrap_steps if config.bootstrap_steps is not None else config.iters

    def weight(step: int) -> float:
        return bootstrap_weight(step, lambda_bootstrap=config.lambda_bootstrap, bootstrap_steps=steps,
                                schedule=config.bootstrap_schedule, min_weight=config.bootstrap_min)

    return weight


def uses_relevancy(config) -> bool:
    """Whether the opacity is bootstrapped from relevancy maps of ``config.roi_text``."""
    return bool(config.roi_text and config.roi_text.strip()) and config.lambda_bootstrap > 0


def relevancy_target(clip, images: torch.Tensor, config, size: tuple[int, int]) -> torch.Tensor:
    """The bootstrap target of ``images`` ``[1,3,h,w]``: the relevancy of ``config.roi_text`` (paper section 3.1)
    resized to ``size`` -> ``[1,*size]`` in 0..1, without grad."""
    from ..clip.relevancy import relevancy_map

    r = relevancy_map(clip, images.detach(), config.roi_text, num_layers=config.relevancy_layers,
                      size=size, check_size=False)
    return r.detach()
