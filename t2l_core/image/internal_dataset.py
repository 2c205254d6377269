"""The internal dataset: augmented crops of the single source image (paper section 3.1, appendix A.2).

Every step yields one augmented crop; every ``full_image_every`` steps (step 0 included) also the
unaugmented working image. Augmentations in the authors' order: colour jitter of the whole image (p=0.1;
contrast and saturation jitter depend on the image's mean, so jittering the whole image differs from
jittering a crop), horizontal flip (p=0.5), one scale factor U(0.8,1.2) for both sides, random crop of
U(0.85,1) of the scaled size. An optional mask (e.g. a bootstrap target) follows the geometric augmentations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import kornia.augmentation as K
import torch
import torch.nn.functional as F

from ..edit.crops import DatasetConfig, short_side_size
from ..edit.generator import MIN_SIZE
from ..io.input_checks import MIN_INPUT_SIDE
from ..seeding import forked_rng, randint, uniform

def resize_short_side(x: torch.Tensor, size: int, *, antialias: bool = True) -> torch.Tensor:
    """Bilinear resize so the shorter side is ``size`` (aspect kept, :func:`short_side_size`).

    Args:
        x: [B,C,H,W].
        size: the shorter side of the output.
        antialias: antialias when downscaling.

    Returns:
        [B,C,h,w] (``x`` itself when its shorter side is already ``size``).
    """
    h, w = x.shape[-2:]
    if min(h, w) == size:
        return x
    return F.interpolate(x, size=short_side_size(h, w, size), mode="bilinear", align_corners=False,
                         antialias=antialias)


def working_image(image: torch.Tensor, size: int) -> torch.Tensor:
    """The training image: the input resized (PIL-like bilinear) so its shorter side is ``size``.

    Args:
        image: [1,3,H,W] in 0..1.
        size: the working size; 0 keeps the input, upscaled only if a side is below the generator minimum.

    Returns:
        [1,3,h,w] in 0..1.

    Raises:
        ValueError: not one RGB image, a side below 32 px, or ``size`` below the generator minimum.
    """
    if image.ndim != 4 or image.shape[0] != 1 or image.shape[1] != 3:
        raise ValueError(f"expected one RGB image [1,3,H,W], got {tuple(image.shape)}")
    h, w = image.shape[-2:]
    if min(h, w) < MIN_INPUT_SIDE:
        raise ValueError(
            f"the image is {w}x{h} px; Text2LIVE needs at least {MIN_INPUT_SIDE} px on the shorter side "
            f"(it is upscaled to the working size, minimum {MIN_SIZE} px). Use a larger image."
        )
    if size and size < MIN_SIZE:
        raise ValueError(f"working size {size} is too small: the generator needs at least {MIN_SIZE} px; use size >= {MIN_SIZE}")
    target = size if size else max(min(h, w), MIN_SIZE)
    return resize_short_side(image, target).clamp(0, 1)


@dataclass
class Sample:
    """One step's examples. Tensors [1,C,h,w] in 0..1; ``full``/``full_mask`` only on full-image steps."""

    crop: torch.Tensor
    crop_mask: Optional[torch.Tensor] = None
    full: Optional[torch.Tensor] = None
    full_mask: Optional[torch.Tensor] = None

    def examples(self) -> list[tuple[torch.Tensor, Optional[torch.Tensor]]]:
        """(image, mask) pairs of this step: the crop, then the full image if present."""
        out = [(self.crop, self.crop_mask)]
        if self.full is not None:
            out.append((self.full, self.full_mask))
        return out


class InternalDataset:
    """Samples augmented crops of one working image.

    Args:
        image: [1,3,H,W] in 0..1, both sides at least the generator minimum (129 px).
        config: the augmentation settings.
        mask: None, or [1,1,H,W] in 0..1 that follows the geometric augmentations.

    Raises:
        ValueError: the image is too small or the mask's size differs.
    """

    def __init__(self, image: torch.Tensor, config: DatasetConfig = DatasetConfig(),
                 mask: Optional[torch.Tensor] = None) -> None:
        if min(image.shape[-2:]) < MIN_SIZE:
            raise ValueError(f"working image {tuple(image.shape[-2:])} is below the generator minimum {MIN_SIZE} px")
        if mask is not None and mask.shape[-2:] != image.shape[-2:]:
            raise ValueError(f"mask size {tuple(mask.shape[-2:])} differs from the image size {tuple(image.shape[-2:])}")
        self.image = image
        self.mask = mask
        self.config = config
        c = config
        self.jitter = K.ColorJitter(c.jitter, c.jitter, c.jitter, c.jitter, p=c.jitter_p)

    def sample(self, step: int, generator: torch.Generator) -> Sample:
        """One step's examples.

        Args:
            step: 0-based; the whole image joins on multiples of ``full_image_every``.
            generator: the RNG of the augmentations.

        Returns:
            The augmented crop (and mask), plus the whole image on full-image steps.
        """
        c = self.config
        with forked_rng(generator):  # the whole image first, as the authors (a mask is not jittered)
            image = self.jitter(self.image).clamp(0, 1)
        stacked = image if self.mask is None else torch.cat([image, self.mask], dim=1)
        if uniform(generator, 0.0, 1.0) < c.flip_p:
            stacked = stacked.flip(-1)
        h, w = stacked.shape[-2:]
        s = uniform(generator, c.scale_min, c.scale_max)
        r = uniform(generator, c.crop_min, 1.0)
        # keep every crop at least MIN_SIZE on both sides (only matters for tiny working sizes)
        s = max(s, (math.ceil(MIN_SIZE / r) + 1) / min(h, w))
        hs, ws = int(h * s), int(w * s)
        scaled = F.interpolate(stacked, size=(hs, ws), mode="bilinear", align_corners=False, antialias=True)
        ch = min(hs, max(MIN_SIZE, int(hs * r)))
        cw = min(ws, max(MIN_SIZE, int(ws * r)))
        top, left = randint(generator, 0, hs - ch), randint(generator, 0, ws - cw)
        crop = scaled[..., top : top + ch, left : left + cw]
        sample = Sample(crop=crop[:, :3].clamp(0, 1), crop_mask=None if self.mask is None else crop[:, 3:].clamp(0, 1))
        if c.full_image_every > 0 and step % c.full_image_every == 0:
            sample.full, sample.full_mask = self.image, self.mask
        return sample
