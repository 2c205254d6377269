"""Per-frame maps of a layered atlas: the atlas uv of every pixel of a frame in each layer and the foreground
opacity, streamed in pixel chunks (nothing per-pixel is kept for the whole video)."""

from __future__ import annotations

from typing import Iterator, Optional

import torch

from .atlas_model import LayeredAtlas, frame_pixel_grid

CHUNK = 65536  # pixels (or texels) per forward pass


def model_device(model: LayeredAtlas) -> torch.device:
    """The device an atlas model is on.

    Args:
        model: the atlas.

    Returns:
        The device of its parameters.
    """
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
    dev = model_device(model)
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
    dev = model_device(model)
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
