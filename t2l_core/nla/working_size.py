"""Fitting a layered atlas at a working size and using it at full size (long videos).

A fit with ``NLAFitConfig.working_size`` > 0 resizes the frames, masks and optical flow to that long side
(NLA fits at 768x432) and fits there; every frame is then reconstructed and rendered at full size through the
atlas's continuous coordinates. The model's normalised coordinates place a pixel centre by its offset from the
frame centre over half the long side (:func:`t2l_core.nla.atlas_model.normalise_xyt`), the same at any
resolution of the same aspect, so the full-size atlas is the fitted one with the frame size changed
(:func:`at_frame_size`); ``grid_height/grid_width`` keep the grids' layout. Full-size video is kept as uint8
only; the working frames are fp16, resized a few frames at a time.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .atlas_model import AtlasConfig, LayeredAtlas

RESIZE_CHUNK = 8  # frames resized at once


def working_shape(height: int, width: int, working_size: int) -> tuple:
    """The frame size a fit runs at.

    Args:
        height, width: the video's frame size.
        working_size: the long side to fit at (0, or at least the video's long side: the video's own size).

    Returns:
        (h, w), the aspect kept (each side at least 16 px).
    """
    long_side = max(height, width)
    if working_size <= 0 or working_size >= long_side:
        return (height, width)
    s = working_size / long_side
    return (max(16, int(round(height * s))), max(16, int(round(width * s))))


def as_unit_float(x: torch.Tensor) -> torch.Tensor:
    """Frames or masks as float32 in 0..1 (uint8 divided by 255, bool and float types converted)."""
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


def resize_video(x: torch.Tensor, size: tuple, dtype: torch.dtype,
                 on_frames: Optional[Callable[[int, int], None]] = None) -> torch.Tensor:
    """Resize a stack of frames ([T,C,H,W]) or masks ([T,H,W]) to ``size`` (antialiased bilinear, pixel
    centres aligned), a few frames at a time so no full-size float copy is made.

    Args:
        x: uint8 (0..255), bool or float (0..1), or a :class:`~t2l_core.io.frame_sources.StreamedVideo` (read once,
            in order).
        size: (h, w).
        dtype: of the result.
        on_frames: ``(done, total)`` after each few frames (progress and cancellation).

    Returns:
        [T,C,h,w] or [T,h,w] in 0..1.
    """
    squeeze = x.ndim == 3
    T = x.shape[0]
    out = torch.empty((T,) + (() if squeeze else (x.shape[1],)) + tuple(size), dtype=dtype)
    for s in range(0, T, RESIZE_CHUNK):
        c = as_unit_float(x[s:s + RESIZE_CHUNK])
        c = c[:, None] if squeeze else c
        if tuple(c.shape[-2:]) != tuple(size):
            c = F.interpolate(c, size=size, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
        out[s:s + RESIZE_CHUNK] = c[:, 0] if squeeze else c
        if on_frames is not None:
            on_frames(min(s + RESIZE_CHUNK, T), T)
    return out


def to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """[T,...] in 0..1 (or uint8, returned as is) -> uint8, converted a few frames at a time."""
    if frames.dtype == torch.uint8:
        return frames
    out = torch.empty(frames.shape, dtype=torch.uint8)
    for s in range(0, frames.shape[0], RESIZE_CHUNK):
        out[s:s + RESIZE_CHUNK] = (frames[s:s + RESIZE_CHUNK].float().clamp(0, 1) * 255).round().to(torch.uint8)
    return out


def at_frame_size(model: LayeredAtlas, height: int, width: int) -> LayeredAtlas:
    """The same atlas answering in pixel coordinates of frames of ``height`` x ``width`` (same aspect).

    Args:
        model: a fitted atlas (at its working size).
        height, width: the frame size to use it at.

    Returns:
        A new :class:`LayeredAtlas` with the same parameters (shared tensors); ``model`` itself is returned when
        the size is already its own.
    """
    cfg = model.cfg
    if (cfg.height, cfg.width) == (height, width):
        return model
    gh, gw = cfg.grid_size()
    new_cfg: AtlasConfig = dataclasses.replace(
        cfg, height=int(height), width=int(width), grid_height=gh, grid_width=gw,
        colour_max_res=cfg.resolved_colour_max_res(),
        alpha_spatial_res=cfg.resolved_alpha_res() if cfg.has_foreground else cfg.alpha_spatial_res)
    device = next(model.parameters()).device
    out = LayeredAtlas(new_cfg).to(device)
    out.load_state_dict(model.state_dict())
    out.train(model.training)
    for p, q in zip(out.parameters(), model.parameters()):
        p.requires_grad_(q.requires_grad)
    return out


def working_inputs(frames: torch.Tensor, masks: Optional[torch.Tensor], size: tuple,
                   on_frames: Optional[Callable[[int, int], None]] = None) -> tuple:
    """The fit's working frames (fp16) and masks (float32) at ``size``.

    Args:
        frames: [T,3,H,W] uint8 or float in 0..1 (or a streamed video).
        masks: None, or [T,H,W] (uint8 0..255, bool or float 0..1, or a streamed video).
        size: (h, w).
        on_frames: ``(done, total)`` as the frames, then the masks, are resized.

    Returns:
        (frames16 [T,3,h,w], masks [T,h,w] or None).
    """
    frames16 = resize_video(frames, size, torch.float16, on_frames)
    m = None if masks is None else resize_video(masks, size, torch.float32, on_frames)
    return frames16, m
