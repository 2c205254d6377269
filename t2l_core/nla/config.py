"""The settings of a layered-atlas fit (:class:`NLAFitConfig`), stored with the fitted atlas."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .losses import NLALossWeights


@dataclass
class NLAFitConfig:
    """Hyper-parameters of a layered-atlas fit (NLA, Kasten et al. 2021, Sec. 3), stored with the atlas.

    Learning rates are per parameter group (colour pyramid, per-frame affine motion, mapping residual grids,
    opacity grids); they decay exponentially to ``lr_final_ratio`` of their value at the last step.
    """

    iterations: int = 2000
    # random pixels (t, y, x) drawn with replacement per step; 16384 meets the edit-landing targets on the
    # 50-frame 768x432 ground-truth videos where 8192 does not (bench/RESULTS.md, "Layered atlas on
    # ground-truth videos")
    batch_pixels: int = 16384
    seed: int = 0
    lr_colour: float = 0.01
    lr_alpha: float = 0.05
    lr_mapping: float = 0.002
    lr_affine: float = 0.002
    lr_final_ratio: float = 0.1          # learning rates decay exponentially to this fraction at the last step
    atlas_resolution: int = 0            # long side of the discretised atlas images (0 = native)
    flow: str = "auto"                   # "auto" (RAFT if weights are local, else built-in LK) | "raft" | "lk"
    init_colour: bool = True             # start the atlas from the frames splatted through the initial mappings
    target_psnr: float = 0.0             # stop early once the sampled PSNR reaches this (0 = run all iterations)
    eval_every: int = 250                # how often the sampled PSNR is measured when target_psnr > 0
    eval_pixels: int = 100_000           # pixels in the fixed random evaluation sample
    checkpoint_every: int = 0            # also save a checkpoint every N steps (0 = only on cancel/error)
    motion_init: str = "affine"          # initial per-frame maps: "affine" (chained robust flow affines, see
                                         # t2l_core.nla.affine_init) | "translation" (median flow translations)
    weights: NLALossWeights = field(default_factory=NLALossWeights)

    def to_dict(self) -> dict:
        """Every setting as plain JSON values (the loss weights as a nested dict)."""
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "NLAFitConfig":
        """The config that :meth:`to_dict` wrote.

        Args:
            d: a dict from :meth:`to_dict` (e.g. a saved atlas's ``fit_config``).

        Returns:
            The :class:`NLAFitConfig`.
        """
        d = dict(d)
        weights = NLALossWeights(**d.pop("weights", {}))
        return NLAFitConfig(weights=weights, **d)
