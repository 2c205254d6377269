"""Opacity bootstrapping (paper section 3.1, eq. 8): the target maps and the weight λ_b(t) over the steps."""

from __future__ import annotations

from typing import Callable, Optional

import torch

from .losses import BOOTSTRAP_SIDE, bootstrap_weight


def bootstrap_schedule(config) -> Callable[[int], float]:
    """The bootstrap weight λ_b of eq. 8 as a function of the step, annealed over ``bootstrap_steps``
    (paper appendix A.3).

    Args:
        config: an :class:`~t2l_core.edit.config.EditConfig`.

    Returns:
        ``step -> λ_b(step)``, a float >= 0.
    """
    steps, b = config.bootstrap_steps_or_iters(), config.bootstrap

    def weight(step: int) -> float:
        return bootstrap_weight(step, lambda_bootstrap=config.weights.bootstrap, bootstrap_steps=steps,
                                schedule=b.schedule, min_weight=b.min)

    return weight


def uses_relevancy(config) -> bool:
    """Whether the opacity is bootstrapped from relevancy maps of ``config.roi_text`` (paper section 3.1).

    Args:
        config: an :class:`~t2l_core.edit.config.EditConfig`.

    Returns:
        True when ``roi_text`` is set and the bootstrap weight is positive.
    """
    return bool(config.roi_text and config.roi_text.strip()) and config.weights.bootstrap > 0


def relevancy_target(clip, images: torch.Tensor, config, size: Optional[tuple[int, int]] = None) -> torch.Tensor:
    """The bootstrap target R(I_s) of eq. 8: the relevancy map of ``config.roi_text`` (paper section 3.1).

    Args:
        clip: the CLIP model the relevancy map is computed with.
        images: [1,3,h,w] in 0..1.
        config: an :class:`~t2l_core.edit.config.EditConfig` (``roi_text``, ``bootstrap.relevancy_layers``).
        size: (H, W) of the target; None = the square L_init compares at
            (:data:`~t2l_core.edit.losses.BOOTSTRAP_SIDE`).

    Returns:
        [1,H,W] in 0..1, without grad.
    """
    from ..clip.relevancy import relevancy_map

    r = relevancy_map(clip, images.detach(), config.roi_text, num_layers=config.bootstrap.relevancy_layers,
                      size=size or (BOOTSTRAP_SIDE, BOOTSTRAP_SIDE), check_size=False)
    return r.detach()
