"""Alpha compositing of an edit layer (paper eq. 1).

All tensors are ``[B,C,H,W]`` float in 0..1; α is ``[B,1,H,W]`` (opacity, 1 = edit visible).
Batches broadcast (a batch of 1 is repeated); spatial sizes must match.
"""

from __future__ import annotations

from typing import Sequence

import torch

# The authors' green screen: (0, 177, 64) / 255.
GREEN = (0.0, 177.0 / 255.0, 64.0 / 255.0)


def _check(name: str, t: torch.Tensor, channels: Sequence[int]) -> None:
    """Raise ValueError unless ``t`` is [B,C,H,W] with C in ``channels``."""
    if t.ndim != 4 or t.shape[1] not in channels:
        raise ValueError(f"{name} must be [B,C,H,W] with C in {tuple(channels)}, got {tuple(t.shape)}")


def composite(color: torch.Tensor, alpha: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """The composite I_o = α·C + (1−α)·I_s (paper eq. 1).

    Args:
        color: [B,3,H,W] in 0..1, the edit colour C.
        alpha: [B,1,H,W] in 0..1, the opacity α.
        background: [B,3,H,W] in 0..1, the image I_s under the edit.

    Returns:
        [B',3,H,W] in 0..1, B' the largest of the three batch sizes.

    Raises:
        ValueError: a tensor has the wrong shape, the sizes differ, or the batch sizes do not broadcast.
    """
    _check("color", color, (3,))
    _check("alpha", alpha, (1,))
    _check("background", background, (3,))
    sizes = {tuple(t.shape[-2:]) for t in (color, alpha, background)}
    if len(sizes) != 1:
        raise ValueError(
            "composite: colour, opacity and background must have the same height and width, got "
            f"colour {tuple(color.shape[-2:])}, opacity {tuple(alpha.shape[-2:])}, background "
            f"{tuple(background.shape[-2:])}; resize them to one size first"
        )
    batches = {t.shape[0] for t in (color, alpha, background)} - {1}
    if len(batches) > 1:
        raise ValueError(
            f"composite: batch sizes {color.shape[0]}, {alpha.shape[0]}, {background.shape[0]} do not match "
            "(each must be 1 or the same number)"
        )
    return alpha * color + (1.0 - alpha) * background


def solid_background(like: torch.Tensor, rgb: Sequence[float] = GREEN) -> torch.Tensor:
    """A constant-colour image.

    Args:
        like: [...,H,W]; the result takes its size, device and dtype.
        rgb: the colour, three floats in 0..1.

    Returns:
        [1,3,H,W] (an expanded view).
    """
    c = torch.tensor(list(rgb), dtype=like.dtype, device=like.device).view(1, 3, 1, 1)
    return c.expand(1, 3, like.shape[-2], like.shape[-1])


def on_green_screen(color: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """The edit layer over a green screen, I_screen = α·C + (1−α)·G with G = (0,177,64)/255 (paper eq. 4).

    Args:
        color: [B,3,H,W] in 0..1.
        alpha: [B,1,H,W] in 0..1.

    Returns:
        [B,3,H,W] in 0..1.
    """
    return composite(color, alpha, solid_background(color, GREEN))


def parse_hex_color(text: str) -> tuple[float, float, float]:
    """Parse a colour written as hex or as 0..255 components.

    Args:
        text: ``'#00B140'`` or ``'0,177,64'``.

    Returns:
        (r, g, b) floats in 0..1.

    Raises:
        ValueError: the text is neither form (or a component is outside 0..255).
    """
    s = text.strip()
    try:
        if "," in s:
            parts = [float(p) for p in s.split(",")]
            if len(parts) != 3 or not all(0 <= p <= 255 for p in parts):
                raise ValueError
            return tuple(p / 255.0 for p in parts)  # type: ignore[return-value]
        s = s.lstrip("#")
        if len(s) != 6:
            raise ValueError
        return tuple(int(s[i : i + 2], 16) / 255.0 for i in (0, 2, 4))  # type: ignore[return-value]
    except ValueError:
        raise ValueError(f"colour '{text}' is not understood; use '#RRGGBB' (e.g. #00B140) or 'R,G,B' in 0..255") from None
