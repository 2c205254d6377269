"""The edit's working size and crop augmentations (paper section 3.1, appendix A.2): the settings and the size
arithmetic shared by image edits (:mod:`t2l_core.image.internal_dataset`) and atlas edits (:mod:`t2l_core.video`)."""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import setting
from .generator import MIN_SIZE


@dataclass
class DatasetConfig:
    """Working resolution and crop augmentation parameters (authors' image defaults)."""

    size: int = setting(512, "Working resolution: shorter side in px during training (paper: 512; minimum 129). "
                             "The result is rendered at the input's own resolution.", min=MIN_SIZE, max=4096)
    jitter_p: float = setting(0.1, "Probability of the colour jitter of a crop.", min=0.0, max=1.0)
    jitter: float = 0.1  # brightness = contrast = saturation = hue strength
    flip_p: float = setting(0.5, "Probability of a horizontal flip of a crop.", min=0.0, max=1.0)
    scale_min: float = setting(0.8, "Smallest scale factor of a crop's image.", min=0.0)
    scale_max: float = setting(1.2, "Largest scale factor of a crop's image.", min=0.0)
    crop_min: float = setting(0.85, "Smallest crop side as a fraction of the scaled image's side.", min=0.0, max=1.0)
    full_image_every: int = setting(75, "The whole working image joins the step's examples every N steps.", min=0)


def short_side_size(h: int, w: int, size: int) -> tuple[int, int]:
    """The size after torchvision's ``Resize(size)``: the shorter side ``size``, the longer one truncated
    (``int(size * long / short)``: 300x451 -> 512x769).

    Args:
        h, w: the input size in px.
        size: the shorter side of the output.

    Returns:
        (height, width).
    """
    if h <= w:
        return size, int(size * w / h)
    return int(size * h / w), size
