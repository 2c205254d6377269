"""Frame edits into atlases: an edit painted over one frame is splatted into each layer's atlas so that
rendering the atlases (:mod:`t2l_core.nla.render`) carries it along the motion to every frame."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .atlas_images import AtlasEdit
from .atlas_model import LayeredAtlas
from .frame_maps import model_device, frame_alpha, frame_uv


def _splat(values: torch.Tensor, px: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear splat of values [C,N] at atlas pixel coordinates px [N,2] (texel centres at +0.5) -> [C,H,W]."""
    C = values.shape[0]
    acc = torch.zeros(C, height * width)
    p = px - 0.5
    x0 = torch.floor(p[:, 0])
    y0 = torch.floor(p[:, 1])
    fx = p[:, 0] - x0
    fy = p[:, 1] - y0
    for dx, dy, wgt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi = (x0 + dx).long()
        yi = (y0 + dy).long()
        ok = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
        idx = (yi * width + xi)[ok]
        acc.index_add_(1, idx, values[:, ok] * wgt[ok])
    return acc.reshape(C, height, width)


@torch.no_grad()
def push_frame_edit(model: LayeredAtlas, t: int, rgb: torch.Tensor, opacity: torch.Tensor, bboxes: dict,
                    layers: Optional[tuple] = None, min_weight: float = 1e-3) -> dict:
    """Push an edited frame into the atlases so it propagates to every frame.

    Each pixel is splatted (bilinear) into each layer's atlas with weight alpha (fg) / 1 - alpha (bg):
    atlas opacity = sum w a / sum w and colour = sum w a E / sum w a. Small holes are filled by one pass of
    normalised convolution. Rendering the result with :func:`render_edits` reproduces the edit on frame t
    and carries it along the motion to other frames.

    Args:
        model: the atlas.
        t: the frame index, 0..T-1.
        rgb: [3,H,W] in 0..1, the edit painted over frame t.
        opacity: [H,W] in 0..1 (1 = edit visible).
        bboxes: {layer: AtlasBBox} of the atlas images to fill.
        layers: the layers to fill (default all).
        min_weight: texels with less splatted weight count as holes.

    Returns:
        {layer: AtlasEdit}.
    """
    layers = layers or model.layers()
    H, W = rgb.shape[-2:]
    if (H, W) != (model.cfg.height, model.cfg.width):
        raise ValueError(f"the edited frame is {W}x{H} but the atlas was fitted on {model.cfg.width}x{model.cfg.height} frames")
    alpha = frame_alpha(model, t).reshape(-1)
    a = opacity.float().reshape(-1).clamp(0, 1)
    e = rgb.float().reshape(3, -1)
    out = {}
    for layer in layers:
        bbox = bboxes[layer]
        w = alpha if layer == "fg" else 1 - alpha
        px = bbox.to_pixels(frame_uv(model, t, layer).reshape(-1, 2))
        vals = torch.cat([e * (w * a)[None], (w * a)[None], w[None]], dim=0)  # [5,N]
        acc = _splat(vals, px, bbox.height, bbox.width)
        # fill small holes (texels no pixel reached) from their neighbours
        blur = F.avg_pool2d(acc[None], 3, stride=1, padding=1, count_include_pad=False)[0]
        hole = (acc[4] < min_weight)[None]
        acc = torch.where(hole, blur, acc)
        den = acc[4]
        valid = den >= min_weight
        op = torch.where(valid, acc[3] / den.clamp_min(min_weight), torch.zeros_like(den)).clamp(0, 1)
        col = torch.where(acc[3][None] > 1e-6, acc[:3] / acc[3].clamp_min(1e-6)[None], torch.zeros_like(acc[:3])).clamp(0, 1)
        out[layer] = AtlasEdit(rgb=col, alpha=op, bbox=bbox)
    return out


def frame_edit_to_atlas(nla, t: int, rgb: torch.Tensor, opacity: torch.Tensor) -> dict:
    """A painted keyframe -> atlas edits for every layer of a fitted atlas (:func:`push_frame_edit`); a wrong
    frame index or size raises a ValueError that says what to change.

    Args:
        nla: a :class:`~t2l_core.nla.fitted.FittedNLA`.
        t: the frame index, 0-based.
        rgb: [3,H,W] in 0..1 painted over frame t.
        opacity: [H,W] in 0..1 (1 = edit visible).

    Returns:
        {layer: AtlasEdit}.
    """
    n = nla.num_frames
    if not 0 <= t < n:
        raise ValueError(f"frame index {t} is outside the video: this atlas has {n} frames (use 0..{n - 1})")
    h, w = nla.size
    if tuple(rgb.shape[-2:]) != (h, w) or tuple(opacity.shape[-2:]) != (h, w):
        raise ValueError(f"the edited frame is {rgb.shape[-1]}x{rgb.shape[-2]} (opacity {opacity.shape[-1]}x"
                         f"{opacity.shape[-2]}) but the atlas was fitted on {w}x{h} frames: paint on a frame of that size")
    with torch.no_grad():
        return push_frame_edit(nla.model, t, rgb.to(model_device(nla.model)), opacity.to(model_device(nla.model)), nla.bboxes)
