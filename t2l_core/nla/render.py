"""Rendering atlas edits into frames (NLA, Kasten et al. 2021, Sec. 3.4, Eq. 15-16; the pre-trained atlas as
Text2LIVE's "video renderer", Sec. 3.2): each layer's edit is sampled at the frame's uv map and blended over
the original frame, one frame at a time.

The atlas images and their bounding boxes are described in :mod:`t2l_core.nla.atlas_images`.
"""

from __future__ import annotations

from typing import Iterator, Optional

import torch
import torch.nn.functional as F

from .atlas_images import AtlasBBox, AtlasEdit, bbox_from_extent, discretise_atlas, layer_uv_extent, make_bbox
from .atlas_model import LayeredAtlas
from .frame_edits import frame_edit_to_atlas, push_frame_edit
from .frame_maps import CHUNK, frame_alpha, frame_uv, iter_frame_maps
from .working_size import as_unit_float

# the names callers import from here (rendering, and the atlas images and maps it uses)
__all__ = ["CHUNK", "AtlasBBox", "AtlasEdit", "bbox_from_extent", "blend_edits", "discretise_atlas", "frame_alpha",
           "frame_edit_to_atlas", "frame_uv", "iter_frame_maps", "layer_uv_extent", "make_bbox", "push_frame_edit",
           "render_edits", "render_frame", "sample_atlas"]


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
def rendered_frames(model: LayeredAtlas, frames: torch.Tensor, fg_edit: Optional[AtlasEdit] = None,
                    bg_edit: Optional[AtlasEdit] = None) -> Iterator[tuple]:
    """Atlas edits rendered into one frame after another, for a video too long to hold rendered.

    Args:
        model: the atlas.
        frames: [T,3,H,W] in 0..1 or uint8 (or a streamed video), the ORIGINAL video, read a frame at a time.
        fg_edit, bg_edit: None, or the layer's atlas edit (a foreground edit needs a foreground layer).

    Yields:
        (t, [3,H,W] float32 in 0..1).
    """
    if fg_edit is not None and model.map_fg is None:
        raise ValueError("a foreground edit was given, but this atlas has no foreground layer (it was fitted without masks)")
    for t in range(frames.shape[0]):
        yield t, render_frame(model, t, as_unit_float(frames[t]), fg_edit, bg_edit)


def render_edits(model: LayeredAtlas, frames: torch.Tensor, fg_edit: Optional[AtlasEdit] = None,
                 bg_edit: Optional[AtlasEdit] = None, on_frame=None) -> torch.Tensor:
    """Render atlas edits into every frame (streamed; the output is preallocated).

    Args:
        model: the atlas.
        frames: [T,3,H,W] in 0..1 (or uint8), the ORIGINAL video.
        fg_edit, bg_edit: None, or the layer's atlas edit (a foreground edit needs a foreground layer).
        on_frame: ``(done, total)`` after each frame (progress and cancellation).

    Returns:
        [T,3,H,W] float32 in 0..1.
    """
    out = None
    for t, frame in rendered_frames(model, frames, fg_edit, bg_edit):
        if out is None:
            out = torch.empty(frames.shape, dtype=torch.float32)
        out[t] = frame
        if on_frame is not None:
            on_frame(t + 1, frames.shape[0])
    return out
