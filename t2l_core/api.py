"""The public API of the core: what the ComfyUI nodes, the command line and user scripts call.

Everything a node does can be done from here::

    from t2l_core import api
    clip = api.load_clip("ViT-B-32")
    result = api.train_edit_layer(clip, image_1x3xHxW, api.image_edit_config(prompt="oreo cake", iters=1000))

Settings are read by their flat public names (``lr``, ``n_views``, ``lambda_structure``...):
``api.default_of(api.EditConfig, "n_views")``, ``api.help_of(...)``, ``api.limits_of(...)``.
The nodes import from this module only (the layer-rule test enforces it).
"""

from __future__ import annotations

# settings
from .edit.config import EditConfig
from .nla.fit import NLAFitConfig
from .settings import choices_of, default_of, help_of, limits_of
from .video.config import VideoEditConfig

# CLIP
from .clip.loading import (WEIGHT_SUFFIXES, build_tiny_clip, check_weights_file, find_local_weights, load_clip,
                           load_clip_file, missing_weights_message, pretrained_choices, weights_obtainable)
from .clip.architectures import architecture_config
from .clip.relevancy import heatmap, min_relevancy_side, relevancy_map
from .clip.templates import as_prompt_list

# image edits
from .edit.compositing import composite, on_green_screen, parse_hex_color, solid_background
from .edit.layer import EditLayer, LayerOutput
from .image import training as image_training
from .image.training import EditResult, default_checkpoint_path

# layered atlases (NLA) and video edits
from .nla.atlas_files import load_nla, read_nla_header, save_nla
from .nla.compositing_export import export_for_compositing
from .nla.fit import FittedNLA, estimate_fit_memory, fit_key, fit_nla, fit_run_files
from .nla.optical_flow import frames_fingerprint, require_raft_weights
from .nla.render import AtlasBBox, AtlasEdit, frame_edit_to_atlas, render_edits
from .video import training as video_training
from .video.atlas_apply import atlas_edit_from_layer
from .video.config import video_config_from_image_settings
from .video.training import VideoEditResult, default_video_checkpoint_path

# how steps are computed, progress, cancellation, input checks
from .io.input_checks import require_finite
from .progress import PHASE_KEY, Cancelled, Hooks, startup_phase
from .runtime.edit_runtime import edit_training_bytes, step_runner

# giving memory back to a host that manages it (ComfyUI's model management)
from .device import resolve_dtype
from .runtime.cpu_heap import release_freed_heap
from .runtime.weight_release import (module_tensors, read_spilled, release_tensors, restore_tensors, spill_tensors,
                                     tensor_bytes)

__all__ = [
    "EditConfig", "NLAFitConfig", "VideoEditConfig", "choices_of", "default_of", "help_of", "limits_of",
    "WEIGHT_SUFFIXES", "architecture_config", "as_prompt_list", "require_raft_weights",
    "build_tiny_clip", "check_weights_file", "find_local_weights", "load_clip", "load_clip_file",
    "missing_weights_message", "pretrained_choices", "weights_obtainable", "heatmap", "min_relevancy_side",
    "relevancy_map", "composite", "on_green_screen", "parse_hex_color", "solid_background", "EditLayer",
    "LayerOutput", "EditResult", "default_checkpoint_path", "train_edit_layer", "image_edit_config",
    "load_nla", "read_nla_header", "save_nla", "FittedNLA", "estimate_fit_memory", "fit_key", "fit_nla",
    "fit_run_files",
    "nla_fit_config", "frames_fingerprint", "AtlasBBox", "AtlasEdit", "frame_edit_to_atlas", "render_edits",
    "export_for_compositing",
    "atlas_edit_from_layer", "VideoEditResult", "default_video_checkpoint_path", "train_video_edit_layer",
    "video_edit_config", "video_config_from_image_settings", "edit_training_bytes", "require_finite", "Cancelled",
    "Hooks", "PHASE_KEY", "startup_phase",
    "resolve_dtype", "release_freed_heap", "module_tensors", "read_spilled", "release_tensors", "restore_tensors",
    "spill_tensors", "tensor_bytes",
]


def train_edit_layer(clip, image, config: EditConfig, **options) -> EditResult:
    """Train an edit layer on one image (paper section 3.1) with the steps computed as ``config``'s speed
    settings ask (the fast path by default).

    Args:
        clip: the loaded CLIP.
        image: [1,3,H,W] (or [3,H,W]) in 0..1.
        config: the edit's settings.
        **options: as :func:`t2l_core.image.training.train_edit_layer` (``runner`` defaults to
            :func:`t2l_core.runtime.edit_runtime.step_runner`).

    Returns:
        The layer, its output at the input's resolution and the loss history.
    """
    options.setdefault("runner", step_runner(clip, config))
    return image_training.train_edit_layer(clip, image, config, **options)


def train_video_edit_layer(clip, nla: FittedNLA, config: VideoEditConfig, **options) -> VideoEditResult:
    """Train an edit layer on an atlas layer (paper section 3.2) with the steps computed as ``config``'s speed
    settings ask.

    Args:
        clip: the loaded CLIP.
        nla: the fitted atlas.
        config: the edit's settings.
        **options: as :func:`t2l_core.video.training.train_video_edit_layer` (``runner`` defaults to
            :func:`t2l_core.runtime.edit_runtime.step_runner`).

    Returns:
        The layer, its atlas edit, the edited video and the loss history.
    """
    options.setdefault("runner", step_runner(clip, config))
    return video_training.train_video_edit_layer(clip, nla, config, **options)


image_edit_config = EditConfig.from_flat  # an image edit's settings from flat names (prompt=..., n_views=...)
video_edit_config = VideoEditConfig.from_flat  # an atlas edit's settings from flat names (layer=..., iters=...)


def nla_fit_config(**settings) -> NLAFitConfig:
    """An atlas fit's settings.

    Args:
        **settings: flat names (``iterations``, ``batch_pixels``, ``flow``...).

    Returns:
        The settings, defaults for every name not given.
    """
    return NLAFitConfig.from_dict(settings)
