"""Applying edits made on an atlas to a video (paper section 3.2): the whole atlas through a trained
generator once, mapped back into every frame (eq. 10) and blended over the original video (NLA eqs. 15-16);
the paper's "frames baseline" for comparison; and image-trained layers applied to an atlas.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..edit.layer import EditLayer
from ..io.input_checks import require_finite
from ..nla.fit import FittedNLA
from ..nla.render import AtlasBBox, AtlasEdit, discretise_atlas, frame_alpha, render_frame
from .atlas_dataset import layer_key, training_bbox


def video_frames_u8(nla: FittedNLA, frames: Optional[torch.Tensor]) -> torch.Tensor:
    """The original video as uint8.

    Args:
        nla: the fitted atlas.
        frames: None (the frames stored with the atlas), or [T,3,H,W] float 0..1 or uint8, checked against
            the atlas.

    Returns:
        [T,3,H,W] uint8 on the CPU.

    Raises:
        ValueError: the frames' shape does not match the atlas, or they are not finite.
    """
    if frames is None:
        return nla.frames_u8
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must be [T,3,H,W], got {tuple(frames.shape)}")
    nla.check_frames(frames)
    require_finite(frames, "the frames")
    if frames.dtype == torch.uint8:
        return frames.cpu()
    return (frames.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()


@torch.no_grad()
def render_video(nla: FittedNLA, frames_u8: torch.Tensor, fg_edit: Optional[AtlasEdit] = None,
                 bg_edit: Optional[AtlasEdit] = None, on_frame=None) -> torch.Tensor:
    """The edited video: atlas edits blended over the frames, one frame at a time (only the output is
    allocated at full size).

    Args:
        nla: the fitted atlas.
        frames_u8: [T,3,H,W] uint8, the original video.
        fg_edit, bg_edit: None, or the layer's atlas edit.
        on_frame: None, or called as ``on_frame(t, T)`` after each frame (progress / cancellation).

    Returns:
        [T,3,H,W] float in 0..1.
    """
    T = frames_u8.shape[0]
    out = torch.empty(frames_u8.shape, dtype=torch.float32)
    for t in range(T):
        out[t] = render_frame(nla.model, t, frames_u8[t].float() / 255.0, fg_edit, bg_edit)
        if on_frame is not None:
            on_frame(t + 1, T)
    return out


@torch.no_grad()
def frames_baseline(layer: EditLayer, nla: FittedNLA, which: str, frames: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The paper's "frames baseline" (section 4.2): the generator applied to every frame independently
    (foreground input = frame x NLA opacity), blended with the same layer weights as an atlas edit.

    Args:
        layer: the trained edit layer.
        nla: the fitted atlas.
        which: ``"fg"``/``"foreground"`` or ``"bg"``/``"background"``.
        frames: None (the stored frames), or [T,3,H,W] float 0..1 or uint8.

    Returns:
        [T,3,H,W] float in 0..1.
    """
    key = layer_key(which)
    u8 = video_frames_u8(nla, frames)
    out = torch.empty(u8.shape, dtype=torch.float32)
    for t in range(u8.shape[0]):
        img = u8[t].float() / 255.0
        an = frame_alpha(nla.model, t)
        x = img * an[None] if key == "fg" else img
        color, alpha = layer.predict(x[None])
        w = (an if key == "fg" else 1 - an)[None] * alpha[0]
        out[t] = (img + w * (color[0] - img)).clamp(0, 1)
    return out


@torch.no_grad()
def whole_atlas_edit(gen: torch.nn.Module, atlas: torch.Tensor, bbox: AtlasBBox) -> AtlasEdit:
    """The whole atlas through the generator once (paper section 3.2: the edit is made once in the atlas and
    mapped into every frame).

    Args:
        gen: the generator.
        atlas: [1,3,Ha,Wa] in 0..1, the discretised atlas.
        bbox: the uv rectangle the atlas covers.

    Returns:
        The RGBA edit over ``bbox``, on the CPU.
    """
    out = gen(atlas).float().cpu()[0]
    return AtlasEdit(rgb=out[:3], alpha=out[3], bbox=bbox)


def layer_atlas_bbox(layer: EditLayer, nla: FittedNLA, which: Optional[str] = None) -> AtlasBBox:
    """The atlas framing an edit layer runs on.

    Args:
        layer: the edit layer.
        nla: the fitted atlas.
        which: None, or the atlas layer (``"fg"``/``"bg"``) to apply it to; required for image-trained layers.

    Returns:
        The framing it was trained on (video layers), else the NLA's discretised atlas of ``which`` (an
        image-trained layer applied to an atlas: the paper's atlas baseline).

    Raises:
        ValueError: not an edit layer, trained on another atlas or layer, or ``which`` missing or absent.
    """
    if not isinstance(layer, EditLayer):
        raise ValueError("an edit layer must come from Train Edit Layer (Text2LIVE) or EditLayer.load")
    atlas_info = layer.info.get("atlas")
    if atlas_info:
        trained = atlas_info["layer"]
        if which is not None and layer_key(which) != trained:
            raise ValueError(f"this edit layer was trained on the {'foreground' if trained == 'fg' else 'background'} "
                             f"atlas; connect it to the {trained}_edit_layer input")
        if (atlas_info.get("frames"), atlas_info.get("height"), atlas_info.get("width")) != (nla.num_frames, *nla.size):
            raise ValueError(
                f"this edit layer was trained on an atlas of {atlas_info.get('frames')} frames of "
                f"{atlas_info.get('width')}x{atlas_info.get('height')}, not on this one ({nla.num_frames} frames of "
                f"{nla.size[1]}x{nla.size[0]}): use the atlas it was trained on")
        return AtlasBBox.from_dict(atlas_info["bbox"])
    if which is None:
        raise ValueError("this edit layer was trained on an image: say which atlas layer (fg or bg) to apply it to")
    key = layer_key(which)
    if key not in nla.bboxes:
        raise ValueError(f"this atlas has no {key} layer")
    return training_bbox(nla.bboxes[key], 1.0, 2 ** layer.generator_config.num_scales + 1)


def atlas_edit_from_layer(layer: EditLayer, nla: FittedNLA, which: Optional[str] = None,
                          device: torch.device | str = "cpu", memory_budget: Optional[int] = None,
                          on_progress=None, resolution: str = "working") -> AtlasEdit:
    """Run an edit layer once on the atlas image it belongs to.

    Args:
        layer, nla, which: as :func:`layer_atlas_bbox`.
        device: where the generator runs.
        memory_budget: bytes one generator pass may use (:meth:`EditLayer.predict`).
        on_progress: None, or called as ``on_progress(i, n)`` while the atlas image is sampled.
        resolution: as in :meth:`EditLayer.predict`: a layer trained on this atlas runs at its training size
            either way; an image-trained layer runs at its working size and is upsampled guided by the atlas
            image (``"working"``), or at the atlas image's size (``"native"``).

    Returns:
        The RGBA edit over the atlas framing, on the CPU, for :func:`t2l_core.nla.render.render_edits`.
    """
    bbox = layer_atlas_bbox(layer, nla, which)
    atlas = discretise_atlas(nla.model, bbox, on_chunk=on_progress)[None]
    with torch.inference_mode(False):
        color, alpha = layer.predict(atlas.to(device), device=device, memory_budget=memory_budget,
                                     resolution=resolution)
    return AtlasEdit(rgb=color[0].float().cpu(), alpha=alpha[0, 0].float().cpu(), bbox=bbox)
