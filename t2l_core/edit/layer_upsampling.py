"""Bring an edit layer generated at the working size to the input's full resolution, guided by the input.

The generator is trained on crops of the working image (shorter side 512 px by default) and is fully
convolutional, so run on a much larger image it paints texture at the wrong scale. By default it runs at the
working size and its RGBA output is upsampled with a fast guided filter (He et al. 2013; He & Sun 2015): local
linear models ``layer ~ A·image + b`` are fitted in small windows at the generator's resolution, between the
layer and the input resampled the way the generator saw it (antialiased bilinear), and the coefficients,
upsampled bilinearly, are applied to the full-resolution input. The layer's edges then snap to the image's
edges, and detail of the input that the edit keeps (a recoloured object's texture) comes back at full
resolution. (``kornia.filters.guided_blur(subsample=s)`` fits its models on every s-th pixel of a
full-resolution input, which misaligns them by up to s/2 pixels with a layer made from an antialiased
downscale; the fitting here uses kornia's box filter at the layer's own grid.)

Opacity 0 stays exactly 0: the filter can spill a little opacity across an edge, so the result is set to 0
wherever the bilinear upsampling of the opacity is 0 (no working-size pixel around it has any opacity). The
composite ``α·C + (1−α)·I`` then equals the input bit for bit there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.filters import box_blur

GUIDE_RADIUS = 1  # radius of the fitting window, in working-size pixels (a 3x3 window)
GUIDE_EPS = 1e-4  # regulariser: image variations with variance below it (std ~0.01 of 0..1) count as flat


def _box(x: torch.Tensor, k: int) -> torch.Tensor:
    """Mean over k×k windows (reflected border), same size."""
    return box_blur(x, (k, k), border_type="reflect")


def guided_coefficients(guide: torch.Tensor, target: torch.Tensor, radius: int = GUIDE_RADIUS,
                        eps: float = GUIDE_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Window-averaged guided-filter coefficients of ``target ~ A·guide + b``.

    Args:
        guide: [B,3,h,w].
        target: [B,C,h,w], on the same grid.
        radius: fitting window radius in pixels.
        eps: the regulariser.

    Returns:
        ``A`` ``[B,3,C,h,w]`` and ``b`` ``[B,C,h,w]``: the filtered target is ``sum_k A[:,k] * guide[:,k] + b``.
    """
    B, C, h, w = target.shape
    k = 2 * radius + 1
    mean_i = _box(guide, k)  # [B,3,h,w]
    mean_p = _box(target, k)  # [B,C,h,w]
    corr_ii = _box((guide[:, :, None] * guide[:, None]).flatten(1, 2), k).view(B, 3, 3, h, w)
    corr_ip = _box((guide[:, :, None] * target[:, None]).flatten(1, 2), k).view(B, 3, C, h, w)
    var = corr_ii - mean_i[:, :, None] * mean_i[:, None]
    cov = corr_ip - mean_i[:, :, None] * mean_p[:, None]
    eye = torch.eye(3, dtype=guide.dtype, device=guide.device)
    a = torch.linalg.solve(var.permute(0, 3, 4, 1, 2) + eps * eye, cov.permute(0, 3, 4, 1, 2))  # [B,h,w,3,C]
    a = a.permute(0, 3, 4, 1, 2).contiguous()  # [B,3,C,h,w]
    b = mean_p - (a * mean_i[:, :, None]).sum(1)
    return _box(a.flatten(1, 2), k).view(B, 3, C, h, w), _box(b, k)


def guided_upsample(color: torch.Tensor, alpha: torch.Tensor, guide: torch.Tensor, *, radius: int = GUIDE_RADIUS,
                    eps: float = GUIDE_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Upsample an RGBA layer to the size of ``guide`` with a guided filter.

    Args:
        color: ``[B,3,h,w]`` 0..1, the layer's colour at the generator's resolution.
        alpha: ``[B,1,h,w]`` 0..1, its opacity.
        guide: ``[B,3,H,W]`` 0..1, the full-resolution input (H >= h, W >= w).
        radius: fitting window radius in ``h x w`` pixels.
        eps: the guided filter's regulariser.

    Returns:
        colour ``[B,3,H,W]`` and opacity ``[B,1,H,W]`` in 0..1; opacity is 0 wherever the bilinear
        upsampling of ``alpha`` is 0.

    Raises:
        ValueError: the shapes do not belong together, or the guide is smaller than the layer.
    """
    if color.shape[-2:] != alpha.shape[-2:] or color.shape[0] != alpha.shape[0] or guide.shape[0] != color.shape[0]:
        raise ValueError(f"guided_upsample: colour {tuple(color.shape)}, opacity {tuple(alpha.shape)} and guide "
                         f"{tuple(guide.shape)} do not belong together")
    (h, w), (H, W) = color.shape[-2:], guide.shape[-2:]
    if H < h or W < w:
        raise ValueError(f"guided_upsample upsamples only: layer {w}x{h} px, guide {W}x{H} px")
    guide = guide.float()
    rgba = torch.cat([color, alpha], dim=1).float()
    small = F.interpolate(guide, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    a, b = guided_coefficients(small, rgba, radius, eps)
    B, C = rgba.shape[:2]
    a = F.interpolate(a.flatten(1, 2), size=(H, W), mode="bilinear", align_corners=False).view(B, 3, C, H, W)
    out = F.interpolate(b, size=(H, W), mode="bilinear", align_corners=False)
    for k in range(3):  # out += A_k · I_k, one guide channel at a time (no [B,3,C,H,W] product kept)
        out.addcmul_(a[:, k], guide[:, k : k + 1])
    del a
    out = out.clamp_(0, 1)
    support = F.interpolate(alpha.float(), size=(H, W), mode="bilinear", align_corners=False) > 0
    alpha_up = out[:, 3:].masked_fill_(~support, 0.0)
    return out[:, :3], alpha_up
