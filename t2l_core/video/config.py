"""Every setting of a video (atlas) edit: the image settings with the authors' video defaults (paper
section 3.2, appendices A.3-A.4), the atlas sampling settings (declared with the atlas dataset,
:class:`~t2l_core.video.atlas_dataset.AtlasSamplingConfig`) and how the frame-side loss inputs are formed."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

from ..edit.config import BootstrapConfig, EditConfig, OptimConfig
from ..edit.objective import LossWeights
from ..edit.views import VIDEO_FILL, ViewConfig
from ..edit.crops import DatasetConfig
from ..settings import TOP, check_limits, default_of, setting
from .atlas_dataset import AtlasSamplingConfig, VideoDatasetConfig, layer_key, video_crops


@dataclass
class FrameLossConfig:
    """How a video step forms the frame-side inputs of its losses from an atlas example."""

    multiply_foreground_alpha: bool = setting(True, "Foreground: the sampled maps and the direct pass are "
                                                    "multiplied by the NLA opacity.")
    direct_pass: bool = setting(True, "Also run the generator directly on one of the three frame crops.")
    # The authors feed the foreground loss the atlas crop sampled into the frame WITHOUT the NLA opacity
    # while the outputs are multiplied by it (structure/direction targets then show atlas content outside
    # the object). Default: the inputs are multiplied too, so inputs and outputs agree; True = authors.
    authors_fg_inputs: bool = setting(False, "Foreground: the loss inputs are NOT multiplied by the NLA opacity "
                                             "(the authors' code).")


@dataclass
class VideoEditConfig(EditConfig):
    """Every setting of a video (atlas) edit. ``size``/``scale_*`` of the image settings are not used."""

    layer: str = setting("fg", "The atlas layer to edit, fg or bg (one per run).",
                         choices=("fg", "bg", "foreground", "background"))
    iters: int = setting(3000, "Training steps (paper: 3000 for a video).", min=1, max=100000)
    optim: OptimConfig = setting(default_factory=lambda: OptimConfig(lr_decay=0.999))
    dataset: DatasetConfig = setting(default_factory=video_crops)
    views: ViewConfig = setting(default_factory=lambda: ViewConfig(n_views=6, fill=VIDEO_FILL))
    weights: LossWeights = setting(default_factory=lambda: LossWeights(structure=3.0, sparsity_l1=1e-3,  # 0.1 * 0.01
                                                                       sparsity_l0=5e-4))  # 0.1 * 0.005
    # constant lambda for the whole run when roi_text is given (the paper's car-turn example)
    bootstrap: BootstrapConfig = setting(default_factory=lambda: BootstrapConfig(schedule="none"))
    atlas: AtlasSamplingConfig = setting(default_factory=AtlasSamplingConfig)
    frame_losses: FrameLossConfig = setting(default_factory=FrameLossConfig)

    FLAT: ClassVar[dict[str, tuple[str, str]]] = {
        **EditConfig.FLAT, "layer": (TOP, "layer"),
        **{f.name: ("atlas", f.name) for f in fields(AtlasSamplingConfig)},
        **{f.name: ("frame_losses", f.name) for f in fields(FrameLossConfig)},
    }

    def atlas_sampling(self) -> VideoDatasetConfig:
        """The settings of the atlas dataset (:class:`t2l_core.video.atlas_dataset.VideoAtlasDataset`)."""
        return VideoDatasetConfig(layer=layer_key(self.layer), sampling=self.atlas, crops=self.dataset,
                                  min_size=2 ** self.generator.num_scales + 1)

    def validate(self) -> None:
        """Check the settings a run cannot start with: the image ones, the layer, and the crop and atlas
        sampling settings against their declared limits.

        Raises:
            ValueError: saying which setting to change and how.
        """
        super().validate()
        layer_key(self.layer)
        if self.exclude_text and self.exclude_text.strip():
            raise ValueError("exclude_text protects a region of an image edit; an atlas edit has no protected "
                             "region yet: leave exclude_text empty (use roi_text to guide where the edit goes)")
        check_limits(self, ("crop_min", *(f.name for f in fields(AtlasSamplingConfig))))
        for name, value in (("crop_min", self.dataset.crop_min), ("atlas_scale", self.atlas.atlas_scale)):
            if value == 0:  # their ranges are open at 0: a crop or an atlas of no pixels
                raise ValueError(f"{name} must be > 0, got {value}")


#: the image settings that the paper's video settings replace when an atlas edit takes an image edit's settings
VIDEO_DEFAULT_SETTINGS = ("lambda_structure", "sparsity_l1", "sparsity_l0", "n_views")


def video_config_from_image_settings(settings: dict, layer: str, video_defaults: bool = True
                                     ) -> tuple[VideoEditConfig, list[str]]:
    """An atlas edit's settings from an image edit's flat settings (one set of widgets or options for both).

    With ``video_defaults`` the paper's video settings (:class:`VideoEditConfig` defaults) replace
    :data:`VIDEO_DEFAULT_SETTINGS`, and ``iters`` left at the image default (1000) means the video default
    (3000); any other ``iters`` is used as is.

    Args:
        settings: flat :class:`~t2l_core.edit.config.EditConfig` names and values.
        layer: the atlas layer to edit (``fg``/``bg``/``foreground``/``background``).
        video_defaults: use the paper's video settings for the replaced names.

    Returns:
        ``(config, notes)``: the validated config, and what was replaced, in words.

    Raises:
        ValueError: a setting is wrong.
    """
    settings, notes = dict(settings), []
    if video_defaults:
        for name in VIDEO_DEFAULT_SETTINGS:
            settings.pop(name, None)
        image_iters, video_iters = default_of(EditConfig, "iters"), default_of(VideoEditConfig, "iters")
        if settings.get("iters", image_iters) == image_iters:
            settings["iters"] = video_iters
            notes.append(f"Trained {video_iters} steps, the paper's video setting: with video_defaults on, the "
                         f"default {image_iters} iterations means {video_iters} for an atlas (any other value is "
                         "used as is).")
    config = VideoEditConfig.from_flat(settings, layer=layer)
    config.validate()
    return config, notes
