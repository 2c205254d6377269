"""Bring an edit layer generated at the working size to the input's full resolution, guided by the input.

The generator is trained on crops of the working image (shorter side 512 px by default) and is fully
convolutional, so run on a much larger image it paints texture at the wrong scale. By default it runs at the
working size and its RGBA output is upsampled with a fast guided filter (He & Sun 2015,
``kornia.filters.guided_blur`` with ``subsample``): the filter's local linear coefficients are fitted at the
generator's resolution between the layer and the input, then applied to the full-resolution input, so the
layer's edges snap to the image's edges and detail of the input that the edit keeps (a recoloured object's
texture) comes back at full resolution.

Opacity 0 stays exactly 0: the filter can spill a little opacity across an edge, so the result is multiplied
by the support of the bilinearly upsampled opacity (where all the working-size pixels around a full-size pixel
have opacity 0, it is 0). The composite ``α·C + (1−α)·I`` then equals the input bit for bit there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.filters import guided_blur

GUIDE_RADIUS = 1  # radius of the filter window, in working-size pixels (a 3x3 window)
GUIDE_EPS = 1e-4  # regulariser: image variations with variance below it (std ~0.01 of 0..1) count as flat


def guided_upsample(color: torch.Tensor, alpha: torch.Tensor, guide: torch.Tensor, *, radius: int = GUIDE_RADIUS,
                    eps: float = GUIDE_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Upsample an RGBA layer to the size of ``guide`` with a guided filter.

    Args:
        color: ``[B,3,h,w]`` 0..1, the layer's colour at the generator's resolution.
        alpha: ``[B,1,h,w]`` 0..1, its opacity.
        guide: ``[B,3,H,W]`` 0..1, the full-resolution input (H >= h, W >= w).
        radius: filter window radius in ``h x w`` pixels; eps: the guided filter's regulariser.
    Returns:
        colour ``[B,3,H,W]`` and opacity ``[B,1,H,W]`` in 0..1; opacity is 0 wherever the bilinear
        upsampling of ``alpha`` is 0.
    """
    if color.shape[-2:] != alpha.shape[-2:] or color.shape[0] != alpha.shape[0] or guide.shape[0] != color.shape[0]:
        raise ValueError(f"guided_upsample: colour {tuple(color.shape)}, opacity {tuple(alpha.shape)} and guide "
                         f"{tuple(guide.shape)} do not belong together")
    (h, w), (H, W) = color.shape[-2:], guide.shape[-2:]
    if H < h or W < w:
        raise ValueError(f"guided_upsample upsamples only: layer {w}x{h} px, guide {W}x{H} px")
    rgba = torch.cat([color, alpha], dim=1).to(guide.dtype)
    up = F.interpolate(rgba, size=(H, W), mode="bilinear", align_corners=False)
    s = max(1, min(H // h, W // w))  # the filter's coefficients are fitted on a grid about as dense as the layer
    out = guided_blur(guide, up, 2 * radius * s + 1, eps, subsample=s).clamp(0, 1)
    support = up[:, 3:] > 0
    return out[:, :3].contiguous(), torch.where(support, out[:, 3:], torch.zeros((), dtype=out.dtype, device=out.device))
