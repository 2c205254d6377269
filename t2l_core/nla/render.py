"""Discretised atlases, rendering atlas edits into frames (NLA, Kasten et al. 2021, Sec. 3.4, Eq. 15-16; used
as Text2LIVE's video renderer, Sec. 3.2) and pushing frame edits into atlases.

Atlas images and their bounding boxes
-------------------------------------
A discretised atlas is an image [C,Ha,Wa] covering the uv rectangle ``AtlasBBox(u0, v0, u1, v1)`` of one
layer (uv as in :mod:`t2l_core.nla.atlas_model`: fg in [0,1]^2, bg in [-1,0]^2; u horizontal, v vertical). Texels
are square; texel (i, j) (row, column) has its centre at ``uv = (u0 + (j+0.5) du, v0 + (i+0.5) dv)``, which
is exactly what ``F.grid_sample(..., align_corners=False)`` assumes with ``grid = 2 (uv - uv0)/(uv1 - uv0) - 1``.
So an edited atlas image of ANY size covering the same bbox maps back without a half-texel shift.

Everything is streamed one frame at a time (and in pixel chunks): nothing per-pixel is kept for the whole video.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Optional

import torch
import torch.nn.functional as F

from .atlas_model import LayeredAtlas, frame_pixel_grid

CHUNK = 65536


@dataclass
class AtlasBBox:
    """The uv rectangle covered by a discretised atlas image of ``width`` x ``height`` square texels."""

    layer: str
    u0: float
    v0: float
    u1: float
    v1: float
    width: int
    height: int

    def to_grid(self, uv: torch.Tensor) -> torch.Tensor:
        """uv [...,2] -> ``grid_sample`` coordinates [...,2], [-1,1] over the bbox (``align_corners=False``)."""
        lo = torch.tensor([self.u0, self.v0], device=uv.device, dtype=uv.dtype)
        hi = torch.tensor([self.u1, self.v1], device=uv.device, dtype=uv.dtype)
        return 2.0 * (uv - lo) / (hi - lo) - 1.0

    def to_pixels(self, uv: torch.Tensor) -> torch.Tensor:
        """uv [...,2] -> continuous atlas pixel coordinates (x, y); texel (i, j) spans [j, j+1) x [i, i+1)."""
        lo = torch.tensor([self.u0, self.v0], device=uv.device, dtype=uv.dtype)
        size = torch.tensor([(self.u1 - self.u0) / self.width, (self.v1 - self.v0) / self.height],
                            device=uv.device, dtype=uv.dtype)
        return (uv - lo) / size

    def texel_centres(self) -> torch.Tensor:
        """uv of every texel centre, [height, width, 2]."""
        du = (self.u1 - self.u0) / self.width
        dv = (self.v1 - self.v0) / self.height
        u = self.u0 + (torch.arange(self.width, dtype=torch.float32) + 0.5) * du
        v = self.v0 + (torch.arange(self.height, dtype=torch.float32) + 0.5) * dv
        vv, uu = torch.meshgrid(v, u, indexing="ij")
        return torch.stack([uu, vv], dim=-1)

    def to_dict(self) -> dict:
        """Every field as plain JSON values (stored with a saved atlas)."""
        return dict(layer=self.layer, u0=self.u0, v0=self.v0, u1=self.u1, v1=self.v1, width=self.width, height=self.height)

    @staticmethod
    def from_dict(d: dict) -> "AtlasBBox":
        """The bbox that :meth:`to_dict` wrote."""
        return AtlasBBox(**d)


@dataclass
class AtlasEdit:
    """An RGBA edit in atlas space: rgb [3,Ha,Wa] and opacity [Ha,Wa] (1 = edit visible), covering ``bbox``
    (any Ha, Wa: only the bbox matters). A text-driven edit layer trained on an atlas produces one
    of these from its generator output; image editors produce one from IMAGE + MASK."""

    rgb: torch.Tensor
    alpha: torch.Tensor
    bbox: AtlasBBox

    def rgba(self) -> torch.Tensor:
        """[4,Ha,Wa] float: rgb then opacity."""
        return torch.cat([self.rgb.float(), self.alpha.float()[None]], dim=0)


# ----------------------------------------------------------------------------------------------------
# per-frame maps

def _device(model: LayeredAtlas) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def frame_uv(model: LayeredAtlas, t: int, layer: str, crop: Optional[tuple] = None) -> torch.Tensor:
    """The atlas uv of every pixel of a frame (or a crop).

    Args:
        model: the atlas.
        t: the frame index, 0..T-1.
        layer: "fg" or "bg".
        crop: None, or (top, left, h, w) in pixels.

    Returns:
        [h,w,2] (u, v), CPU float32 (fg in [0,1]^2, bg in [-1,0]^2).
    """
    cfg = model.cfg
    h, w = (crop[2], crop[3]) if crop is not None else (cfg.height, cfg.width)
    dev = _device(model)
    xs, ys = frame_pixel_grid(cfg.height, cfg.width, dev, crop)
    out = torch.empty(xs.shape[0], 2, device=dev)
    for s in range(0, xs.shape[0], CHUNK):
        x, y = xs[s:s + CHUNK], ys[s:s + CHUNK]
        out[s:s + CHUNK] = model.uv(layer, x, y, torch.full_like(x, t, dtype=torch.long))
    return out.reshape(h, w, 2).cpu()


@torch.no_grad()
def frame_alpha(model: LayeredAtlas, t: int, crop: Optional[tuple] = None) -> torch.Tensor:
    """The foreground opacity of a frame (or a crop).

    Args:
        model: the atlas.
        t: the frame index, 0..T-1.
        crop: None, or (top, left, h, w) in pixels.

    Returns:
        [h,w] in (0,1), CPU float32; zeros for a background-only atlas.
    """
    cfg = model.cfg
    h, w = (crop[2], crop[3]) if crop is not None else (cfg.height, cfg.width)
    dev = _device(model)
    xs, ys = frame_pixel_grid(cfg.height, cfg.width, dev, crop)
    out = torch.empty(xs.shape[0], device=dev)
    for s in range(0, xs.shape[0], CHUNK):
        x, y = xs[s:s + CHUNK], ys[s:s + CHUNK]
        out[s:s + CHUNK] = model.alpha(x, y, torch.full_like(x, t, dtype=torch.long))
    return out.reshape(h, w).cpu()


def iter_frame_maps(model: LayeredAtlas, crop: Optional[tuple] = None) -> Iterator[tuple]:
    """Every frame's uv maps and opacity, one frame at a time.

    Args:
        model: the atlas.
        crop: None, or (top, left, h, w) in pixels.

    Returns:
        An iterator of (t, {layer: uv [h,w,2]}, alpha [h,w]).
    """
    for t in range(model.cfg.frames):
        yield t, {layer: frame_uv(model, t, layer, crop) for layer in model.layers()}, frame_alpha(model, t, crop)


# ----------------------------------------------------------------------------------------------------
# discretisation

@torch.no_grad()
def layer_uv_extent(model: LayeredAtlas, layer: str, alpha_threshold: float = 0.05) -> tuple:
    """The uv bounding box of the pixels a layer shows, over all frames (streamed).

    Args:
        model: the atlas.
        layer: "fg" or "bg".
        alpha_threshold: foreground pixels count from this opacity on (all pixels if none does);
            background pixels always count.

    Returns:
        (u0, v0, u1, v1).
    """
    lo = torch.tensor([math.inf, math.inf])
    hi = -lo
    lo_all, hi_all = lo.clone(), hi.clone()
    for t in range(model.cfg.frames):
        uv = frame_uv(model, t, layer).reshape(-1, 2)
        lo_all = torch.minimum(lo_all, uv.min(0).values)
        hi_all = torch.maximum(hi_all, uv.max(0).values)
        if layer == "fg":
            sel = frame_alpha(model, t).reshape(-1) >= alpha_threshold
            if sel.any():
                lo = torch.minimum(lo, uv[sel].min(0).values)
                hi = torch.maximum(hi, uv[sel].max(0).values)
        else:
            lo, hi = lo_all, hi_all
    if not torch.isfinite(lo).all():
        lo, hi = lo_all, hi_all
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


def make_bbox(model: LayeredAtlas, layer: str, resolution: int = 0, margin_texels: int = 2,
              alpha_threshold: float = 0.05) -> AtlasBBox:
    """The bbox of a layer's discretised atlas (square texels).

    Args:
        model: the atlas.
        layer: "fg" or "bg".
        resolution: the long side in texels (0 = native, about one texel per frame pixel).
        margin_texels: texels added on every side.
        alpha_threshold: see :func:`layer_uv_extent`.

    Returns:
        The :class:`AtlasBBox`.
    """
    return bbox_from_extent(model, layer, layer_uv_extent(model, layer, alpha_threshold), resolution, margin_texels)


def bbox_from_extent(model: LayeredAtlas, layer: str, extent_uv: tuple, resolution: int = 0,
                     margin_texels: int = 2) -> AtlasBBox:
    """:func:`make_bbox` from an already known uv extent.

    Args:
        model: the atlas.
        layer: "fg" or "bg".
        extent_uv: (u0, v0, u1, v1).
        resolution, margin_texels: see :func:`make_bbox`.

    Returns:
        The :class:`AtlasBBox`.
    """
    u0, v0, u1, v1 = extent_uv
    native = model.cfg.long_side / model.cfg.uv_scale  # texels per uv unit for 1 texel ~ 1 frame pixel
    extent = max(u1 - u0, v1 - v0, 1e-6)
    long_side = int(resolution) if resolution and resolution > 0 else max(8, int(math.ceil(extent * native)))
    tau = extent / max(long_side - 2 * margin_texels, 1)
    u0 -= margin_texels * tau
    v0 -= margin_texels * tau
    wa = max(1, int(math.ceil((u1 - u0) / tau + margin_texels)))
    ha = max(1, int(math.ceil((v1 - v0) / tau + margin_texels)))
    return AtlasBBox(layer, u0, v0, u0 + wa * tau, v0 + ha * tau, wa, ha)


@torch.no_grad()
def discretise_atlas(model: LayeredAtlas, bbox: AtlasBBox, on_chunk=None) -> torch.Tensor:
    """Evaluate the atlas colour at every texel centre of ``bbox`` (the discretised atlas, NLA Sec. 3.4).

    Args:
        model: the atlas.
        bbox: the texels.
        on_chunk: ``(i, n)`` after each of the n chunks of ``CHUNK`` texels (progress and cancellation).

    Returns:
        [3, height, width] in 0..1, on the CPU.
    """
    uv = bbox.texel_centres().reshape(-1, 2).to(_device(model))
    out = torch.empty(uv.shape[0], 3, device=uv.device)
    n = -(-uv.shape[0] // CHUNK)
    for i, s in enumerate(range(0, uv.shape[0], CHUNK)):
        out[s:s + CHUNK] = model.colour_at(uv[s:s + CHUNK])
        if on_chunk is not None:
            on_chunk(i + 1, n)
    return out.t().reshape(3, bbox.height, bbox.width).clamp(0, 1).cpu()


# ----------------------------------------------------------------------------------------------------
# atlas -> frames

def sample_atlas(image: torch.Tensor, bbox: AtlasBBox, uv: torch.Tensor) -> torch.Tensor:
    """Sample an atlas-space image at uv points (bilinear, ``align_corners=False``; zeros outside the bbox,
    so an RGBA edit is transparent there).

    Args:
        image: [C,Ha,Wa] covering ``bbox`` (any Ha, Wa).
        bbox: the uv rectangle the image covers.
        uv: [h,w,2].

    Returns:
        [C,h,w] float.
    """
    grid = bbox.to_grid(uv.to(image.device).float())[None]
    return F.grid_sample(image[None].float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]


def blend_edits(frame: torch.Tensor, alpha: torch.Tensor, fg: Optional[torch.Tensor], bg: Optional[torch.Tensor]) -> torch.Tensor:
    """Blend sampled atlas edits over the original frame (NLA Sec. 3.4, Eq. 15-16):
    c_l = a_l E_l + (1 - a_l) I;  out = alpha c_f + (1 - alpha) c_b, written as I + sum_l w_l a_l (E_l - I)
    so a fully transparent edit returns ``frame`` bit-exactly.

    Args:
        frame: [3,H,W] in 0..1, the ORIGINAL frame.
        alpha: [H,W] foreground opacity in 0..1.
        fg, bg: None, or the layer's RGBA edit sampled into the frame, [4,H,W] in 0..1.

    Returns:
        [3,H,W] in 0..1.
    """
    out = frame.clone()
    if fg is not None:
        a = (alpha * fg[3].clamp(0, 1))[None]
        out = out + a * (fg[:3].clamp(0, 1) - frame)
    if bg is not None:
        a = ((1 - alpha) * bg[3].clamp(0, 1))[None]
        out = out + a * (bg[:3].clamp(0, 1) - frame)
    return out.clamp(0, 1)


@torch.no_grad()
def render_frame(model: LayeredAtlas, t: int, frame: torch.Tensor, fg_edit: Optional[AtlasEdit] = None,
                 bg_edit: Optional[AtlasEdit] = None) -> torch.Tensor:
    """One edited frame: the atlas edits sampled into it and blended over it (:func:`blend_edits`).

    Args:
        model: the atlas.
        t: the frame index, 0..T-1.
        frame: [3,H,W] in 0..1, the original frame t.
        fg_edit, bg_edit: None, or the layer's atlas edit.

    Returns:
        [3,H,W] in 0..1.
    """
    alpha = frame_alpha(model, t)
    fg = sample_atlas(fg_edit.rgba(), fg_edit.bbox, frame_uv(model, t, "fg")) if fg_edit is not None else None
    bg = sample_atlas(bg_edit.rgba(), bg_edit.bbox, frame_uv(model, t, "bg")) if bg_edit is not None else None
    return blend_edits(frame.float(), alpha, fg, bg)


@torch.no_grad()
def render_edits(model: LayeredAtlas, frames: torch.Tensor, fg_edit: Optional[AtlasEdit] = None,
                 bg_edit: Optional[AtlasEdit] = None, on_frame=None) -> torch.Tensor:
    """Render atlas edits into every frame (streamed; the output is preallocated).

    Args:
        model: the atlas.
        frames: [T,3,H,W] in 0..1, the ORIGINAL video.
        fg_edit, bg_edit: None, or the layer's atlas edit (a foreground edit needs a foreground layer).
        on_frame: ``(done, total)`` after each frame (progress and cancellation).

    Returns:
        [T,3,H,W] float32 in 0..1.
    """
    if fg_edit is not None and model.map_fg is None:
        raise ValueError("a foreground edit was given, but this atlas has no foreground layer (it was fitted without masks)")
    out = torch.empty(frames.shape, dtype=torch.float32)
    for t in range(frames.shape[0]):
        out[t] = render_frame(model, t, frames[t], fg_edit, bg_edit)
        if on_frame is not None:
            on_frame(t + 1, frames.shape[0])
    return out


# ----------------------------------------------------------------------------------------------------
# frame -> atlas (propagate a painted keyframe)

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
        return push_frame_edit(nla.model, t, rgb.to(_device(nla.model)), opacity.to(_device(nla.model)), nla.bboxes)
