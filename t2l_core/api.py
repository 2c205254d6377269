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
from .image.training import EditConfig, train_edit_layer
from .video.training import VideoEditConfig, atlas_edit_from_layer, train_video_edit_layer


def image_edit_config(**settings) -> EditConfig:
    """An image edit's settings from their flat names (``prompt``, ``iters``, ``n_views``, ``generator``...)."""
    return EditConfig.from_dict(settings)


def video_edit_config(**settings) -> VideoEditConfig:
    """An atlas (video) edit's settings from their flat names (``layer``, ``iters``, ``n_views``...)."""
    return VideoEditConfig.from_dict(settings)


def nla_fit_config(**settings) -> NLAFitConfig:
    """An atlas fit's settings from their flat names (``iterations``, ``batch_pixels``, ``flow``...)."""
    return NLAFitConfig.from_dict(settings)
