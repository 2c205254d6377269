"""The public API of the core: what the ComfyUI nodes, the command line and user scripts call.

Everything a node does can be done from here::

    from t2l_core import api
    clip = api.load_clip("ViT-B-32")
    result = api.train_edit_layer(clip, image_1x3xHxW, api.image_edit_config(prompt="oreo cake", iters=1000))
"""

from __future__ import annotations

from .nla.render import AtlasBBox, AtlasEdit, frame_edit_to_atlas, render_edits
from .clip.loading import build_tiny_clip
from .edit.layer import EditLayer, LayerOutput
from .nla.fit import FittedNLA, NLAFitConfig, fit_nla
from .nla.atlas_files import load_nla, read_nla_header, save_nla
from .progress import Cancelled, Hooks
from .image import training as image_training
from .image.training import EditConfig, EditResult
from .runtime.edit_runtime import step_runner
from .video import training as video_training
from .video.atlas_apply import atlas_edit_from_layer
from .video.training import VideoEditConfig, VideoEditResult


def train_edit_layer(clip, image, config: EditConfig, **options) -> EditResult:
    """Train an edit layer on one image with the steps computed as ``config``'s speed settings ask (the fast
    path by default). Arguments and result: :func:`t2l_core.image.training.train_edit_layer`."""
    options.setdefault("runner", step_runner(clip, config))
    return image_training.train_edit_layer(clip, image, config, **options)


def train_video_edit_layer(clip, nla, config: VideoEditConfig, **options) -> VideoEditResult:
    """Train an edit layer on an atlas layer with the steps computed as ``config``'s speed settings ask.
    Arguments and result: :func:`t2l_core.video.training.train_video_edit_layer`."""
    options.setdefault("runner", step_runner(clip, config))
    return video_training.train_video_edit_layer(clip, nla, config, **options)


def image_edit_config(**settings) -> EditConfig:
    """An image edit's settings from their flat names (``prompt``, ``iters``, ``n_views``, ``generator``...)."""
    return EditConfig.from_dict(settings)


def video_edit_config(**settings) -> VideoEditConfig:
    """An atlas (video) edit's settings from their flat names (``layer``, ``iters``, ``n_views``...)."""
    return VideoEditConfig.from_dict(settings)


def nla_fit_config(**settings) -> NLAFitConfig:
    """An atlas fit's settings from their flat names (``iterations``, ``batch_pixels``, ``flow``...)."""
    return NLAFitConfig.from_dict(settings)
