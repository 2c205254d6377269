"""Every setting of an edit (paper section 3.1 and appendix A.3), stated once: :class:`EditConfig` made of
the sub-configs of the parts it drives.

Each setting keeps one flat public name (``lr``, ``n_views``, ``lambda_structure``, ``bootstrap_schedule``,
``fast`` ...), mapped to its sub-config field by :attr:`EditConfig.FLAT`. The flat dict
(:meth:`EditConfig.to_dict`) is what layer files, checkpoints and their fingerprints store; the CLI options
and the node widgets take their defaults, limits and help from these fields (:mod:`t2l_core.settings`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Optional

from ..clip.templates import as_prompt_list
from ..device import AUTOCAST_MODES
from ..settings import TOP, WHOLE, choices_of, from_flat, setting, to_flat
from .crops import DatasetConfig
from .generator import GeneratorConfig
from .objective import LossWeights
from .views import ViewConfig

BOOTSTRAP_SCHEDULES = ("linear", "exponential", "none")


@dataclass
class OptimConfig:
    """MADGRAD and its learning-rate schedule: lr <- max(lr_min, lr_decay * lr) after every step."""

    lr: float = setting(2.5e-3, "MADGRAD learning rate of the first step.", min=0.0)
    momentum: float = setting(0.9, "MADGRAD momentum.", min=0.0, max=1.0)
    weight_decay: float = setting(0.01, "MADGRAD weight decay.", min=0.0)
    lr_decay: float = setting(0.99, "Learning-rate factor applied after every step.", min=0.0, max=1.0)
    lr_min: float = setting(1e-5, "Smallest learning rate of the schedule.", min=0.0)

    def lr_at(self, step: int) -> float:
        """The schedule in closed form (paper appendix A.3): the learning rate after ``step`` decays.

        Args:
            step: 0-based.

        Returns:
            max(lr_min, lr·lr_decay**step).
        """
        return max(self.lr_min, self.lr * self.lr_decay**step)


@dataclass
class BootstrapConfig:
    """Bootstrapping the opacity towards a relevancy map or mask (paper section 3.1; its weight is
    :attr:`LossWeights.bootstrap`)."""

    schedule: str = setting("linear", "How the bootstrap weight falls to bootstrap_min over bootstrap_steps: "
                                      "linear, exponential, or none (constant).", choices=BOOTSTRAP_SCHEDULES)
    steps: Optional[int] = setting(None, "Steps over which the bootstrap weight falls (None = iters).", min=1)
    min: float = setting(0.0, "Bootstrap weight at the end of the schedule.", min=0.0)
    relevancy_layers: int = setting(1, "How many of CLIP's last blocks the relevancy map uses.", min=1)
    relevancy_on: str = setting("crop", "crop = the relevancy of each augmented crop (the authors'); once = of the "
                                        "whole working image, computed once.", choices=("crop", "once"))
    authors_bug: bool = setting(False, "Only the last example's bootstrap loss counts, as in the authors' code.")


@dataclass
class RuntimeConfig:
    """How a step is computed, never what: a checkpoint made with one value resumes with another."""

    fast: bool = setting(True, "Channels-last generator, fused CLIP image kernels and autocast where it pays; "
                               "gives equal losses.")
    autocast: str = setting("auto", "Precision of the fast path: auto = fp32 generator (TF32) + bf16 CLIP on CUDA, "
                                    "fp32 on CPU; off = fp32 everywhere; bf16-clip/fp16-clip = CLIP passes only; "
                                    "bf16/fp16 = generator too (its gradients disagree with fp32, bench/RESULTS.md).",
                            choices=AUTOCAST_MODES)
    threads: int = setting(0, "CPU threads for this run (0 = keep torch's setting).", min=0)
    compile: bool = setting(False, "Experimental: torch.compile the generator (compiling is slow on small CPUs).")
    save_memory: bool = setting(False, "Lower peak memory for slower steps: every memory-saving measure on and "
                                       "activations recomputed in the backward pass. Same result.")


@dataclass
class EditConfig:
    """Every setting of an image edit, with the authors' effective defaults.

    Build one from flat names with :meth:`from_flat` (``EditConfig.from_flat(prompt="oreo cake", lr=1e-3)``)
    or from sub-configs (``EditConfig(prompt=..., optim=OptimConfig(lr=1e-3))``).
    """

    prompt: str | list[str] = setting("", "What the edited image should show, e.g. 'oreo cake'. Several prompts: "
                                          "one per line (or separated by |).")
    screen_prompt: str | list[str] | None = setting(
        None, "What the layer alone shows, matched as '<text> over a green screen.' Empty = the prompt.")
    source_prompt: str | list[str] | None = setting(
        None, "What the input shows, e.g. 'cake': the source text of the directional loss. Empty = roi_text when "
              "that is set (the paper's L_dir with T_ROI, eq. 3), otherwise no directional loss.")
    roi_text: Optional[str] = setting(None, "Region to edit, e.g. 'horse': its relevancy map guides the opacity "
                                            "early on. Empty = off.")
    exclude_text: Optional[str] = setting(None, "What the edit must leave alone, e.g. 'the left egg': its relevancy "
                                                "map is protected like protect_mask. Empty = off.")
    iters: int = setting(1000, "Training steps (paper: 1000 for an image).", min=1, max=100000)
    seed: int = setting(0, "Same seed and inputs give the same result.", min=0, max=2**31 - 1)
    optim: OptimConfig = setting(default_factory=OptimConfig)
    dataset: DatasetConfig = setting(default_factory=DatasetConfig)
    views: ViewConfig = setting(default_factory=ViewConfig)
    weights: LossWeights = setting(default_factory=LossWeights)
    bootstrap: BootstrapConfig = setting(default_factory=BootstrapConfig)
    generator: GeneratorConfig = setting(default_factory=GeneratorConfig)
    runtime: RuntimeConfig = setting(default_factory=RuntimeConfig)

    #: flat public name -> (sub-config, field), in the order of the flat dict that files store
    FLAT: ClassVar[dict[str, tuple[str, str]]] = {
        "prompt": (TOP, "prompt"), "screen_prompt": (TOP, "screen_prompt"), "source_prompt": (TOP, "source_prompt"),
        "roi_text": (TOP, "roi_text"), "iters": (TOP, "iters"), "seed": (TOP, "seed"),
        "lr": ("optim", "lr"), "momentum": ("optim", "momentum"), "weight_decay": ("optim", "weight_decay"),
        "lr_decay": ("optim", "lr_decay"), "lr_min": ("optim", "lr_min"),
        "size": ("dataset", "size"), "full_image_every": ("dataset", "full_image_every"),
        "jitter_p": ("dataset", "jitter_p"), "flip_p": ("dataset", "flip_p"), "scale_min": ("dataset", "scale_min"),
        "scale_max": ("dataset", "scale_max"), "crop_min": ("dataset", "crop_min"),
        "n_views": ("views", "n_views"), "view_short_side": ("views", "short_side"),
        "view_max_long": ("views", "max_long"), "structure_max_long": ("views", "structure_max_long"),
        "view_min_crop": ("views", "min_crop"), "view_fill": ("views", "fill"),
        "lambda_composition": ("weights", "composition"), "lambda_screen": ("weights", "screen"),
        "lambda_structure": ("weights", "structure"), "sparsity_l1": ("weights", "sparsity_l1"),
        "sparsity_l0": ("weights", "sparsity_l0"), "lambda_bootstrap": ("weights", "bootstrap"),
        "bootstrap_schedule": ("bootstrap", "schedule"), "bootstrap_steps": ("bootstrap", "steps"),
        "bootstrap_min": ("bootstrap", "min"), "relevancy_layers": ("bootstrap", "relevancy_layers"),
        "relevancy_on": ("bootstrap", "relevancy_on"), "authors_bootstrap_bug": ("bootstrap", "authors_bug"),
        "generator": ("generator", WHOLE),
        "fast": ("runtime", "fast"), "autocast": ("runtime", "autocast"), "threads": ("runtime", "threads"),
        "compile": ("runtime", "compile"), "save_memory": ("runtime", "save_memory"),
        "exclude_text": (TOP, "exclude_text"), "lambda_protect": ("weights", "protect"),
    }

    # -- flat names ---------------------------------------------------------------------------------------

    @classmethod
    def from_flat(cls, settings: Optional[dict] = None, /, **more: Any) -> "EditConfig":
        """A config from flat names.

        Args:
            settings: ``{flat name: value}``, or None.
            **more: more flat names; they override ``settings``.

        Returns:
            The config, defaults for every name not given.

        Raises:
            ValueError: a name is not in :attr:`FLAT`.
        """
        return from_flat(cls, {**(settings or {}), **more})

    def to_flat(self) -> dict:
        """``{flat name: value}`` in :attr:`FLAT` order; ``generator`` as a dict."""
        return to_flat(self)

    @classmethod
    def from_dict(cls, d: dict) -> "EditConfig":
        """A config from the flat dict a layer file or checkpoint stored.

        Args:
            d: ``{flat name: value}``; names not in :attr:`FLAT` are ignored.

        Returns:
            The config.
        """
        return from_flat(cls, d, strict=False)

    def to_dict(self) -> dict:
        """The flat dict layer files, checkpoints and fingerprints store (same as :meth:`to_flat`)."""
        return to_flat(self)

    # -- derived settings ---------------------------------------------------------------------------------

    def directional_source(self) -> str | list[str] | None:
        """The source text T_ROI of the directional loss L_dir(I_s, I_o, T_ROI, T) (paper eq. 3):
        ``source_prompt`` when given, else ``roi_text`` when given, else None (no directional loss)."""
        for text in (self.source_prompt, self.roi_text):
            if isinstance(text, str) and text.strip():
                return text
            if isinstance(text, (list, tuple)) and any(t and t.strip() for t in text):
                return list(text)
        return None

    def bootstrap_steps_or_iters(self) -> int:
        """Steps over which the bootstrap weight falls: ``bootstrap.steps``, or ``iters`` when None."""
        return self.bootstrap.steps if self.bootstrap.steps is not None else self.iters

    def validate(self) -> None:
        """Check the settings that the field limits alone do not cover.

        Raises:
            ValueError: saying which setting to change and how.
        """
        as_prompt_list(self.prompt, "target prompt")
        if self.iters < 1:
            raise ValueError(f"iters must be at least 1, got {self.iters}")
        if self.views.n_views < 1:
            raise ValueError(f"n_views must be at least 1, got {self.views.n_views}")
        b = self.bootstrap
        if b.schedule not in BOOTSTRAP_SCHEDULES:
            raise ValueError(f"bootstrap_schedule must be linear, exponential or none, got '{b.schedule}'")
        if b.relevancy_on not in choices_of(BootstrapConfig, "relevancy_on"):
            raise ValueError(f"relevancy_on must be 'crop' or 'once', got '{b.relevancy_on}'")
        if self.optim.lr <= 0 or self.optim.lr_min < 0:
            raise ValueError("lr must be > 0 and lr_min >= 0")
        if self.runtime.autocast not in AUTOCAST_MODES:
            raise ValueError(f"autocast must be one of {AUTOCAST_MODES}, got '{self.runtime.autocast}'")
        if self.runtime.threads < 0:
            raise ValueError(f"threads must be 0 (keep the current setting) or positive, got {self.runtime.threads}")



#: the flat names of the settings that change only how a step is computed (left out of fingerprints)
RUNTIME_FIELDS = tuple(flat for flat, (sub, _) in EditConfig.FLAT.items() if sub == "runtime")
#: the flat names of the spill-control settings (left out of fingerprints of runs without a protected region)
PROTECT_FIELDS = ("exclude_text", "lambda_protect")
