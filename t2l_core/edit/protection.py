"""Spill control: a region an image edit must leave alone (an addition to the paper's method).

The protected region ``P`` (0..1, 1 = leave untouched) is a user mask, the relevancy map (paper section 3.1)
of an exclusion text, or, with both, their maximum. It acts three ways:

- training: the objective of paper eq. 2 sees the opacity the output will have, ``α·(1 − P)``
  (:func:`protected_alphas`), so the CLIP losses judge the composite the user gets; the bootstrap target of
  eq. 8 is ``R·(1 − P)``, so the relevancy of a text that covers two similar objects no longer pulls opacity
  onto the protected one; and the trained layer's own opacity inside ``P`` is penalised with weight
  ``lambda_protect`` for the whole run (:func:`t2l_core.edit.losses.protect_loss`), so the layer learns to
  leave the region alone (what counts when it is applied to other images);
- rendering: the layer's opacity is multiplied by ``1 − P`` (:func:`protect_output`), so where ``P = 1`` the
  composite is the input exactly;
- reporting: the share of the layer's opacity inside ``P`` and outside the edit region
  (:func:`spill_report`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from .compositing import composite, on_green_screen
from .layer import LayerOutput


def exclusion_text(config) -> Optional[str]:
    """The exclusion text of an edit, or None when it is empty.

    Args:
        config: an :class:`~t2l_core.edit.config.EditConfig`.
    """
    text = config.exclude_text
    return text.strip() if isinstance(text, str) and text.strip() else None


def is_protected(config, protect_mask: Optional[torch.Tensor]) -> bool:
    """Whether an edit has a protected region: a protect mask or an exclusion text.

    Args:
        config: an :class:`~t2l_core.edit.config.EditConfig`.
        protect_mask: the user's protect mask, or None.
    """
    return protect_mask is not None or exclusion_text(config) is not None


def exclusion_map(clip, image: torch.Tensor, config) -> Optional[torch.Tensor]:
    """The relevancy map of the exclusion text on an image (paper section 3.1's relevancy, of another text).

    Args:
        clip: the CLIP model.
        image: ``[1,3,h,w]`` in 0..1.
        config: an :class:`~t2l_core.edit.config.EditConfig` (``exclude_text``, ``relevancy_layers``).

    Returns:
        None without an exclusion text, else ``[1,1,h,w]`` in 0..1 without grad.
    """
    text = exclusion_text(config)
    if text is None:
        return None
    from ..clip.relevancy import relevancy_map

    with torch.no_grad():
        r = relevancy_map(clip, image.detach(), text, num_layers=config.bootstrap.relevancy_layers,
                          size=tuple(image.shape[-2:]), check_size=False)
    return r[:, None].to(image)


def protected_region(maps: Sequence[Optional[torch.Tensor]], size: tuple[int, int]) -> Optional[torch.Tensor]:
    """The protected region ``P`` at one size: the maximum of the given maps (protect mask, exclusion map).

    Args:
        maps: ``[1,1,h_i,w_i]`` in 0..1 each, or None entries; on one device.
        size: ``(H, W)`` of the region.

    Returns:
        None when every map is None, else ``[1,1,H,W]`` in 0..1 without grad.
    """
    given = [resize_map(m.detach().float(), size) for m in maps if m is not None]
    if not given:
        return None
    region = given[0]
    for m in given[1:]:
        region = torch.maximum(region, m.to(region))
    return region


def resize_map(region: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A region map resized (bilinear, antialiased) to ``size`` and kept in 0..1.

    Args:
        region: ``[1,1,h,w]`` in 0..1.
        size: ``(H, W)``.

    Returns:
        ``[1,1,H,W]`` in 0..1 (``region`` itself when it already has that size).
    """
    if tuple(region.shape[-2:]) == tuple(size):
        return region
    return F.interpolate(region, size=size, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)


def protected_alphas(alphas: list[torch.Tensor], protect: Optional[list[torch.Tensor]]) -> list[torch.Tensor]:
    """The opacities the composite uses: ``α·(1 − P)`` per example.

    Args:
        alphas: per example ``[1,1,h,w]`` in 0..1, with their graph.
        protect: None, or per example the protected region ``[1,1,h,w]`` in 0..1 (the size of its opacity).

    Returns:
        ``alphas`` itself without protection, else the protected opacities (graph kept).
    """
    if protect is None:
        return alphas
    return [a * (1 - p.to(a)) for a, p in zip(alphas, protect)]


def unprotected_target(target: torch.Tensor, protect: torch.Tensor) -> torch.Tensor:
    """A bootstrap target (paper eq. 8) with the protected region taken out: ``R·(1 − P)``.

    Args:
        target: ``[1,h,w]`` in 0..1.
        protect: ``[1,1,h',w']`` in 0..1, resized to the target's size.

    Returns:
        ``[1,h,w]`` in 0..1.
    """
    return target * (1 - resize_map(protect.to(target), tuple(target.shape[-2:]))[:, 0])


def protect_output(output: LayerOutput, image: torch.Tensor, protect: torch.Tensor) -> LayerOutput:
    """The rendered layer with its opacity multiplied by ``1 − P``: the composite equals the input where P = 1.

    Args:
        output: the layer rendered on ``image`` (``alpha`` ``[1,1,H,W]``).
        image: ``[1,3,H,W]`` in 0..1, the image the layer was rendered on.
        protect: ``[1,1,h,w]`` in 0..1 (resized to ``H,W``).

    Returns:
        The output with the protected opacity, composite and green-screen render.
    """
    (alpha,) = protected_alphas([output.alpha], [resize_map(protect.to(output.alpha), tuple(output.alpha.shape[-2:]))])
    return LayerOutput(output.color, alpha, composite(output.color, alpha, image.to(output.color)),
                       on_green_screen(output.color, alpha))


@dataclass
class SpillReport:
    """Where the layer's opacity lies, as shares of its total opacity (0..1)."""

    inside_protected: Optional[float] = None  # after protection: what the composite shows
    inside_protected_trained: Optional[float] = None  # the trained layer's own opacity, before protection
    outside_edit_region: Optional[float] = None  # outside the edit region (bootstrap mask or roi_text relevancy)

    def lines(self) -> list[str]:
        """The report in words, one line per measure."""
        out = []
        if self.outside_edit_region is not None:
            out.append(f"{_percent(self.outside_edit_region)} of the edit's opacity lies outside the edit region "
                       "(roi_text / bootstrap_mask).")
        if self.inside_protected is not None:
            out.append(f"{_percent(self.inside_protected)} of the edit's opacity lies inside the protected region "
                       f"(protect_mask / exclude_text); the trained layer had {_percent(self.inside_protected_trained)}"
                       " there before protection.")
        return out


def _percent(share: Optional[float]) -> str:
    return "n/a" if share is None else f"{100 * share:.2f}%"


def opacity_share(alpha: torch.Tensor, region: torch.Tensor) -> float:
    """The share of the total opacity that lies in a soft region: ``Σ α·r / Σ α``.

    Args:
        alpha: ``[1,1,H,W]`` in 0..1.
        region: ``[1,1,h,w]`` in 0..1 (resized to ``H,W``).

    Returns:
        A share in 0..1 (0 when the layer has no opacity at all).
    """
    a = alpha.detach().double()
    r = resize_map(region.detach().to(alpha), tuple(alpha.shape[-2:])).double()
    total = float(a.sum())
    return float((a * r).sum()) / total if total > 0 else 0.0


def spill_report(trained_alpha: torch.Tensor, alpha: torch.Tensor, protect: Optional[torch.Tensor],
                 edit_region: Optional[torch.Tensor]) -> SpillReport:
    """Where an edit's opacity lies.

    Args:
        trained_alpha: the trained layer's opacity ``[1,1,H,W]`` before protection.
        alpha: the opacity the composite uses ``[1,1,H,W]``.
        protect: the protected region ``[1,1,h,w]``, or None.
        edit_region: the edit region ``[1,1,h,w]`` (bootstrap mask or relevancy of ``roi_text``), or None.

    Returns:
        The report; measures without their region are None.
    """
    report = SpillReport()
    if protect is not None:
        report.inside_protected = opacity_share(alpha, protect)
        report.inside_protected_trained = opacity_share(trained_alpha, protect)
    if edit_region is not None:
        report.outside_edit_region = opacity_share(alpha, 1 - edit_region)
    return report
