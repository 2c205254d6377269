"""Train Edit Layer, Apply Edit Layer and Composite nodes (thin wrappers over t2l_core)."""

from __future__ import annotations


from ..t2l_core.api import (PHASE_KEY, EditConfig, EditLayer, VideoEditConfig, as_prompt_list, composite,
                            default_checkpoint_path, default_of, default_video_checkpoint_path, edit_training_bytes,
                            on_green_screen, parse_hex_color, solid_background, startup_phase, train_edit_layer,
                            train_video_edit_layer, video_config_from_image_settings)
from . import comfy_bridge as cb
from . import model_management as mm
from .declarations import Rule, add_queue_validation, check_inputs, setting_widget

IMAGE_ITERATIONS = default_of(EditConfig, "iters")  # the paper's image setting and the iterations widget's default
VIDEO_ITERATIONS = default_of(VideoEditConfig, "iters")

# widget value -> t2l_core value
GENERATOR_RESOLUTIONS = {"working size": "working", "native": "native"}
PRECISIONS = {"auto": "auto", "fp32": "off", "bf16 CLIP": "bf16-clip"}
_RESOLUTION_TIP = ("working size = the generator runs at the size it was trained at (what the previews showed) and "
                   "the layer is upsampled to the image's resolution following the image's edges (opacity 0 keeps "
                   "the original pixels exactly); native = the generator runs at the image's own resolution "
                   "(texture at another scale than trained, much more memory on large images).")

_MASK_TIP = "Opacity (1 = edit visible). For JoinImageWithAlpha invert it first; ImageCompositeMasked takes it as is."


def _outputs(out) -> tuple:
    return (cb.bchw_to_image(out.composite), cb.bchw_to_image(out.color), cb.to_output(out.alpha[:, 0]),
            cb.bchw_to_image(out.greenscreen))


class TrainEditLayer:
    NODE_ID = "T2L_TrainEditLayer"
    DISPLAY_NAME = "Train Edit Layer (Text2LIVE)"
    CATEGORY = "Text2LIVE"
    DESCRIPTION = (
        "Text2LIVE image editing: trains a small generator on this one image so that its RGBA edit layer, composited "
        "over the image, matches the text (CLIP losses on the composite and on the layer over a green screen), keeps "
        "the image's structure and stays sparse. 1000 steps at 512 px is the paper's setting (minutes on a GPU, hours "
        "on a CPU). Returns the result at the image's own resolution and the trained layer, which Apply Edit Layer "
        "can reuse on other images. Cancelling keeps a checkpoint; run again with resume on to continue (a "
        "finished run removes it unless keep_checkpoint is on). "
        "Video: connect a fitted atlas (nla) and pick the atlas layer: the generator is trained on atlas crops with "
        "the losses on the frames they map to, so one atlas edit stays consistent over the whole video (paper "
        "section 3.2; 3000 steps). Then the outputs are the edited video, the edited atlas (edit/opacity/"
        "greenscreen) and the layer, which Atlas Render applies (fg_edit_layer / bg_edit_layer)."
    )
    RETURN_TYPES = ("IMAGE", "IMAGE", "MASK", "IMAGE", "T2L_EDIT_LAYER")
    RETURN_NAMES = ("composite", "edit", "opacity", "greenscreen", "edit_layer")
    OUTPUT_TOOLTIPS = (
        "The edited image: opacity·edit + (1−opacity)·input, at the input resolution.",
        "The edit layer's colour (RGB).",
        _MASK_TIP,
        "The edit layer over a green screen (what the screen prompt is matched against).",
        "The trained layer, for Apply Edit Layer (other images or video frames).",
    )
    FUNCTION = "train"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clip": ("T2L_CLIP", {"tooltip": "From Load CLIP (Text2LIVE); the paper uses ViT-B-32:openai."}),
                "image": ("IMAGE", {"tooltip": "The one image to edit (a batch of 1)."}),
                "prompt": ("STRING", setting_widget(EditConfig, "prompt", multiline=True)),
                "screen_prompt": ("STRING", setting_widget(EditConfig, "screen_prompt", "E.g. 'oreo'.",
                                                           multiline=False)),
                "source_prompt": ("STRING", setting_widget(EditConfig, "source_prompt", multiline=False)),
                "iterations": ("INT", setting_widget(
                    EditConfig, "iters", f"Video (nla connected, video_defaults on): the default {IMAGE_ITERATIONS} "
                                         f"means the paper's {VIDEO_ITERATIONS} video steps; any other value is used "
                                         "as is.")),
                "size": ("INT", setting_widget(EditConfig, "size", step=1)),
                "seed": ("INT", setting_widget(EditConfig, "seed", control_after_generate=True)),
            },
            "optional": {
                "roi_text": ("STRING", setting_widget(EditConfig, "roi_text")),
                "bootstrap_mask": ("MASK", {"tooltip":
                                   "Any mask (1 = region to edit) used instead of the relevancy map; image size."}),
                "lambda_composition": ("FLOAT", setting_widget(EditConfig, "lambda_composition", step=0.01)),
                "lambda_screen": ("FLOAT", setting_widget(EditConfig, "lambda_screen", step=0.01)),
                "lambda_structure": ("FLOAT", setting_widget(EditConfig, "lambda_structure", step=0.01)),
                "sparsity_l1": ("FLOAT", setting_widget(EditConfig, "sparsity_l1", step=0.001)),
                "sparsity_l0": ("FLOAT", setting_widget(EditConfig, "sparsity_l0", step=0.001)),
                "lambda_bootstrap": ("FLOAT", setting_widget(EditConfig, "lambda_bootstrap", step=0.1)),
                "views": ("INT", setting_widget(EditConfig, "n_views")),
                "resume": ("BOOLEAN", {"default": True, "tooltip":
                           "Continue from the checkpoint a cancelled run left, if it had the same inputs, settings, "
                           "iterations and CLIP. A checkpoint of another run is not used (trained from the start)."}),
                "preview_every": ("INT", {"default": 25, "min": 1, "max": 10000, "tooltip":
                                  "Show a preview of the composite every N steps."}),
                "nla": ("T2L_NLA", {"tooltip":
                        "Video: a fitted atlas (Fit Layered Atlas / Load Atlas). When connected the layer is trained "
                        "on that atlas (image = the video's frames, or anything else to use the frames stored with "
                        "the atlas; 'size' is not used) and composite = the edited video."}),
                "atlas_layer": (["foreground", "background"], {"default": "foreground", "tooltip":
                                "Video: which atlas to edit. Train the other one in a second node and connect both "
                                "layers to Atlas Render to combine them."}),
                "video_defaults": ("BOOLEAN", {"default": True, "tooltip": _video_defaults_tip()}),
                "keep_checkpoint": ("BOOLEAN", {"default": False, "tooltip":
                                    "Keep the checkpoint (tens of MB in output/text2live/checkpoints) when the run "
                                    "finishes, so the same graph returns the result without training after a "
                                    "restart. Off: only a cancelled or failed run leaves one."}),
                "save_memory": ("BOOLEAN", setting_widget(
                    EditConfig, "save_memory", "Off = the fastest way this machine trains within the pack's memory "
                                               "target (about 4 GiB at 512 px on a CPU).")),
                "generator_resolution": (list(GENERATOR_RESOLUTIONS), {"default": "working size", "tooltip":
                                         "Image: how the result is rendered. " + _RESOLUTION_TIP}),
                "precision": (list(PRECISIONS), {"default": "auto", "tooltip":
                              "auto = fp32 on CPU; on a GPU the generator in fp32 (TF32) and CLIP in bf16, whose "
                              "gradients agree with fp32. fp32 = fp32 everywhere. bf16 CLIP = CLIP passes in bf16 "
                              "(slower on CPUs without AMX)."}),
                "protect_mask": ("MASK", {"tooltip":
                                 "Image: a mask (1 = leave untouched, image size) of what the edit must not touch, "
                                 "e.g. the other egg: the composite there is the input exactly, the layer's opacity "
                                 "there is penalised during training, and the node reports how much opacity lies "
                                 "there."}),
                "exclude_text": ("STRING", setting_widget(EditConfig, "exclude_text")),
                "lambda_protect": ("FLOAT", setting_widget(EditConfig, "lambda_protect", step=0.1)),
            },
        }

    def train(self, clip, image, prompt, **widgets):
        w = check_inputs(type(self), dict(widgets, prompt=prompt))
        settings = _settings(prompt, w)
        if w["nla"] is not None:
            return self._train_video(
                clip, image, w["nla"], w["atlas_layer"], bool(w["video_defaults"]), w["preview_every"], w["resume"],
                bool(w["keep_checkpoint"]), bootstrap_mask=w["bootstrap_mask"], **settings)
        if image.ndim == 4 and image.shape[0] != 1:
            raise ValueError(f"Train Edit Layer trains on one image but got a batch of {image.shape[0]}: pick one "
                             "(e.g. Image From Batch), then use Apply Edit Layer on the others.")
        config = EditConfig.from_flat(settings, size=int(w["size"]))
        config.validate()
        mm.use(clip, memory_required=edit_training_bytes(config.dataset.size))
        with cb.training_mode():
            x = cb.image_to_bchw(image, "image")
            mask, protect = (_one_mask(w[name], name) for name in ("bootstrap_mask", "protect_mask"))
            hooks = cb.make_hooks(preview_every=int(w["preview_every"]))
            with startup_phase(hooks, PHASE_KEY):  # the first progress: hashing the CLIP takes a moment
                ckpt = default_checkpoint_path(cb.output_dir() / "checkpoints", x, config, mask, clip, protect)
            try:
                result = train_edit_layer(clip, x, config, hooks=hooks, bootstrap_mask=mask, checkpoint_path=ckpt,
                                          resume=bool(w["resume"]), keep_checkpoint=bool(w["keep_checkpoint"]),
                                          resolution=GENERATOR_RESOLUTIONS[w["generator_resolution"]],
                                          protect_mask=protect)
            finally:
                cb.soft_empty_cache()
        result.layer.drop_generators()  # ComfyUI keeps the layer: no generator copy on the device with it
        cb.tell_user("Train Edit Layer", result.notes)
        return cb.with_notes(_outputs(result.output) + (result.layer,), result.notes)

    @staticmethod
    def _train_video(clip, image, nla, atlas_layer, video_defaults, preview_every, resume, keep_checkpoint,
                     **settings):
        settings.pop("bootstrap_mask", None)  # refused with an atlas by RULES, as protect_mask
        config, replaced = video_config_from_image_settings(settings, atlas_layer, video_defaults)
        mm.use(clip, nla, memory_required=edit_training_bytes(max(nla.size)))
        with cb.training_mode():
            frames = None
            x = cb.image_to_bchw(image, "image")
            if x.shape[0] == nla.num_frames and tuple(x.shape[-2:]) == nla.size:
                frames = x  # the connected frames are the video: blend over them
            hooks = cb.make_hooks(preview_every=int(preview_every))
            with startup_phase(hooks, PHASE_KEY):
                ckpt = default_video_checkpoint_path(cb.output_dir() / "checkpoints", nla, config, clip, frames)
            try:
                r = train_video_edit_layer(clip, nla, config, frames=frames, hooks=hooks, checkpoint_path=ckpt,
                                           resume=bool(resume), keep_checkpoint=keep_checkpoint)
            finally:
                cb.soft_empty_cache()
        r.layer.drop_generators()
        edit = r.atlas_edit
        rgb, alpha = edit.rgb[None], edit.alpha[None, None]
        notes = replaced + r.notes
        cb.tell_user("Train Edit Layer", notes)
        return cb.with_notes((cb.bchw_to_image(r.frames), cb.bchw_to_image(rgb), cb.to_output(alpha[:, 0]),
                              cb.bchw_to_image(on_green_screen(rgb, alpha)), r.layer), notes)


def _one_mask(mask, name: str):
    """A MASK input as ``[1,H,W]``, or None when unconnected; refuses a batch of masks."""
    if mask is None:
        return None
    m = cb.mask_to_bhw(mask, name)
    if m.shape[0] != 1:
        raise ValueError(f"{name} has {m.shape[0]} masks; give one mask for the one image")
    return m


def _no_mask_with_atlas(w: dict) -> None:
    if w["nla"] is not None and w["bootstrap_mask"] is not None:
        raise ValueError("bootstrap_mask is for single images; with an atlas (nla) use roi_text to guide the edit "
                         "region, or disconnect the mask")


def _no_protection_with_atlas(w: dict) -> None:
    if w["nla"] is not None and (w["protect_mask"] is not None or (w["exclude_text"] or "").strip()):
        raise ValueError("protect_mask and exclude_text protect a region of a single image; with an atlas (nla) "
                         "disconnect protect_mask and empty exclude_text")


#: what Train Edit Layer checks before any work, at queue time and when it runs (the widgets' ranges and
#: choices come from their declarations)
TrainEditLayer.RULES = (
    Rule(("prompt",), lambda w: as_prompt_list(w["prompt"], "prompt")),
    Rule((), _no_mask_with_atlas, connections=("nla", "bootstrap_mask")),
    Rule(("exclude_text",), _no_protection_with_atlas, connections=("nla", "protect_mask")),
)
add_queue_validation(TrainEditLayer)


def _settings(prompt: str, w: dict) -> dict:
    """The flat settings the Train Edit Layer widgets set (empty texts = not given), the same for an image and
    an atlas; ``size`` only applies to an image."""
    settings = dict(prompt=prompt, screen_prompt=w["screen_prompt"] or None,
                    source_prompt=w["source_prompt"] or None, roi_text=w["roi_text"] or None,
                    exclude_text=w["exclude_text"] or None,
                    iters=int(w["iterations"]), seed=int(w["seed"]), n_views=int(w["views"]),
                    save_memory=bool(w["save_memory"]), autocast=PRECISIONS[w["precision"]])
    for name in ("lambda_composition", "lambda_screen", "lambda_structure", "sparsity_l1", "sparsity_l0",
                 "lambda_bootstrap", "lambda_protect"):
        settings[name] = w[name]
    return settings


def _video_defaults_tip() -> str:
    """The video_defaults tooltip, naming the video settings' defaults."""
    def d(name: str):
        return default_of(VideoEditConfig, name)

    return (f"Video: use the paper's video settings ({d('n_views')} views with black fill, structure "
            f"{d('lambda_structure'):g}, sparsity {d('sparsity_l1'):g} L1 + {d('sparsity_l0'):g} L0, lr decay "
            f"{d('lr_decay')}, constant bootstrap weight) instead of the views / lambda_structure / sparsity "
            "widgets. Off = use the widgets.")


class ApplyEditLayer:
    NODE_ID = "T2L_ApplyEditLayer"
    DISPLAY_NAME = "Apply Edit Layer (Text2LIVE)"
    CATEGORY = "Text2LIVE"
    DESCRIPTION = (
        "Runs a trained edit layer on other images or frames (each at its own resolution, one at a time) and "
        "composites it. Works best on images similar to the one it was trained on."
    )
    RETURN_TYPES = ("IMAGE", "IMAGE", "MASK", "IMAGE")
    RETURN_NAMES = ("composite", "edit", "opacity", "greenscreen")
    OUTPUT_TOOLTIPS = ("opacity·edit + (1−opacity)·image.", "The edit layer's colour (RGB).", _MASK_TIP,
                       "The edit layer over a green screen.")
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "edit_layer": ("T2L_EDIT_LAYER", {"tooltip": "From Train Edit Layer or Load Edit Layer."}),
                "image": ("IMAGE", {"tooltip": "Image or batch (e.g. video frames) to apply the layer to."}),
            },
            "optional": {
                "size": ("INT", {"default": 0, "min": 0, "max": 8192, "tooltip":
                         "Shorter side the generator runs at: 0 = the layer's training size (generator_resolution "
                         "'working size') or each image's own resolution ('native'); otherwise this size, the "
                         "result brought back to each image's resolution."}),
                "generator_resolution": (list(GENERATOR_RESOLUTIONS), {"default": "working size",
                                         "tooltip": _RESOLUTION_TIP}),
            },
        }

    def apply(self, edit_layer, image, size=0, generator_resolution="working size"):
        if not isinstance(edit_layer, EditLayer):
            raise ValueError("edit_layer must come from Train Edit Layer or Load Edit Layer (Text2LIVE)")
        check_inputs(type(self), {"size": size, "generator_resolution": generator_resolution})
        x = cb.image_to_bchw(image, "image")
        device = cb.torch_device()

        hooks = cb.make_hooks()

        def progress(i: int, n: int) -> None:
            hooks.cancel_point()
            hooks.step(i, n, {})

        seen = len(edit_layer.notes)
        with cb.training_mode():
            out = edit_layer.render(x, device=device, size=int(size) or None, on_image=progress,
                                    resolution=GENERATOR_RESOLUTIONS[generator_resolution])
        edit_layer.drop_generators()  # the layer stays in ComfyUI's cache; its generator copy need not
        notes = edit_layer.notes[seen:]  # e.g. an image generated below its resolution for lack of memory
        cb.tell_user("Apply Edit Layer", notes)
        return cb.with_notes(_outputs(out), notes)


class Composite:
    NODE_ID = "T2L_Composite"
    DISPLAY_NAME = "Composite Edit Layer (Text2LIVE)"
    CATEGORY = "Text2LIVE"
    DESCRIPTION = (
        "opacity·colour + (1−opacity)·background. Without a background image the layer goes over a solid colour "
        "(the green screen by default). Batches of 1 are repeated to match the others."
    )
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("The composited image.",)
    FUNCTION = "composite"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "color": ("IMAGE", {"tooltip": "The edit layer's colour (edit output of Train/Apply Edit Layer)."}),
                "opacity": ("MASK", {"tooltip": "Opacity, 1 = colour visible (opacity output)."}),
            },
            "optional": {
                "background": ("IMAGE", {"tooltip": "What the layer goes over, usually the original image. "
                                         "Not connected = a solid colour."}),
                "fill_color": ("STRING", {"default": "#00B140", "tooltip":
                               "Solid background when no image is connected: #RRGGBB or R,G,B, each 0..255 (default green "
                               "screen)."}),
            },
        }

    def composite(self, color, opacity, background=None, fill_color="#00B140"):
        check_inputs(type(self), {"background": background, "fill_color": fill_color})
        c = cb.image_to_bchw(color, "color")
        a = cb.mask_to_bhw(opacity, "opacity").unsqueeze(1)
        if background is not None:
            bg = cb.image_to_bchw(background, "background")
        else:
            bg = solid_background(c, parse_hex_color(fill_color))
        if a.shape[-2:] != c.shape[-2:] or bg.shape[-2:] != c.shape[-2:]:
            raise ValueError(
                f"Composite: sizes differ: colour {c.shape[-1]}x{c.shape[-2]}, opacity {a.shape[-1]}x{a.shape[-2]}, "
                f"background {bg.shape[-1]}x{bg.shape[-2]}; resize them to the same size (e.g. Upscale Image)."
            )
        out = composite(c, a.clamp(0, 1), bg)
        return (cb.bchw_to_image(out),)


def _fill_color(w: dict) -> None:
    if w["background"] is None:  # the colour is used only without a background image
        parse_hex_color(w["fill_color"])


Composite.RULES = (Rule(("fill_color",), _fill_color, connections=("background",)),)
add_queue_validation(Composite)

NODE_CLASSES = [TrainEditLayer, ApplyEditLayer, Composite]
