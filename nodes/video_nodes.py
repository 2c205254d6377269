"""Video nodes: fit a layered neural atlas (NLAFit), render atlas edits into the video (AtlasRender),
save/load fitted atlases. Thin wrappers over t2l_core.api."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

import torch

from ..t2l_core.api import (AtlasEdit, FittedNLA, NLAFitConfig, atlas_edit_from_layer, choices_of,
                            estimate_fit_memory, export_for_compositing, fit_nla, fit_run_files, frame_edit_to_atlas,
                            read_nla_header, render_edits, require_raft_weights, save_nla)
from . import comfy_bridge as cb
from . import model_management as mm
from . import video_io
from .declarations import Rule, SavesFile, add_queue_validation, check_inputs, file_signature, setting_widget

CATEGORY = "Text2LIVE/video"
log = logging.getLogger("text2live")


def _output_folder(name: str) -> Path:
    """``<output>/text2live/<name>``, created."""
    d = cb.output_dir() / name
    d.mkdir(parents=True, exist_ok=True)
    return d


def _nla_dir() -> Path:
    return _output_folder("nla")


def _atlas_path(file: str, path: str = "") -> str:
    """Load NLA's atlas file: ``path`` when set, else ``file`` in output/text2live/nla."""
    return path.strip() if path and path.strip() else str(_nla_dir() / file)


def _hwc(img: torch.Tensor) -> torch.Tensor:
    """[3,H,W] -> IMAGE [1,H,W,3]."""
    return cb.bchw_to_image(img[None])


class NLAFit:
    NODE_ID = "T2L_NLAFit"
    DISPLAY_NAME = "Fit Layered Atlas (NLA)"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Fits a Neural Layered Atlas to your video: every frame is explained as a background atlas (one image of "
        "the whole scene, unwrapped over the camera motion) and, with masks, a foreground atlas plus a per-frame "
        "foreground opacity. Edit the atlas images with any node (painting, img2img) and map them back with "
        "Atlas Render: the edit follows the video's motion. Connect the video as an IMAGE batch (frames) or as "
        "ComfyUI's VIDEO (video, e.g. Load Video); the atlas keeps a VIDEO's frame rate and sound for Atlas "
        "Render's video output. Optical flow comes from torchvision RAFT when its "
        "weights are in models/text2live or torch's cache, otherwise from a built-in estimator (no download). "
        "Cancelling keeps a checkpoint (and the optical flow); running again with the same inputs resumes it. A "
        "finished fit removes both unless keep_checkpoint is on."
    )
    RETURN_TYPES = ("T2L_NLA", "IMAGE", "IMAGE", "IMAGE", "MASK", "STRING")
    RETURN_NAMES = ("nla", "reconstruction", "fg_atlas", "bg_atlas", "fg_opacity", "info")
    OUTPUT_TOOLTIPS = (
        "The fitted atlas, for Atlas Render and Save Atlas.",
        "The video rebuilt from the atlases (compare with the input to judge the fit; PSNR in 'info').",
        "Foreground atlas image (edit it and connect it to Atlas Render's fg_atlas). A black 64x64 image when "
        "no masks were given.",
        "Background atlas image (edit it and connect it to Atlas Render's bg_atlas).",
        "Foreground opacity per frame (1 = foreground); zeros without masks.",
        "Reconstruction PSNR, iterations, flow estimator and atlas sizes.",
    )
    FUNCTION = "fit"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "iterations": ("INT", setting_widget(NLAFitConfig, "iterations", step=10)),
                "atlas_resolution": ("INT", setting_widget(NLAFitConfig, "atlas_resolution", step=8)),
                "seed": ("INT", setting_widget(NLAFitConfig, "seed", control_after_generate=True)),
            },
            "optional": {
                "frames": ("IMAGE", {"tooltip": "The video as an IMAGE batch (one image per frame, all the same "
                                     "size). Connect this or video; with both, the pictures come from here (e.g. "
                                     "the video's frames resized) and the frame rate and sound from video."}),
                "masks": ("MASK", {"tooltip": "Foreground masks, one per frame (from any segmentation node; 1 = "
                                   "foreground). Without masks only a background atlas is fitted (enough for "
                                   "scene-wide edits)."}),
                "batch_pixels": ("INT", setting_widget(NLAFitConfig, "batch_pixels", step=512)),
                "flow": (list(choices_of(NLAFitConfig, "flow")), setting_widget(NLAFitConfig, "flow")),
                "resume": ("BOOLEAN", {"default": True, "tooltip":
                           "Continue from the checkpoint a cancelled run with the same inputs and settings left "
                           "behind. A checkpoint of another run is not used (fitted from the start)."}),
                "keep_checkpoint": ("BOOLEAN", {"default": False, "tooltip":
                                    "Keep the checkpoint and the optical flow (output/text2live/nla) when the fit "
                                    "finishes, e.g. to fit the same video again without recomputing the flow. "
                                    "Off: only a cancelled or failed fit leaves them."}),
                "video": ("VIDEO", {"tooltip": "The video as ComfyUI's VIDEO (e.g. from Load Video), instead of "
                                    "frames. The atlas keeps its frame rate and sound for Atlas Render's video "
                                    "output (also when frames gives the pictures)."}),
                "working_size": ("INT", setting_widget(NLAFitConfig, "working_size", step=16)),
            },
        }

    def fit(self, frames=None, **widgets):
        w = check_inputs(type(self), dict(widgets, frames=frames))
        iterations, atlas_resolution, seed, masks, flow = (w[k] for k in ("iterations", "atlas_resolution", "seed",
                                                                          "masks", "flow"))
        source = video_io.frames_and_sound(frames, w["video"])
        with cb.training_mode():
            x = cb.image_to_bchw(source.images, source.source)
            m = None
            if masks is not None:
                m = cb.mask_to_bhw(masks, "masks")
                if m.shape[0] != x.shape[0] or tuple(m.shape[-2:]) != tuple(x.shape[-2:]):
                    raise ValueError(
                        f"masks are {m.shape[0]} x {m.shape[2]}x{m.shape[1]} but the frames are {x.shape[0]} x "
                        f"{x.shape[3]}x{x.shape[2]}: give one mask per frame at the frames' size.")
            cfg = NLAFitConfig(iterations=int(iterations), seed=int(seed), batch_pixels=int(w["batch_pixels"]),
                               flow=flow, atlas_resolution=int(atlas_resolution), working_size=int(w["working_size"]))
            device = cb.torch_device()
            need = estimate_fit_memory(x.shape[0], x.shape[2], x.shape[3], m is not None, cfg.batch_pixels,
                                       cfg.working_size)
            cb.free_memory(need, device)
            ckpt, flow_cache = (str(p) for p in fit_run_files(_nla_dir(), x, m, cfg))
            hooks = cb.make_hooks(preview_every=50)
            try:
                nla = fit_nla(x, m, cfg, hooks=hooks, device=device,
                              checkpoint_path=ckpt, resume=bool(w["resume"]), flow_search_dirs=cb.model_folders(),
                              flow_cache_path=flow_cache, keep_checkpoint=bool(w["keep_checkpoint"]))
            finally:
                cb.soft_empty_cache()
            nla.fps = source.fps
            nla.audio, nla.audio_rate = video_io.audio_to_core(source.audio)
            mm.use(mm.manage_atlas(nla))  # ComfyUI's model management now holds it (on the device)
            rec, alpha = (r.float() / 255 if r.dtype == torch.uint8 else r for r in nla.reconstruction)
            nla.reconstruction = None  # keep the cached T2L_NLA small
            atlases = nla.atlas_images(on_progress=hooks.phase_callback("atlas images (texel chunks)"))
            fg = _hwc(atlases["fg"]) if "fg" in atlases else torch.zeros(1, 64, 64, 3)
            bg = _hwc(atlases["bg"])
            sizes = ", ".join(f"{k} atlas {v.shape[2]}x{v.shape[1]}" for k, v in atlases.items())
            info = (f"reconstruction PSNR {nla.psnr:.2f} dB after {nla.steps} steps on {x.shape[0]} frames "
                    f"{x.shape[3]}x{x.shape[2]}; flow: {nla.flow_estimator}; {sizes}")
            if source.fps:
                info += f"; source video {source.fps:g} fps" + (", with sound" if nla.audio is not None else "")
            if nla.notes:
                info += "\n" + "\n".join(nla.notes)
                cb.tell_user("Fit Layered Atlas", nla.notes)
            log.info("Text2LIVE NLAFit: %s", info)
            return {"ui": {"text": [info]},
                    "result": (nla, cb.bchw_to_image(rec), cb.to_output(fg), cb.to_output(bg), cb.to_output(alpha), info)}


def _edit_from_inputs(nla: FittedNLA, layer: str, image: Optional[torch.Tensor], opacity: Optional[torch.Tensor]) -> Optional[AtlasEdit]:
    """IMAGE (+ optional opacity MASK) painted on a layer's atlas image -> AtlasEdit over that layer's bbox.

    None when nothing is connected or the edit is fully transparent (an exact no-op).
    """
    if image is None:
        return None
    if image.ndim == 4 and image.shape[0] != 1:
        raise ValueError(f"{layer}_atlas must be a single image, got a batch of {image.shape[0]}")
    img = image if image.ndim == 4 else image[None]
    rgb = cb.image_to_bchw(img, f"{layer}_atlas")[0]
    if opacity is not None:
        a = cb.mask_to_bhw(opacity, f"{layer}_opacity")[0]
        if tuple(a.shape) != tuple(rgb.shape[-2:]):
            raise ValueError(f"{layer}_opacity is {a.shape[1]}x{a.shape[0]} but {layer}_atlas is "
                             f"{rgb.shape[2]}x{rgb.shape[1]}: they must have the same size.")
    elif img.shape[-1] == 4:
        a = img[0, ..., 3].float().clone()
    else:
        a = torch.ones(rgb.shape[-2:])
    if not bool((a > 0).any()):
        return None  # fully transparent: blending it would return the original frames exactly
    if layer not in nla.bboxes:
        raise ValueError(f"a {layer} atlas edit was given, but this atlas has no {layer} layer (fit it with masks).")
    box = nla.bboxes[layer]
    aspect_img = rgb.shape[2] / rgb.shape[1]
    aspect_box = box.width / box.height
    if abs(aspect_img / aspect_box - 1) > 0.05:
        raise ValueError(f"the {layer} atlas edit is {rgb.shape[2]}x{rgb.shape[1]} but the {layer} atlas is "
                         f"{box.width}x{box.height}: edit the atlas image without cropping (resizing is fine).")
    return AtlasEdit(rgb=rgb, alpha=a, bbox=box)


def _edit_from_layer(nla: FittedNLA, layer: str, edit_layer, painted: Optional[AtlasEdit],
                     notes: Optional[list] = None) -> Optional[AtlasEdit]:
    """A T2L_EDIT_LAYER -> AtlasEdit: the layer's generator run once on the atlas it was trained on.
    Fallbacks the layer took (generated below the atlas's resolution for lack of memory) go to ``notes``."""
    if edit_layer is None:
        return painted
    seen = len(edit_layer.notes)
    hooks = cb.make_hooks()
    with cb.training_mode():
        edit = atlas_edit_from_layer(edit_layer, nla, layer, device=cb.torch_device(),
                                     on_progress=hooks.phase_callback(f"{layer} atlas for the edit layer (texel chunks)"))
    edit_layer.drop_generators()
    if notes is not None:
        notes += [f"{layer}_edit_layer: {n}" for n in edit_layer.notes[seen:]]
    return edit


def _layer_edits(nla: FittedNLA, edits: dict, notes: list) -> tuple:
    """(fg, bg) AtlasEdits from Atlas Render's edit inputs (``<layer>_atlas``, ``<layer>_opacity``,
    ``<layer>_edit_layer``); the painted images are read and checked before any edit layer runs."""
    painted = {layer: _edit_from_inputs(nla, layer, edits[f"{layer}_atlas"], edits[f"{layer}_opacity"])
               for layer in ("fg", "bg")}
    return tuple(_edit_from_layer(nla, layer, edits[f"{layer}_edit_layer"], painted[layer], notes)
                 for layer in ("fg", "bg"))


class AtlasRender:
    NODE_ID = "T2L_AtlasRender"
    DISPLAY_NAME = "Atlas Render (NLA edits -> video)"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Maps edited atlas images back into every frame (bilinear) and blends them over the original frames "
        "(NLA eq. 15/16): the edit moves with the video. Any node can produce the edit: paint on the fg/bg atlas "
        "image from Fit Layered Atlas, or img2img it, and give an opacity MASK (1 = edit visible). Without "
        "edits the original frames come back unchanged. The result comes as an IMAGE batch and as a VIDEO (for "
        "Save Video) at the source video's frame rate, with its sound."
    )
    RETURN_TYPES = ("IMAGE", "VIDEO")
    RETURN_NAMES = ("frames", "video")
    OUTPUT_TOOLTIPS = (
        "The edited video as an IMAGE batch.",
        "The edited video as ComfyUI's VIDEO (for Save Video), at the source video's frame rate and with its "
        "sound: from the video input, else from the video the atlas was fitted on. An atlas fitted on IMAGE "
        f"frames has neither: {video_io.DEFAULT_FPS:g} fps, no sound.",
    )
    FUNCTION = "render"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "nla": ("T2L_NLA", {"tooltip": "A fitted atlas from Fit Layered Atlas or Load Atlas."}),
            },
            "optional": {
                "fg_atlas": ("IMAGE", {"tooltip": "Edited foreground atlas image (same framing as the fg_atlas output; "
                                       "any resolution). Without fg_opacity the whole image is applied, or its 4th "
                                       "channel if it has one."}),
                "fg_opacity": ("MASK", {"tooltip": "Opacity of the foreground edit, same size as fg_atlas (1 = edit "
                                        "visible, 0 = original). From LoadImage's alpha, use InvertMask first."}),
                "bg_atlas": ("IMAGE", {"tooltip": "Edited background atlas image (same framing as the bg_atlas output)."}),
                "bg_opacity": ("MASK", {"tooltip": "Opacity of the background edit, same size as bg_atlas (1 = visible)."}),
                "frames": ("IMAGE", {"tooltip": "Original frames to blend over (default: the frames the atlas was "
                                     "fitted on). Must have the same size and count."}),
                "fg_edit_layer": ("T2L_EDIT_LAYER", {"tooltip": "A layer from Train Edit Layer trained on this atlas's "
                                  "foreground (or any edit layer, run on the foreground atlas). Instead of fg_atlas."}),
                "bg_edit_layer": ("T2L_EDIT_LAYER", {"tooltip": "A layer from Train Edit Layer trained on this atlas's "
                                  "background (or any edit layer, run on the background atlas). Instead of bg_atlas."}),
                "video": ("VIDEO", {"tooltip": "Original video to blend over, as ComfyUI's VIDEO (instead of "
                                    "frames; same size and count). Its frame rate and sound go to the video output. "
                                    "With frames connected too, the pictures come from frames."}),
            },
        }

    def render(self, nla, fg_atlas=None, fg_opacity=None, bg_atlas=None, bg_opacity=None, frames=None,
               fg_edit_layer=None, bg_edit_layer=None, video=None):
        edits = {"fg_atlas": fg_atlas, "fg_opacity": fg_opacity, "bg_atlas": bg_atlas, "bg_opacity": bg_opacity,
                 "fg_edit_layer": fg_edit_layer, "bg_edit_layer": bg_edit_layer}
        check_inputs(type(self), edits)
        mm.use(nla)
        source = video_io.frames_and_sound(frames, video)
        if source.images is not None:  # checked before any work
            base = cb.image_to_bchw(source.images, source.source)
            nla.check_frames(base)
        else:
            base = nla.original_frames()
        if video is not None:
            fps, audio = source.fps or nla.fps, source.audio
        else:
            fps, audio = nla.fps, video_io.core_to_audio(nla.audio, nla.audio_rate)
        notes: list = []
        fg, bg = _layer_edits(nla, edits, notes)
        hooks = cb.make_hooks()
        out = render_edits(nla.model, base, fg, bg, on_frame=hooks.phase_callback("rendering (frames)"))
        cb.tell_user("Atlas Render", notes)
        image = cb.bchw_to_image(out)
        return cb.with_notes((image, video_io.make_video(image, fps, audio)), notes)


class ExportForCompositing(SavesFile):
    NODE_ID = "T2L_ExportForCompositing"
    DISPLAY_NAME = "Export for Compositing (NLA)"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Writes files a compositing program (Nuke, After Effects, Fusion, Resolve) reads, into a new folder under "
        "output/text2live/export/: the edit of every frame as RGBA PNGs with straight alpha (laid over the "
        "original frames they give Atlas Render's result), per-frame STMaps of each atlas layer (16-bit PNG: "
        "red = s, green = t into the layer's atlas image, Nuke's convention; alpha = the layer's share of the "
        "pixel) and the atlas images they point into. Edit inputs as in Atlas Render; without an edit only the "
        "maps and atlases are written."
    )
    RETURN_NAMES = ("folder",)
    OUTPUT_TOOLTIPS = ("Full path of the folder written.",)

    @classmethod
    def INPUT_TYPES(cls):
        render_inputs = AtlasRender.INPUT_TYPES()["optional"]
        return {
            "required": {
                "nla": ("T2L_NLA", {"tooltip": "A fitted atlas from Fit Layered Atlas or Load Atlas."}),
                "folder_prefix": ("STRING", {"default": "export", "tooltip":
                                  "Name of the folder written under output/text2live/export/; a counter is appended."}),
            },
            "optional": {k: v for k, v in render_inputs.items() if k not in ("frames", "video")},
        }

    def save(self, nla, folder_prefix="export", fg_atlas=None, fg_opacity=None, bg_atlas=None, bg_opacity=None,
             fg_edit_layer=None, bg_edit_layer=None):
        edits = {"fg_atlas": fg_atlas, "fg_opacity": fg_opacity, "bg_atlas": bg_atlas, "bg_opacity": bg_opacity,
                 "fg_edit_layer": fg_edit_layer, "bg_edit_layer": bg_edit_layer}
        check_inputs(type(self), {"folder_prefix": folder_prefix, **edits})
        mm.use(nla)
        notes: list = []
        fg, bg = _layer_edits(nla, edits, notes)
        prefix = os.path.basename(folder_prefix.strip()) or "export"
        folder = cb.numbered_file(_output_folder("export"), prefix, suffix="")
        hooks = cb.make_hooks()
        export_for_compositing(nla, str(folder), fg, bg, on_frame=hooks.phase_callback("export (frames)"))
        cb.tell_user("Export for Compositing", notes)
        return self.saved(str(folder))


class SaveNLA(SavesFile):
    NODE_ID = "T2L_SaveNLA"
    DISPLAY_NAME = "Save Atlas (NLA)"
    CATEGORY = CATEGORY
    DESCRIPTION = "Saves a fitted atlas (with its frames, config and atlas framing) as a .safetensors file under output/text2live/nla/."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "nla": ("T2L_NLA", {"tooltip": "The fitted atlas to save."}),
            "filename_prefix": ("STRING", {"default": "atlas", "tooltip": "File name prefix; a counter is appended."}),
        }}

    def save(self, nla, filename_prefix="atlas"):
        prefix = os.path.basename(filename_prefix.strip()) or "atlas"
        mm.use(nla)  # weights ComfyUI dropped are read back
        path = save_nla(nla, str(cb.numbered_file(_nla_dir(), prefix)))
        return self.saved(path)


NO_ATLAS = "(none saved yet)"  # Load Atlas's file list while no atlas is saved


class LoadNLA:
    NODE_ID = "T2L_LoadNLA"
    DISPLAY_NAME = "Load Atlas (NLA)"
    CATEGORY = CATEGORY
    DESCRIPTION = "Loads an atlas saved by Save Atlas (output/text2live/nla/) or any path to such a .safetensors file."
    RETURN_TYPES = ("T2L_NLA",)
    RETURN_NAMES = ("nla",)
    OUTPUT_TOOLTIPS = ("The loaded atlas, for Atlas Render.",)
    FUNCTION = "load"

    @classmethod
    def _files(cls) -> list:
        return sorted(p.name for p in _nla_dir().glob("*.safetensors") if not p.name.startswith(("checkpoint_", "flow_")))

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "file": (cls._files() or [NO_ATLAS], {"tooltip": "A saved atlas in output/text2live/nla/."}),
        }, "optional": {
            "path": ("STRING", {"default": "", "tooltip": "Full path of an atlas file; overrides 'file' when set."}),
        }}

    @classmethod
    def IS_CHANGED(cls, file, path=""):
        return file_signature(_atlas_path(file, path))

    def load(self, file, path=""):
        check_inputs(type(self), {"file": file, "path": path})
        return (mm.load_atlas_file(_atlas_path(file, path)),)


class FrameEditToAtlas:
    NODE_ID = "T2L_FrameEditToAtlas"
    DISPLAY_NAME = "Frame Edit To Atlas (NLA)"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Paint (or img2img) one frame, then push that edit into the atlases: connect the outputs to Atlas Render "
        "and the painted keyframe propagates to the whole video, following its motion. Pixels of the foreground "
        "object go to the foreground atlas, the rest to the background atlas (by the fitted opacity)."
    )
    RETURN_TYPES = ("IMAGE", "MASK", "IMAGE", "MASK")
    RETURN_NAMES = ("fg_atlas", "fg_opacity", "bg_atlas", "bg_opacity")
    OUTPUT_TOOLTIPS = (
        "The edit in foreground-atlas space (connect to Atlas Render's fg_atlas). Empty (fully transparent) when "
        "the atlas has no foreground layer or the edit does not touch the object.",
        "Opacity of the foreground edit (connect to Atlas Render's fg_opacity).",
        "The edit in background-atlas space (connect to Atlas Render's bg_atlas).",
        "Opacity of the background edit (connect to Atlas Render's bg_opacity).",
    )
    FUNCTION = "push"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "nla": ("T2L_NLA", {"tooltip": "A fitted atlas from Fit Layered Atlas or Load Atlas."}),
                "edited_frame": ("IMAGE", {"tooltip": "The painted frame, same size as the video's frames. "
                                           "A batch of frames uses its first image."}),
                "opacity": ("MASK", {"tooltip": "Where the edit is (1 = edited, 0 = keep the original). From "
                                     "LoadImage's alpha, use InvertMask first."}),
                "frame_index": ("INT", {"default": 0, "min": 0, "max": 100000, "tooltip":
                                "Which frame (0-based) the edit was painted on."}),
            },
        }

    def push(self, nla, edited_frame, opacity, frame_index=0):
        rgb = cb.image_to_bchw(edited_frame, "edited_frame")[0]
        a = cb.mask_to_bhw(opacity, "opacity")[0]
        mm.use(nla)
        edits = frame_edit_to_atlas(nla, int(frame_index), rgb, a)
        outs = []
        for layer in ("fg", "bg"):
            e = edits.get(layer)
            if e is None:  # no such layer: a fully transparent edit, which Atlas Render skips
                outs += [cb.to_output(torch.zeros(1, 64, 64, 3)), cb.to_output(torch.zeros(1, 64, 64))]
            else:
                outs += [cb.bchw_to_image(e.rgb[None]), cb.to_output(e.alpha[None])]
        return tuple(outs)


def _raft_found(w: dict) -> None:
    if w["flow"] == "raft":
        require_raft_weights(cb.model_folders())


def _frames_or_video(w: dict) -> None:
    if w["frames"] is None and w["video"] is None:
        raise ValueError("connect the video: its frames (frames, an IMAGE batch) or the video itself (video, e.g. "
                         "from Load Video)")


NLAFit.RULES = (Rule(("flow",), _raft_found), Rule((), _frames_or_video, connections=("frames", "video")))
add_queue_validation(NLAFit)


def _one_edit_per_layer(layer: str):
    """The rule of one atlas layer's edit inputs: an opacity needs its atlas image; an image and a trained
    layer exclude each other."""

    def check(w: dict) -> None:
        if w[f"{layer}_opacity"] is not None and w[f"{layer}_atlas"] is None:
            raise ValueError(f"{layer}_opacity was given without {layer}_atlas: connect the edited atlas image too.")
        if w[f"{layer}_atlas"] is not None and w[f"{layer}_edit_layer"] is not None:
            raise ValueError(f"connect either {layer}_atlas or {layer}_edit_layer, not both")

    return Rule((), check, connections=(f"{layer}_atlas", f"{layer}_opacity", f"{layer}_edit_layer"))


AtlasRender.RULES = (_one_edit_per_layer("fg"), _one_edit_per_layer("bg"))
add_queue_validation(AtlasRender)
ExportForCompositing.RULES = AtlasRender.RULES  # the same edit inputs
add_queue_validation(ExportForCompositing)


def _atlas_file_readable(w: dict) -> None:
    """'path' (when set) or 'file' names a readable atlas file."""
    path = (w["path"] or "").strip()
    if path:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"path: atlas file '{path}' not found: give the full path of a file saved by "
                                    "Save Atlas, or clear 'path' to use 'file'.")
        read_nla_header(path)
        return
    file = w["file"]
    if file == NO_ATLAS:
        raise ValueError("file: no atlas in output/text2live/nla yet: save one with Save Atlas and press R to "
                         "refresh the list, or give a full path in 'path'.")
    p = _atlas_path(file)
    if not os.path.isfile(p):
        raise FileNotFoundError(f"file: atlas file '{file}' not found in output/text2live/nla ({_nla_dir()}): save "
                                "one with Save Atlas and press R to refresh the list, or give a full path in 'path'.")
    read_nla_header(p)


LoadNLA.RULES = (Rule(("file", "path"), _atlas_file_readable, own_choices=True),)
add_queue_validation(LoadNLA)

NODE_CLASSES = [NLAFit, AtlasRender, SaveNLA, LoadNLA, FrameEditToAtlas, ExportForCompositing]
