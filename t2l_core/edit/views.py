"""Augmented CLIP views of an image (paper section 3.1 and appendix A.2), differentiable w.r.t. the image.

- View 0: the whole image resized so the shorter side is ``short_side`` and the longer side at most
  ``max_long`` (torchvision ``Resize(size, max_size)`` arithmetic); call it (h0, w0).
- Views 1..n-1: a random crop of U(min_crop, 1) of the full-resolution image (same factor both sides),
  resized to (h0, w0).
- Every view then gets its own kornia augmentations: flip p=0.5, affine 15°/translate 0.1 p=0.8,
  perspective 0.4 p=0.5, colour jitter 0.1 p=0.7, grayscale p=0.15. Pixels outside the warped image are
  filled with ``fill`` (1 = white for images, 0 = black for video).
- All resizes are bilinear without antialiasing (as torchvision 0.11 did for tensors).
"""

from __future__ import annotations

from dataclasses import dataclass

import kornia.augmentation as K
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..seeding import forked_rng, uniform, randint
from ..settings import setting

IMAGE_FILL = 1.0
VIDEO_FILL = 0.0


@dataclass
class ViewConfig:
    """CLIP view parameters (image defaults; the video ones are in :class:`t2l_core.video.config.VideoEditConfig`)."""

    n_views: int = setting(16, "Augmented CLIP views per image and step (paper: 16 for an image, 6 for a video). "
                                "Fewer = faster, noisier.",
                           min=1, max=64)
    short_side: int = setting(224, "Shorter side of the CLIP views in px.", min=1)
    max_long: int = setting(320, "Longest side of the CLIP views in px.", min=1)
    structure_max_long: int = setting(380, "Longest side of the structure-loss view in px.", min=1)
    min_crop: float = setting(0.6, "Smallest crop of the image a CLIP view shows, as a fraction of each side.",
                              min=0.0, max=1.0)
    fill: float = setting(IMAGE_FILL, "Fill of pixels outside a warped view: 1 = white (images), 0 = black (video).",
                          min=0.0, max=1.0)
    flip_p: float = 0.5
    affine_degrees: float = 15.0
    affine_translate: float = 0.1
    affine_p: float = 0.8
    perspective: float = 0.4
    perspective_p: float = 0.5
    jitter: float = 0.1
    jitter_p: float = 0.7
    grayscale_p: float = 0.15


def resized_shape(h: int, w: int, short_side: int, max_long: int) -> tuple[int, int]:
    """The output size of torchvision ``Resize(short_side, max_size=max_long)``.

    Args:
        h, w: the input size in px.
        short_side: the shorter side of the output.
        max_long: the most the longer side may be.

    Returns:
        (h, w) of the output.
    """
    short, long = (h, w) if h <= w else (w, h)
    new_short, new_long = short_side, int(short_side * long / short)
    if new_long > max_long:
        new_short, new_long = int(max_long * new_short / new_long), max_long
    return (new_short, new_long) if h <= w else (new_long, new_short)


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize without antialiasing (no-op when the size already matches).

    Args:
        x: [B,C,H,W].
        size: (h, w).

    Returns:
        [B,C,h,w].
    """
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)


class ViewAugmenter(nn.Module):
    """Per-view random augmentations with a constant fill for pixels warped in from outside (appendix A.2).

    Args:
        cfg: the view settings.
        recompute: redo the augmentations in the backward pass instead of keeping their intermediates.
    """

    def __init__(self, cfg: ViewConfig, recompute: bool = False) -> None:
        super().__init__()
        self.fill = cfg.fill
        # recompute: keep only the input views for the backward pass and redo the augmentations there (same
        # random parameters: checkpointing restores the RNG state), instead of keeping every intermediate
        self.recompute = bool(recompute)
        self.geometric = K.AugmentationSequential(
            K.RandomHorizontalFlip(p=cfg.flip_p),
            K.RandomAffine(cfg.affine_degrees, translate=(cfg.affine_translate, cfg.affine_translate), p=cfg.affine_p),
            K.RandomPerspective(cfg.perspective, p=cfg.perspective_p),
        )
        self.photometric = K.AugmentationSequential(
            K.ColorJitter(cfg.jitter, cfg.jitter, cfg.jitter, cfg.jitter, p=cfg.jitter_p),
            K.RandomGrayscale(p=cfg.grayscale_p),
        )

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        """Augment each view with its own random parameters.

        Args:
            views: [V,3,h,w] in 0..1.

        Returns:
            [V,3,h,w] in 0..1.
        """
        if self.recompute and torch.is_grad_enabled() and views.requires_grad:
            return checkpoint(self._augment, views, use_reentrant=False)
        return self._augment(views)

    def _augment(self, views: torch.Tensor) -> torch.Tensor:
        # Warps sample bilinearly with zero padding; warping (x - fill) and adding fill back is exactly
        # bilinear sampling with a constant ``fill`` border, for any fill value.
        warped = self.geometric(views - self.fill) + self.fill
        return self.photometric(warped.clamp(0, 1))


def view_shape(h: int, w: int, cfg: ViewConfig) -> tuple[int, int]:
    """The (h0, w0) of the CLIP views of an h×w image."""
    return resized_shape(h, w, cfg.short_side, cfg.max_long)


def make_views(image: torch.Tensor, cfg: ViewConfig, generator: torch.Generator,
               augmenter: ViewAugmenter | None = None) -> torch.Tensor:
    """The augmented CLIP views of one image (fresh randomness each call).

    Args:
        image: [1,3,H,W] in 0..1.
        cfg: the view settings.
        generator: the RNG of the crops and augmentations.
        augmenter: None = a new :class:`ViewAugmenter` for ``cfg``.

    Returns:
        [n_views,3,h0,w0] in 0..1, differentiable w.r.t. ``image``.

    Raises:
        ValueError: ``image`` is not one [1,3,H,W] image.
    """
    if image.ndim != 4 or image.shape[0] != 1:
        raise ValueError(f"make_views takes one image [1,3,H,W], got {tuple(image.shape)}")
    h, w = image.shape[-2:]
    size = view_shape(h, w, cfg)
    views = [resize(image, size)]
    for _ in range(cfg.n_views - 1):
        s = uniform(generator, cfg.min_crop, 1.0)
        ch, cw = max(1, int(h * s)), max(1, int(w * s))
        top, left = randint(generator, 0, h - ch), randint(generator, 0, w - cw)
        views.append(resize(image[..., top : top + ch, left : left + cw], size))
    batch = torch.cat(views, dim=0)
    augmenter = augmenter or ViewAugmenter(cfg)
    with forked_rng(generator):
        return augmenter(batch)


def structure_view(image: torch.Tensor, cfg: ViewConfig) -> torch.Tensor:
    """The unaugmented structure-loss view (paper eqs. 5-6).

    Args:
        image: [B,3,H,W] in 0..1.
        cfg: the view settings.

    Returns:
        [B,3,h,w], shorter side ``short_side`` and longer side at most ``structure_max_long``.
    """
    return resize(image, resized_shape(*image.shape[-2:], cfg.short_side, cfg.structure_max_long))
