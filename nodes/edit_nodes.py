"""Train Edit Layer, Apply Edit Layer and Composite nodes (thin wrappers over t2l_core)."""

from __future__ import annotations


from ..t2l_core.edit.compositing import composite, on_green_screen, parse_hex_color, solid_background
from ..t2l_core.edit.layer import EditLayer
from ..t2l_core.image.training import EditConfig, default_checkpoint_path
from ..t2l_core.api import train_edit_layer
from ..t2l_core.video.training import VideoEditConfig, default_video_checkpoint_path
from ..t2l_core.api import train_video_edit_layer
from . import comfy_bridge as cb

IMAGE_ITERATIONS = 1000  # the paper's image setting and the iterations widget's default

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
                "prompt": ("STRING", {"default": "", "multiline": True, "tooltip":
                           "What the edited image should show, e.g. 'oreo cake'. Several prompts: one per line."}),
                "screen_prompt": ("STRING", {"default": "", "multiline": False, "tooltip":
                                  "What the layer alone shows, matched as '<text> over a green screen.' "
                                  "Empty = the prompt. E.g. 'oreo'."}),
                "source_prompt": ("STRING", {"default": "", "multiline": False, "tooltip":
                                  "What the input shows, e.g. 'cake': the source text of the directional loss. Empty "
                                  "= roi_text when that is set (the paper's L_dir with T_ROI), otherwise no "
                                  "directional loss."}),
                "iterations": ("INT", {"default": IMAGE_ITERATIONS, "min": 1, "max": 100000, "tooltip":
                               "Training steps (paper: 1000 for an image). Video (nla connected, video_defaults "
                               "on): the default 1000 means the paper's 3000 video steps; any other value is "
                               "used as is."}),
                "size": ("INT", {"default": 512, "min": 129, "max": 4096, "step": 1, "tooltip":
                         "Working resolution: shorter side in px during training (paper: 512; minimum 129). "
                         "The result is rendered at the input's own resolution."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1, "control_after_generate": True,
                         "tooltip": "Same seed and inputs give the same result."}),
            },
            "optional": {
                "roi_text": ("STRING", {"default": "", "tooltip":
                             "Region to edit, e.g. 'horse': its relevancy map guides the opacity early on. Empty = off."}),
                "bootstrap_mask": ("MASK", {"tooltip":
                                   "Any mask (1 = region to edit) used instead of the relevancy map; image size."}),
                "lambda_composition": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 100.0, "step": 0.01, "tooltip":
                                       "Weight of the CLIP loss on the composite (+ directional loss)."}),
                "lambda_screen": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 100.0, "step": 0.01, "tooltip":
                                  "Weight of the green-screen CLIP loss."}),
                "lambda_structure": ("FLOAT", {"default": 2.0, "min": 0.0, "max": 100.0, "step": 0.01, "tooltip":
                                     "Weight of the structure (self-similarity) loss; higher keeps the layout."}),
                "sparsity_l1": ("FLOAT", {"default": 0.06, "min": 0.0, "max": 100.0, "step": 0.001, "tooltip":
                                "L1 opacity penalty; higher = smaller edit area."}),
                "sparsity_l0": ("FLOAT", {"default": 0.06, "min": 0.0, "max": 100.0, "step": 0.001, "tooltip":
                                "Approximate-L0 opacity penalty; higher = smaller edit area."}),
                "lambda_bootstrap": ("FLOAT", {"default": 10.0, "min": 0.0, "max": 1000.0, "step": 0.1, "tooltip":
                                     "Initial weight of the bootstrap (relevancy/mask) loss, annealed to 0."}),
                "views": ("INT", {"default": 16, "min": 1, "max": 64, "tooltip":
                          "Augmented CLIP views per image and step (paper: 16). Fewer = faster, noisier."}),
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
                "video_defaults": ("BOOLEAN", {"default": True, "tooltip":
                                   "Video: use the paper's video settings (6 views with black fill, structure 3, "
                                   "sparsity 1e-3 L1 + 5e-4 L0, lr decay 0.999, constant bootstrap weight) instead "
                                   "of the views / lambda_structure / sparsity widgets. Off = use the widgets."}),
                "keep_checkpoint": ("BOOLEAN", {"default": False, "tooltip":
                                    "Keep the checkpoint (tens of MB in output/text2live/checkpoints) when the run "
                                    "finishes, so the same graph returns the result without training after a "
                                    "restart. Off: only a cancelled or failed run leaves one."}),
                "save_memory": ("BOOLEAN", {"default": False, "tooltip":
                                "Lower peak memory for slower steps: every memory-saving measure on and activations "
                                "recomputed in the backward pass. Same result. Off = the fastest way this machine "
                                "trains within the pack's memory target (about 4 GiB at 512 px on a CPU)."}),
                "generator_resolution": (list(GENERATOR_RESOLUTIONS), {"default": "working size", "tooltip":
                                         "Image: how the result is rendered. " + _RESOLUTION_TIP}),
                "precision": (list(PRECISIONS), {"default": "auto", "tooltip":
                              "auto = fp32 on CPU; on a GPU the generator in fp32 (TF32) and CLIP in bf16, whose "
                              "gradients agree with fp32. fp32 = fp32 everywhere. bf16 CLIP = CLIP passes in bf16 "
                              "(slower on CPUs without AMX)."}),
            },
        }

    def train(self, clip, image, prompt, screen_prompt="", source_prompt="", iterations=1000, size=512, seed=0,
              roi_text="", bootstrap_mask=None, lambda_composition=1.0, lambda_screen=1.0, lambda_structure=2.0,
              sparsity_l1=0.06, sparsity_l0=0.06, lambda_bootstrap=10.0, views=16, resume=True, preview_every=25,
              nla=None, atlas_layer="foreground", video_defaults=True, keep_checkpoint=False, save_memory=False,
              generator_resolution="working size", precision="auto"):
        if generator_resolution not in GENERATOR_RESOLUTIONS:
            raise ValueError(f"generator_resolution must be one of {list(GENERATOR_RESOLUTIONS)}, "
                             f"got '{generator_resolution}'")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got '{precision}'")
        if nla is not None:
            if video_defaults and int(iterations) == IMAGE_ITERATIONS:  # left at its default: the paper's video 3000
                iterations = VideoEditConfig.iters
            return self._train_video(
                clip, image, nla, atlas_layer, bool(video_defaults), preview_every, resume, bool(keep_checkpoint),
                save_memory=bool(save_memory),
                prompt=prompt, screen_prompt=screen_prompt or None, source_prompt=source_prompt or None,
                roi_text=roi_text or None, bootstrap_mask=bootstrap_mask, iters=int(iterations), seed=int(seed),
                lambda_composition=lambda_composition,
                lambda_screen=lambda_screen, lambda_structure=lambda_structure, sparsity_l1=sparsity_l1,
                sparsity_l0=sparsity_l0, lambda_bootstrap=lambda_bootstrap, n_views=int(views),
                autocast=PRECISIONS[precision])
        if image.ndim == 4 and image.shape[0] != 1:
            raise ValueError(f"Train Edit Layer trains on one image but got a batch of {image.shape[0]}: pick one "
                             "(e.g. Image From Batch), then use Apply Edit Layer on the others.")
        config = EditConfig(
            prompt=prompt, screen_prompt=screen_prompt or None, source_prompt=source_prompt or None,
            roi_text=roi_text or None, iters=int(iterations), size=int(size), seed=int(seed),
            lambda_composition=lambda_composition, lambda_screen=lambda_screen, lambda_structure=lambda_structure,
            sparsity_l1=sparsity_l1, sparsity_l0=sparsity_l0, lambda_bootstrap=lambda_bootstrap, n_views=int(views),
            save_memory=bool(save_memory), autocast=PRECISIONS[precision],
        )
        config.validate()
        cb.free_memory(_training_bytes(config.size), cb.torch_device())
        with cb.training_mode():
            x = cb.image_to_bchw(image, "image")
            mask = cb.mask_to_bhw(bootstrap_mask, "bootstrap_mask") if bootstrap_mask is not None else None
            if mask is not None and mask.shape[0] != 1:
                raise ValueError(f"bootstrap_mask has {mask.shape[0]} masks; give one mask for the one image")
            ckpt = default_checkpoint_path(cb.output_dir() / "checkpoints", x, config, mask, clip)
            hooks = cb.make_hooks(preview_every=int(preview_every))
            try:
                result = train_edit_layer(clip, x, config, hooks=hooks, bootstrap_mask=mask, checkpoint_path=ckpt,
                                          resume=bool(resume), keep_checkpoint=bool(keep_checkpoint),
                                          resolution=GENERATOR_RESOLUTIONS[generator_resolution])
            finally:
                cb.soft_empty_cache()
        cb.tell_user("Train Edit Layer", result.notes)
        return cb.with_notes(_outputs(result.output) + (result.layer,), result.notes)

    @staticmethod
    def _train_video(clip, image, nla, atlas_layer, video_defaults, preview_every, resume, keep_checkpoint,
                     **settings):
        if settings.pop("bootstrap_mask", None) is not None:
            raise ValueError("bootstrap_mask is for single images; with an atlas (nla) use roi_text to guide the "
                             "edit region, or disconnect the mask")
        layer = "fg" if atlas_layer == "foreground" else "bg"
        if video_defaults:  # the VideoEditConfig defaults (paper's video settings) replace the image widgets
            for name in ("lambda_structure", "sparsity_l1", "sparsity_l0", "n_views"):
                settings.pop(name)
        config = VideoEditConfig(layer=layer, **settings)
        config.validate()
        cb.free_memory(_training_bytes(max(nla.size)), cb.torch_device())
        with cb.training_mode():
            frames = None
            x = cb.image_to_bchw(image, "image")
            if x.shape[0] == nla.num_frames and tuple(x.shape[-2:]) == nla.size:
                frames = x  # the connected frames are the video: blend over them
            ckpt = default_video_checkpoint_path(cb.output_dir() / "checkpoints", nla, config, clip, frames)
            hooks = cb.make_hooks(preview_every=int(preview_every))
            try:
                r = train_video_edit_layer(clip, nla, config, frames=frames, hooks=hooks, checkpoint_path=ckpt,
                                           resume=bool(resume), keep_checkpoint=keep_checkpoint)
            finally:
                cb.soft_empty_cache()
        edit = r.atlas_edit
        rgb, alpha = edit.rgb[None], edit.alpha[None, None]
        cb.tell_user("Train Edit Layer", r.notes)
        return cb.with_notes((cb.bchw_to_image(r.frames), cb.bchw_to_image(rgb), cb.to_output(alpha[:, 0]),
                              cb.bchw_to_image(on_green_screen(rgb, alpha)), r.layer), r.notes)


def _training_bytes(working_size: int) -> int:
    """Rough peak memory of one training step at ``working_size`` px (about 4 GiB at 512, bench/RESULTS.md),
    so ComfyUI can evict its own models first."""
    return int(4 * 2**30 * max(1.0, (working_size / 512) ** 2))


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
        if generator_resolution not in GENERATOR_RESOLUTIONS:
            raise ValueError(f"generator_resolution must be one of {list(GENERATOR_RESOLUTIONS)}, "
                             f"got '{generator_resolution}'")
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
                               "Solid background when no image is connected: #RRGGBB or R,G,B (default green screen)."}),
            },
        }

    def composite(self, color, opacity, background=None, fill_color="#00B140"):
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


NODE_CLASSES = [TrainEditLayer, ApplyEditLayer, Composite]
