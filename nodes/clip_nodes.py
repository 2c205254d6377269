"""Load CLIP and Relevancy Map nodes."""

from __future__ import annotations

import os

import torch

from ..t2l_core.api import (architecture_config, check_weights_file, find_local_weights, heatmap, load_clip,
                            load_clip_file, min_relevancy_side, missing_weights_message, module_tensors,
                            pretrained_choices, relevancy_map, resolve_dtype, weights_obtainable)
from . import comfy_bridge as cb
from . import model_management as mm
from .declarations import Rule, add_queue_validation, check_inputs, file_signature

DEFAULT_MODEL = "ViT-B-32:openai"
#: What to do once weights are in place, in ComfyUI's words (the CLI's messages name --clip instead).
SELECT_HINT = ("then press R (Refresh in the ComfyUI menu) so the file appears in Load CLIP's 'model' list, "
               "and pick it there")


def _model_choices() -> list[str]:
    pairs = pretrained_choices()
    ordered = [DEFAULT_MODEL] + [p for p in pairs if p != DEFAULT_MODEL]
    return cb.list_model_files() + ordered


def _device_choice(device: str) -> torch.device:
    return cb.torch_device() if device == "auto" else torch.device(device)


class LoadCLIP:
    NODE_ID = "T2L_LoadCLIP"
    DISPLAY_NAME = "Load CLIP (Text2LIVE)"
    CATEGORY = "Text2LIVE"
    DESCRIPTION = (
        "Loads a frozen CLIP that the Text2LIVE losses and relevancy maps are computed with. The paper uses "
        "ViT-B-32:openai. Pick a weights file from models/text2live (OpenAI .pt, open_clip .bin/.safetensors, or "
        "this pack's .safetensors) or an open_clip architecture:tag pair (downloaded into open_clip's cache when "
        "online). `python -m t2l_core make-tiny-clip` writes a tiny random CLIP for offline pipeline checks."
    )
    RETURN_TYPES = ("T2L_CLIP",)
    RETURN_NAMES = ("clip",)
    OUTPUT_TOOLTIPS = ("The frozen CLIP model, for Train Edit Layer and Relevancy Map.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (_model_choices(), {"default": DEFAULT_MODEL, "tooltip":
                          "A file in models/text2live, or ARCH:tag (ViT-B-32:openai is the paper's model)."}),
                "device": (["auto", "cpu", "cuda"], {"default": "auto", "tooltip":
                           "auto = ComfyUI's compute device (CUDA when present, CPU otherwise)."}),
                "precision": (["fp32", "bf16", "fp16"], {"default": "fp32", "tooltip":
                              "Weight precision. fp32 is exact; bf16/fp16 halve memory (fp16 only on CUDA)."}),
            },
            "optional": {
                "architecture": ("STRING", {"default": "", "tooltip":
                                 "Only for bare state-dict files without a config: the open_clip architecture, "
                                 "e.g. ViT-B-32 (ViT-B-32-quickgelu for OpenAI weights)."}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, model, device="auto", precision="fp32", architecture=""):
        path = cb.resolve_model_file(model)
        return f"{path}:{file_signature(path)}" if path else model

    def load(self, model, device="auto", precision="fp32", architecture=""):
        check_inputs(type(self), {"model": model, "device": device, "precision": precision,
                                  "architecture": architecture})
        load_device, offload_device = mm.devices(_device_choice(device))
        dtype = resolve_dtype(precision, load_device)  # checked for the device it runs on, built where it waits
        path = cb.resolve_model_file(model)
        arch = architecture.strip() or None

        def read(where: torch.device):
            with cb.training_mode():  # weights must not become inference tensors: later nodes backpropagate
                if path:
                    return load_clip_file(path, arch, device=where, precision=dtype, select_hint=SELECT_HINT)
                return load_clip(model, device=where, precision=dtype, search_dirs=cb.model_folders(),
                                 select_hint=SELECT_HINT)

        def again():
            return module_tensors(read(offload_device).model)

        clip = read(offload_device)
        source = mm.file_source(path, again, f"Load CLIP's model '{model}'") if path else again
        return (mm.manage_clip(clip, load_device, offload_device, source),)


def _model_present(w: dict) -> None:
    """The weights file or ARCH:tag of 'model' can be loaded (a file checked for damage, a pair found locally or
    obtainable)."""
    model = w["model"]
    path = cb.resolve_model_file(model) or (model if os.path.isfile(model) else None)
    if path:
        check_weights_file(path, SELECT_HINT)
        return
    if ":" not in model:
        dirs = cb.model_folders()
        raise FileNotFoundError(f"CLIP weights file '{model}' not found in models/text2live ({', '.join(dirs)}). "
                                f"Put it there, {SELECT_HINT}.")
    arch, _, tag = model.partition(":")
    dirs = [os.fspath(d) for d in cb.model_folders()]
    if not (find_local_weights(arch, tag, dirs) or weights_obtainable(arch, tag)):
        raise FileNotFoundError(missing_weights_message(arch, tag, dirs, "offline and not in any cache", SELECT_HINT))


def _device_runs(w: dict) -> None:
    """The device exists and runs the precision."""
    if w["device"] == "cuda" and not torch.cuda.is_available():
        raise ValueError("'device' is cuda but PyTorch sees no CUDA GPU here: set 'device' to auto or cpu.")
    if w["precision"] == "fp16" and _device_choice(w["device"]).type == "cpu":
        raise ValueError("fp16 weights do not run on the CPU: set 'precision' to fp32 or bf16, or 'device' to "
                         "cuda.")


def _architecture_known(w: dict) -> None:
    if w["architecture"].strip():
        architecture_config(w["architecture"].strip())


#: what Load CLIP checks before any work, at queue time and when it runs
LoadCLIP.RULES = (
    Rule(("model",), _model_present, own_choices=True),
    Rule(("device", "precision"), _device_runs),
    Rule(("architecture",), _architecture_known),
)
add_queue_validation(LoadCLIP)


class RelevancyMap:
    NODE_ID = "T2L_RelevancyMap"
    DISPLAY_NAME = "Relevancy Map (Text2LIVE)"
    CATEGORY = "Text2LIVE"
    DESCRIPTION = (
        "Where in the image CLIP sees the text (Chefer et al. relevancy on the ViT's last blocks). Text2LIVE uses it "
        "to bootstrap the edit's opacity towards the region of interest; the MASK also works with any mask node."
    )
    RETURN_TYPES = ("MASK", "IMAGE")
    RETURN_NAMES = ("relevancy", "heatmap")
    OUTPUT_TOOLTIPS = ("Relevancy per pixel, 0..1 (1 = most relevant), at the image size.",
                       "The relevancy as a blue-to-red colour map, for previewing.")
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clip": ("T2L_CLIP", {"tooltip": "From Load CLIP (Text2LIVE)."}),
                "image": ("IMAGE", {"tooltip": "One image or a batch; each gets its own map."}),
                "text": ("STRING", {"default": "horse", "multiline": False, "tooltip":
                         "The object or region to find, e.g. 'horse' (used as is, no templates)."}),
                "layers": ("INT", {"default": 1, "min": 1, "max": 48, "tooltip":
                           "How many of the last transformer blocks contribute (1 = last block, as the paper)."}),
            },
        }

    def run(self, clip, image, text, layers=1):
        check_inputs(type(self), {"text": text, "layers": layers})
        if layers > clip.num_blocks:
            raise ValueError(f"Relevancy Map: layers={layers} but this CLIP has {clip.num_blocks} blocks; "
                             f"use 1..{clip.num_blocks}.")
        x = cb.image_to_bchw(image, "image")
        mm.use(clip)
        least = min_relevancy_side(clip)
        if min(x.shape[-2:]) < least:
            raise ValueError(f"Relevancy Map: the image is {x.shape[-1]}x{x.shape[-2]} px; it needs at least {least} px "
                             "on the shorter side. Upscale it first (e.g. Upscale Image).")
        maps = []
        for i in range(x.shape[0]):  # one image at a time bounds memory for big batches
            cb.check_interrupt()
            maps.append(relevancy_map(clip, x[i:i + 1].to(clip.device), text.strip(), num_layers=layers).cpu())
        rel = torch.cat(maps)
        return (cb.to_output(rel), cb.bchw_to_image(heatmap(rel)))


def _text_given(w: dict) -> None:
    if not w["text"] or not w["text"].strip():
        raise ValueError("the text is empty. Name the object to find, e.g. 'horse'.")


RelevancyMap.RULES = (Rule(("text",), _text_given),)
add_queue_validation(RelevancyMap)

NODE_CLASSES = [LoadCLIP, RelevancyMap]
