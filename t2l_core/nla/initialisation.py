"""The starting point of an atlas fit: per-frame motion from flow and masks, opacity from the masks, atlas
colour from the frames.

NLA (Kasten et al. 2021, Sec. 3) starts its mapping networks from a scaled identity (a pre-training step
regresses M(x, y, t) to 0.8 (x, y)) and its opacity from Mask R-CNN masks (the alpha bootstrapping loss). Here
the mappings start from a per-frame translation that follows the camera path (median flow outside the masks)
and the mask centroids, the opacity grid starts at the masks, and the atlas colour at the frames splatted
through those initial mappings, so the atlas is already a good reconstruction at step 0.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .atlas_model import LayeredAtlas, frame_pixel_grid
from .optical_flow import VideoFlow


def robust_median(v: torch.Tensor) -> torch.Tensor:
    """The median of ``v``'s values, 0 when it is empty (a 0-dim tensor)."""
    return v.median() if v.numel() > 0 else torch.tensor(0.0)


def _camera_path(flow: VideoFlow, masks: Optional[torch.Tensor]) -> torch.Tensor:
    """Cumulative median consistent flow outside the masks, centred on its mean: [T,2] pixels (dx, dy)."""
    disp = torch.zeros(flow.frames, 2)
    for t in range(flow.frames - 1):
        ok = flow.fwd_ok[t].clone()
        if masks is not None:
            ok &= masks[t] < 0.5
        f = flow.fwd[t].float()
        if ok.sum() < 16:
            ok = torch.ones_like(ok)
        d = torch.stack([robust_median(f[0][ok]), robust_median(f[1][ok])])
        disp[t + 1] = disp[t] + d
    return disp - disp.mean(0, keepdim=True)


def _mask_centroids(masks: torch.Tensor, height: int, width: int, half: float) -> list:
    """Per-frame centroid (x, y) of the mask in normalised coordinates; an empty mask repeats the last known
    centroid (the first known one before any)."""
    cents = []
    for t in range(masks.shape[0]):
        m = masks[t] > 0.5
        if m.any():
            ys, xs = torch.nonzero(m, as_tuple=True)
            cents.append(((xs.float().mean() - (width - 1) / 2) / half, (ys.float().mean() - (height - 1) / 2) / half))
        else:
            cents.append(None)
    known = [c for c in cents if c is not None]
    if not known:
        raise ValueError("every mask is empty; give masks that cover the foreground object, or no masks "
                         "for a background-only atlas")
    last, filled = known[0], []
    for c in cents:
        last = c if c is not None else last
        filled.append(last)
    return filled


def motion_init(flow: VideoFlow, masks: Optional[torch.Tensor], height: int, width: int) -> tuple:
    """Initial per-frame affine parameters of both layers' mappings and the uv scale.

    Background: a translation that follows the median consistent flow outside the masks (the camera path).
    Foreground: a translation that follows the mask centroid. The uv scale (NLA's 0.8 at most) makes the
    background's whole path fit in its atlas quadrant.

    Args:
        flow: the video's forward/backward flow and consistency masks.
        masks: None, or [T,H,W] with 1 = foreground.
        height, width: the frame size H, W.

    Returns:
        (bg_init, fg_init, uv_scale): per-frame ``[a11, a12, a21, a22, bx, by]`` lists (fg_init empty without
        masks) and the mapping scale in (0, 0.8].
    """
    half = max(height, width) / 2.0
    disp = _camera_path(flow, masks)
    bg = [[1.0, 0.0, 0.0, 1.0, -float(disp[t, 0]) / half, -float(disp[t, 1]) / half] for t in range(flow.frames)]
    span_x = width / max(height, width) + float(disp[:, 0].max() - disp[:, 0].min()) / (2 * half)
    span_y = height / max(height, width) + float(disp[:, 1].max() - disp[:, 1].min()) / (2 * half)
    scale = min(0.8, 0.9 / max(span_x, span_y))
    fg: list = []
    if masks is not None:
        fg = [[1.0, 0.0, 0.0, 1.0, -float(cx), -float(cy)] for cx, cy in _mask_centroids(masks, height, width, half)]
    return bg, fg, float(scale)


@torch.no_grad()
def init_alpha_from_masks(model: LayeredAtlas, masks: torch.Tensor, logit: float = 4.0) -> None:
    """Start the opacity at the masks: the finest alpha grid gets +-``logit`` from the resampled masks.

    Args:
        model: an atlas with a foreground layer (changed in place).
        masks: [T,H,W] in 0..1, 1 = foreground.
        logit: the opacity logit magnitude (4 gives alpha 0.98 / 0.02).
    """
    g = model.alpha_grid.grids[-1]
    m = F.interpolate(masks.float()[None, None], size=tuple(g.shape[2:]), mode="trilinear", align_corners=True)
    g.copy_((2 * m - 1) * logit)


def _layer_weight(masks: Optional[torch.Tensor], t: int, layer: str, like: torch.Tensor) -> torch.Tensor:
    """How much each pixel of frame t belongs to ``layer``: 1 without masks, else mask (fg) or 1 - mask (bg)."""
    if masks is None:
        return torch.ones_like(like)
    m = masks[t].reshape(-1).float().to(like.device)
    return m if layer == "fg" else 1 - m


def _splat(acc: torch.Tensor, uv: torch.Tensor, vals: torch.Tensor, w: torch.Tensor, res: int) -> None:
    """Add ``vals`` [4,N] at atlas positions ``uv`` [N,2] bilinearly onto the nodes of a res x res grid over
    [-1,1]^2 (``align_corners=True``), into ``acc`` [4, res*res]; points of weight ``w`` 0 are skipped."""
    p = (uv + 1) * 0.5 * (res - 1)  # align_corners=True node coordinates
    x0, y0 = torch.floor(p[:, 0]), torch.floor(p[:, 1])
    fx, fy = p[:, 0] - x0, p[:, 1] - y0
    for dx, dy, k in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = (x0 + dx).long(), (y0 + dy).long()
        ok = (xi >= 0) & (xi < res) & (yi >= 0) & (yi < res) & (k * w > 0)
        acc.index_add_(1, (yi * res + xi)[ok], vals[:, ok] * k[ok])


@torch.no_grad()
def init_colour_from_frames(model: LayeredAtlas, frames16: torch.Tensor, masks: Optional[torch.Tensor],
                            on_frame: Optional[Callable[[int, int], None]] = None) -> None:
    """Start the atlas colour at the frames splatted through the initial mappings (streamed per frame).

    Every pixel is splatted bilinearly onto the finest colour grid's nodes with weight 1-mask (bg) or mask
    (fg); the finest level becomes the weighted mean colour minus the coarser levels (nodes nobody reached
    keep the coarse colour). With the flow-initialised mappings this gives a good atlas at step 0.

    Args:
        model: the atlas (its finest colour level is set in place).
        frames16: [T,3,H,W] fp16 in 0..1.
        masks: None, or [T,H,W] with 1 = foreground.
        on_frame: ``(done, total)`` after each frame (progress and cancellation).
    """
    lv = model.colour.levels[-1]
    R = lv.shape[-1]
    dev = lv.device
    acc = torch.zeros(4, R * R, device=dev)
    T, _, H, W = frames16.shape
    xs, ys = frame_pixel_grid(H, W, dev)
    for t in range(T):
        rgb = frames16[t].reshape(3, -1).float().to(dev)
        tt = torch.full_like(xs, t, dtype=torch.long)
        for layer in model.layers():
            w = _layer_weight(masks, t, layer, xs)
            uv = model.uv(layer, xs, ys, tt)
            _splat(acc, uv, torch.cat([rgb, torch.ones_like(xs)[None]], 0) * w[None], w, R)
        if on_frame is not None:
            on_frame(t + 1, T)
    den = acc[3].reshape(R, R)
    mean = acc[:3].reshape(3, R, R) / den.clamp_min(1e-6)
    nodes = torch.stack(torch.meshgrid(torch.linspace(-1, 1, R, device=dev), torch.linspace(-1, 1, R, device=dev),
                                       indexing="xy"), -1).reshape(-1, 2)
    lv.zero_()
    coarse = model.colour(nodes).t().reshape(3, R, R)
    lv.copy_(torch.where(den[None] > 0.05, mean - coarse, torch.zeros_like(mean))[None])
