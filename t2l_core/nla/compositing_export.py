"""Files for compositing programs: the edit of every frame as an RGBA image sequence, and per frame and layer an
STMap that says where each pixel reads the layer's atlas image.

- ``edit/edit_NNNNN.png``: 8-bit RGBA, straight (not premultiplied) alpha. Laid over the original frame with
  the ordinary *over* operation it gives the rendered frame (NLA Sec. 3.4, Eq. 15-16): the blend
  ``I + A_f (E_f - I) + A_b (E_b - I)`` with ``A_f = alpha a_f`` and ``A_b = (1 - alpha) a_b`` is
  ``A C + (1 - A) I`` for ``A = A_f + A_b`` (at most 1) and ``C = (A_f E_f + A_b E_b) / A``.
- ``stmap_<layer>/stmap_<layer>_NNNNN.png``: 16-bit RGBA in Nuke's STMap convention: red = s, green = t, the
  position in ``atlas_<layer>.png`` as a fraction of its width and height, t counted from the bottom edge,
  pixel centres at (x + 0.5) / width; blue = 0; alpha = how much of the frame pixel the layer shows (alpha for
  the foreground, 1 - alpha for the background). Positions outside the atlas image are clipped to 0..1.
- ``atlas_<layer>.png``: the fitted atlas images the maps point into (8-bit RGB), and with an edit
  ``edit_atlas_<layer>.png`` (8-bit RGBA), to be warped by the maps in the compositing program.
"""

from __future__ import annotations

import os
from typing import Callable, Optional

import torch

from ..io.image_files import save_png, save_png16
from .atlas_images import AtlasBBox
from .fitted import FittedNLA
from .frame_maps import iter_frame_maps
from .render import AtlasEdit, sample_atlas


def frame_edit_rgba(uv: dict[str, torch.Tensor], alpha: torch.Tensor, fg_edit: Optional[AtlasEdit],
                    bg_edit: Optional[AtlasEdit]) -> torch.Tensor:
    """A frame's edit as one straight-alpha RGBA layer over the original frame.

    Args:
        uv: the frame's maps, {layer: [H,W,2]} (:func:`~t2l_core.nla.frame_maps.iter_frame_maps`).
        alpha: the frame's foreground opacity [H,W] in 0..1.
        fg_edit, bg_edit: None, or the layer's atlas edit.

    Returns:
        [4,H,W] in 0..1: colour C and opacity A with ``A C + (1 - A) frame`` = the rendered frame.
    """
    colour = torch.zeros(3, *alpha.shape)
    opacity = torch.zeros(alpha.shape)
    for edit, layer, weight in ((fg_edit, "fg", alpha), (bg_edit, "bg", 1 - alpha)):
        if edit is None:
            continue
        rgba = sample_atlas(edit.rgba(), edit.bbox, uv[layer]).clamp(0, 1).cpu()
        a = weight * rgba[3]
        colour += a * rgba[:3]
        opacity += a
    return torch.cat([colour / opacity.clamp_min(1e-8), opacity[None]]).clamp(0, 1)


def frame_stmap(uv: torch.Tensor, alpha: torch.Tensor, layer: str, bbox: AtlasBBox) -> torch.Tensor:
    """Where every pixel of a frame reads the layer's atlas image, as an STMap (see the module docstring).

    Args:
        uv: the layer's uv map of the frame, [H,W,2].
        alpha: the frame's foreground opacity [H,W] in 0..1.
        layer: "fg" or "bg".
        bbox: the framing of the layer's atlas image.

    Returns:
        [4,H,W] in 0..1: (s, t, 0, the layer's share of the pixel).
    """
    st = (bbox.to_grid(uv) + 1) / 2  # [H,W,2], align_corners=False: texel j spans [j, j+1)
    share = alpha if layer == "fg" else 1 - alpha
    return torch.stack([st[..., 0], 1 - st[..., 1], torch.zeros_like(share), share]).clamp(0, 1)


def export_for_compositing(nla: FittedNLA, folder: str, fg_edit: Optional[AtlasEdit] = None,
                           bg_edit: Optional[AtlasEdit] = None,
                           on_frame: Optional[Callable[[int, int], None]] = None) -> dict[str, list[str]]:
    """Write the edit sequence (when an edit is given), every layer's STMaps and the atlas images.

    Args:
        nla: the fitted atlas.
        folder: the output folder (created).
        fg_edit, bg_edit: None, or the layer's atlas edit.
        on_frame: ``(done, total)`` after each frame (progress and cancellation).

    Returns:
        {"edit": [...], "stmap_fg": [...], "stmap_bg": [...], "atlas": [...]}: the files written, frames in order.
    """
    if fg_edit is not None and "fg" not in nla.bboxes:
        raise ValueError("a foreground edit was given, but this atlas has no foreground layer (it was fitted without masks)")
    model = nla.model
    written: dict[str, list[str]] = {"edit": [], "atlas": []}
    for layer, image in nla.atlas_images().items():
        written["atlas"].append(str(save_png(image, os.path.join(folder, f"atlas_{layer}.png"))))
    for layer, edit in (("fg", fg_edit), ("bg", bg_edit)):
        if edit is not None:
            written["atlas"].append(str(save_png(edit.rgba(), os.path.join(folder, f"edit_atlas_{layer}.png"))))
    for layer in model.layers():
        written[f"stmap_{layer}"] = []
    T = nla.num_frames
    for t, uv, alpha in iter_frame_maps(model):  # each frame's maps computed once, for every file of the frame
        if fg_edit is not None or bg_edit is not None:
            path = os.path.join(folder, "edit", f"edit_{t:05d}.png")
            written["edit"].append(str(save_png(frame_edit_rgba(uv, alpha, fg_edit, bg_edit), path)))
        for layer in model.layers():
            path = os.path.join(folder, f"stmap_{layer}", f"stmap_{layer}_{t:05d}.png")
            stmap = frame_stmap(uv[layer], alpha, layer, nla.bboxes[layer])
            written[f"stmap_{layer}"].append(str(save_png16(stmap, path)))
        if on_frame is not None:
            on_frame(t + 1, T)
    return written
