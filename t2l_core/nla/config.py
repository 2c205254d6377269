"""The settings of a layered-atlas fit (:class:`NLAFitConfig`), stored with the fitted atlas, each stated once:
default, help and limits in the field (:mod:`t2l_core.settings`). The Fit Layered Atlas node's widgets, the
``nla`` command's options and the benchmarks take them from here."""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import check_limits, from_flat, setting, to_flat
from .losses import NLALossWeights


@dataclass
class NLAFitConfig:
    """Hyper-parameters of a layered-atlas fit (NLA, Kasten et al. 2021, Sec. 3), stored with the atlas.

    Learning rates are per parameter group (colour pyramid, per-frame affine motion, mapping residual grids,
    opacity grids); they decay exponentially to ``lr_final_ratio`` of their value at the last step.
    """

    iterations: int = setting(2000, "Training steps. About 1000-3000 reach 30 dB on short clips; more gives sharper "
                                    "atlases.", min=10, max=400000)
    # random pixels (t, y, x) drawn with replacement per step; 16384 meets the edit-landing targets on the
    # 50-frame 768x432 ground-truth videos where 8192 does not (bench/RESULTS.md, "Layered atlas on
    # ground-truth videos")
    batch_pixels: int = setting(16384, "Random pixels per step. Larger is smoother but slower per step.",
                                min=512, max=262144)
    seed: int = setting(0, "Seed of the random pixel batches (same seed and inputs = same atlas).",
                        min=0, max=0xFFFFFFFF)
    lr_colour: float = setting(0.01, "Adam learning rate of the colour pyramid.", min=0.0)
    lr_alpha: float = setting(0.05, "Adam learning rate of the opacity grids.", min=0.0)
    lr_mapping: float = setting(0.002, "Adam learning rate of the mapping residual grids.", min=0.0)
    lr_affine: float = setting(0.002, "Adam learning rate of the per-frame affine motion.", min=0.0)
    lr_final_ratio: float = setting(0.1, "The learning rates decay exponentially to this fraction at the last step.",
                                    min=0.0, max=1.0)
    atlas_resolution: int = setting(0, "Long side in pixels of the atlas images. 0 = native (about one atlas pixel "
                                       "per video pixel).", min=0, max=8192)
    flow: str = setting("auto", "Optical flow: auto = RAFT if its weights are local, else the built-in estimator; "
                                "lk = always the built-in one; raft = require RAFT weights.",
                        choices=("auto", "lk", "raft"))
    init_colour: bool = setting(True, "Start the atlas from the frames splatted through the initial mappings.")
    target_psnr: float = setting(0.0, "Stop early once the reconstruction PSNR (on a pixel sample) reaches this many "
                                      "dB (0 = run every iteration).", min=0.0)
    eval_every: int = setting(250, "How often (steps) the sampled PSNR is measured when target_psnr > 0.", min=1)
    eval_pixels: int = setting(100_000, "Pixels in the fixed random sample the PSNR is measured on.", min=1)
    checkpoint_every: int = setting(0, "Also save a checkpoint every N steps (0 = only on cancel or error).", min=0)
    motion_init: str = setting("affine", "Initial per-frame maps: affine = chained robust flow affines "
                                         "(t2l_core.nla.affine_init), translation = median flow translations.",
                               choices=("affine", "translation"))
    working_size: int = setting(0, "Long side in pixels the atlas is fitted at: the frames, masks and optical flow "
                                    "are resized to it, and every frame is still reconstructed and rendered at "
                                    "full size through the atlas's continuous coordinates. 0 = fit at the video's "
                                    "own size. 768 (NLA's working size) is what long 1080p clips need.", min=0,
                                max=8192)
    weights: NLALossWeights = setting(default_factory=NLALossWeights)

    def validate(self) -> None:
        """Check the settings whose values a fit cannot start with (the text settings' choices).

        Raises:
            ValueError: naming the setting and the values it accepts.
        """
        check_limits(self, ("flow", "motion_init"))

    def to_dict(self) -> dict:
        """Every setting as plain JSON values (the loss weights as a nested dict), in field order."""
        return to_flat(self)

    @staticmethod
    def from_dict(d: dict) -> "NLAFitConfig":
        """The config that :meth:`to_dict` wrote.

        Args:
            d: a dict from :meth:`to_dict` (e.g. a saved atlas's ``fit_config``); unknown names raise.

        Returns:
            The :class:`NLAFitConfig`.
        """
        return from_flat(NLAFitConfig, d)
