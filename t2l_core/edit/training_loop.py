"""The one training loop of an edit layer, for images (paper section 3.1) and videos (section 3.2).

Each step: sample the step's examples (the image or video job builds them and runs the generator on them),
compute the objective (paper eq. 2), back-propagate, check the loss is finite, take a MADGRAD step and decay
the learning rate (lr ← max(lr_min, lr_decay·lr)). All randomness comes from one generator seeded with the
run's seed, so a run is reproducible, and a resumed run equals the uninterrupted one bit for bit.

A cancel (``hooks.check_cancel`` raising, also inside a step) or an error writes a resumable checkpoint,
then re-raises; a non-finite loss stops the run with the last good state written. A finished run removes its
checkpoint unless it is kept (:mod:`t2l_core.checkpoint`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol, Sequence

import madgrad
import torch

from ..checkpoint import CheckpointFile, NonFiniteLoss, nonfinite_message
from ..progress import Hooks, cancel_inside, losses_to_floats
from ..step_loop import StepReport, run_steps
from ..seeding import make_generator
from .bootstrap import bootstrap_schedule
from .config import OptimConfig
from .objective import LossWeights, StepExamples, TextBanks, opacity_terms, plan_objective
from .step_runner import PlainStepRunner
from .training_state import read_state, write_if_finite, write_state
from .views import ViewAugmenter, ViewConfig, structure_view


class WholeInputTarget:
    """The structure target (paper eqs. 5-6) of the whole input, a working image or an atlas: it never changes,
    so it is encoded once, on the first step that has the whole input as an example.

    Args:
        clip: the CLIP the runner computes with.
        views: the CLIP view settings (the structure view's size).
        structure_weight: the loss's weight; at 0 there is no target.
    """

    def __init__(self, clip, views: ViewConfig, structure_weight: float) -> None:
        self.clip, self.views, self.weight = clip, views, structure_weight
        self._tokens: Optional[torch.Tensor] = None

    def prepare(self, whole: torch.Tensor) -> None:
        """Encode the target now (before the first step, so its time is reported as a start-up phase); the
        same tokens :meth:`last_of` would encode on the first step that needs them.

        Args:
            whole: the whole input ``[1,3,h,w]``.
        """
        self.last_of(whole, 1)

    def last_of(self, whole: torch.Tensor, n: int) -> Optional[list]:
        """Cached structure targets of ``n`` examples whose last is ``whole`` ``[1,3,h,w]``: None for the others.

        Returns:
            ``[None] * (n - 1) + [tokens]``, or None when the structure loss is off.
        """
        if self.weight <= 0:
            return None
        if self._tokens is None:
            with torch.no_grad():
                self._tokens = self.clip.image_tokens(structure_view(whole, self.views))
        return [None] * (n - 1) + [self._tokens]


class ExampleSource(Protocol):
    """What an image or a video edit gives the loop: its examples and a preview."""

    def examples(self, step: int, rng: torch.Generator, runner: PlainStepRunner, bootstrap_weight: float) -> StepExamples:
        """Sample a step's examples and run the generator on them.

        Args:
            step: the 0-based step.
            rng: the run's RNG (all of the step's randomness).
            runner: runs the generator (:meth:`PlainStepRunner.generate`).
            bootstrap_weight: λ_b of this step; 0 = no bootstrap targets are needed.

        Returns:
            The examples, with the generator's graph.
        """

    def prepare(self, runner: PlainStepRunner, hooks: Hooks) -> None:
        """Optional: start-up work done before the first step, inside the loop's scope (reported through
        ``hooks.phase``). The loop calls it when a source has it.

        Args:
            runner: runs the passes.
            hooks: the run's hooks.
        """

    def preview(self, runner: PlainStepRunner) -> torch.Tensor:
        """The current edit on the whole input (no grad).

        Args:
            runner: runs the generator.

        Returns:
            [H,W,3] in 0..1.
        """


@dataclass
class LoopSettings:
    """The loop's settings: steps, seed, optimizer (MADGRAD), objective and opacity bootstrapping."""

    iters: int
    seed: int
    optim: OptimConfig
    banks: TextBanks
    views: ViewConfig
    weights: LossWeights
    bootstrap_weight: Callable[[int], float]  # step -> weight of L_init (paper eq. 8)
    authors_bootstrap_bug: bool = False
    settings: dict = field(default_factory=dict)  # the flat settings stored with a checkpoint

    @classmethod
    def from_config(cls, config, banks: TextBanks) -> "LoopSettings":
        """The loop's settings of an edit.

        Args:
            config: an image or video edit config.
            banks: its encoded text banks.

        Returns:
            The settings.
        """
        return cls(iters=config.iters, seed=config.seed, optim=config.optim, banks=banks, views=config.views,
                   weights=config.weights, bootstrap_weight=bootstrap_schedule(config),
                   authors_bootstrap_bug=config.bootstrap.authors_bug, settings=config.to_dict())


@dataclass
class LoopResult:
    """The trained generator's history: per-step losses, steps done, steps taken from a checkpoint, notes."""

    history: list[dict]
    steps: int
    resumed_from: int
    notes: list[str]


def train_generator(generator: torch.nn.Module, source: ExampleSource, loop: LoopSettings, runner: PlainStepRunner,
                    hooks: Hooks, checkpoint: CheckpointFile, resume: bool = False,
                    keep_checkpoint: bool = False) -> LoopResult:
    """Train the generator on the examples of an image or video edit (paper sections 3.1-3.2, appendix A.3).

    Args:
        generator: the generator G_θ, prepared by ``runner``.
        source: builds each step's examples.
        loop: steps, seed, optimizer and objective settings.
        runner: how a step is computed.
        hooks: progress, cancel and preview callbacks.
        checkpoint: the run's checkpoint file.
        resume: continue from ``checkpoint`` when it belongs to this run.
        keep_checkpoint: keep the checkpoint of a finished run.

    Returns:
        The loss history and step counts.

    Raises:
        NonFiniteLoss: a loss was not finite (the last good state is written).
    """
    o = loop.optim
    opt = madgrad.MADGRAD(generator.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    rng = make_generator(loop.seed)
    notes: list[str] = []
    start, history = read_state(checkpoint, resume, generator, opt, rng, loop.iters, notes)
    state = _RunState(done=start, rng_state=rng.get_state())

    def write(history_now: Sequence[dict]):
        return write_state(checkpoint, generator, opt, state.done, state.rng_state, loop.settings, history_now)

    def one_step(step: int) -> StepReport:
        terms, bootstrap = _step(step, source, loop, runner, augmenter, opt, rng, hooks)
        if not math.isfinite(terms["total"]):  # before the update: the weights stay the last good ones
            saved = write_if_finite(checkpoint, generator, opt, state.done, state.rng_state, loop.settings,
                                    history[:state.done])
            raise NonFiniteLoss(nonfinite_message(step + 1, terms, saved, "Lower the learning rate or the loss weights."))
        hooks.cancel_point()
        terms["lr"] = _update(opt, loop)
        if bootstrap is not None:
            terms["bootstrap_weight"] = bootstrap
        history.append(terms)
        runner.end_step()
        # a cancel raised by the progress callback (ComfyUI checks it there) comes after this step's update
        state.done, state.rng_state = step + 1, rng.get_state()
        return StepReport(terms)

    # cancel within a layer, not only between steps
    with cancel_inside(hooks.check_cancel, generator, runner.clip.visual), runner.loop_scope():
        augmenter = runner.augmenter(loop.views)
        prepare = getattr(source, "prepare", None)
        run_steps(start, loop.iters, one_step, hooks, lambda: write(history[:state.done]),
                  preview=lambda: source.preview(runner),
                  before=(lambda: prepare(runner, hooks)) if prepare is not None else None)
    checkpoint.finish(keep_checkpoint, lambda: write(history))
    return LoopResult(history, state.done, start, notes)


@dataclass
class _RunState:
    """How far the run is: what a checkpoint written at this point stores."""

    done: int  # finished steps
    rng_state: torch.Tensor  # the RNG at the start of step ``done`` (what a resume repeats)


def _step(step: int, source: ExampleSource, loop: LoopSettings, runner: PlainStepRunner, augmenter: ViewAugmenter,
          opt: torch.optim.Optimizer, rng: torch.Generator, hooks: Hooks) -> tuple[dict, Optional[float]]:
    """Sample, generate, objective (paper eq. 2), backward for step ``step`` (the update is not applied yet).

    Returns:
        The weighted loss terms and ``"total"`` as floats, and the bootstrap weight when the step bootstrapped.
    """
    boot_weight = loop.bootstrap_weight(step)
    ex = source.examples(step, rng, runner, boot_weight)
    opt.zero_grad(set_to_none=True)
    plan = plan_objective(runner.clip, ex, loop.banks, loop.views, loop.weights, rng, augmenter=augmenter,
                          cancel_point=hooks.cancel_point)
    opacity = opacity_terms(ex.alphas, loop.weights, ex.bootstrap_targets, boot_weight, loop.authors_bootstrap_bug,
                            ex.protect, ex.trained_alphas)
    terms = losses_to_floats(runner.backward(plan, opacity, ex.alphas[0], hooks.cancel_point))  # one device sync
    return terms, (boot_weight if ex.bootstrap_targets is not None else None)


def _update(opt: torch.optim.Optimizer, loop: LoopSettings) -> float:
    """The MADGRAD step, then the learning-rate decay; returns the new learning rate."""
    opt.step()
    opt.param_groups[0]["lr"] = max(loop.optim.lr_min, loop.optim.lr_decay * opt.param_groups[0]["lr"])
    return opt.param_groups[0]["lr"]
