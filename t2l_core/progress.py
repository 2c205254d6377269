"""Progress reporting and cancellation hooks shared by every long-running core loop.

The core never imports ComfyUI: a node passes ``on_step`` (bound to a ComfyUI ProgressBar) and
``check_cancel`` (bound to ComfyUI's interrupt check). The CLI passes a console printer.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import torch

# on_step(step, total, losses, preview): step is 1-based; preview is an optional [H,W,3] float tensor in 0..1.
StepCallback = Callable[[int, int, dict, Optional[torch.Tensor]], None]
CancelCheck = Callable[[], None]
# on_phase(name, done, total): progress of a phase that is not a training step (optical flow, atlas sampling,
# rendering); ``done`` counts finished units (frame pairs, frames, rows) out of ``total``.
PhaseCallback = Callable[[str, int, int], None]


# The phases of a training run's start-up, before its first step (seconds to a minute at 512 px on a CPU), each
# reported as ``on_phase(name, 0, n)`` when it starts and ``(n, n)`` when it ends, so progress shows from the
# first moment.
PHASE_KEY = "start-up: checkpoint key (CLIP weights digest)"
PHASE_TEXT = "start-up: CLIP text bank (prompt x templates)"
PHASE_RELEVANCY = "start-up: relevancy map"
PHASE_DATASET = "start-up: internal dataset"
PHASE_STRUCTURE = "start-up: structure target"


def losses_to_floats(terms: dict[str, torch.Tensor]) -> dict[str, float]:
    """Loss tensors as Python floats, with ONE device-to-host transfer.

    Training loops call it once per step, after the backward pass: converting term by term before it
    (``float(t)`` each) would make the host wait for the device several times inside the step. The values
    are exactly ``float(t)`` of each tensor (float32 -> float64 is exact).

    Args:
        terms: ``{name: one-element tensor}``, detached.

    Returns:
        ``{name: float}`` in the same key order.
    """
    if not terms:
        return {}
    names = list(terms)
    values = torch.stack([terms[n].detach().reshape(()).to(torch.float64) for n in names]).tolist()
    return dict(zip(names, values))


class Cancelled(RuntimeError):
    """Raised by a ``check_cancel`` hook to stop a loop; the loop saves its checkpoint first."""


@dataclass
class Hooks:
    """Callbacks a long loop calls every step.

    Args:
        on_step: ``on_step(step, total, losses, preview)`` after each step (1-based; preview None or
            [H,W,3] float in 0..1).
        check_cancel: called at cancel points; raises (e.g. :class:`Cancelled`) to stop.
        preview_every: steps between previews (0 = none).
        extra: free-form data a caller passes along.
        on_phase: ``on_phase(name, done, total)`` during phases other than training steps.
    """

    on_step: Optional[StepCallback] = None
    check_cancel: Optional[CancelCheck] = None
    preview_every: int = 25
    extra: dict = field(default_factory=dict)
    on_phase: Optional[PhaseCallback] = None

    def step(self, step: int, total: int, losses: dict, preview_fn: Optional[Callable[[], torch.Tensor]] = None) -> None:
        """Report a finished step; compute a preview only every ``preview_every`` steps (and at the end).

        Args:
            step: the 1-based step just finished.
            total: the run's steps.
            losses: the step's loss terms.
            preview_fn: None, or returns the preview, [H,W,3] float in 0..1 (called without grad).
        """
        if self.on_step is not None:
            preview = None
            if preview_fn is not None and self.preview_every > 0 and (step % self.preview_every == 0 or step == total):
                with torch.no_grad():
                    preview = preview_fn()
            self.on_step(step, total, losses, preview)

    def cancel_point(self) -> None:
        """Call ``check_cancel`` (which raises to stop) when there is one."""
        if self.check_cancel is not None:
            self.check_cancel()

    def phase(self, name: str, done: int, total: int) -> None:
        """Report progress of a long phase other than training (also a cancel point).

        Args:
            name: the phase, as shown to the user.
            done: finished units (frame pairs, frames, rows).
            total: all units.
        """
        self.cancel_point()
        if self.on_phase is not None:
            self.on_phase(name, done, total)

    def phase_callback(self, name: str) -> Callable[[int, int], None]:
        """A progress callback for loops that take an ``on_frame``/``on_pair`` callback.

        Args:
            name: the phase, as shown to the user.

        Returns:
            ``(done, total) -> None``, reporting through :meth:`phase`.
        """
        return lambda done, total: self.phase(name, done, total)


@contextlib.contextmanager
def startup_phase(hooks: Hooks, name: str) -> Iterator[None]:
    """Report a one-unit start-up phase: ``(name, 0, 1)`` before the block (a cancel point too) and
    ``(name, 1, 1)`` after it.

    Args:
        hooks: the run's hooks.
        name: the phase, as shown to the user (one of the ``PHASE_*`` names).
    """
    hooks.phase(name, 0, 1)
    yield
    hooks.phase(name, 1, 1)


def console_printer(every: int = 50) -> StepCallback:
    """A StepCallback that prints the losses (for the CLI).

    Args:
        every: print every this many steps (and the first and last).

    Returns:
        The callback.
    """

    def _print(step: int, total: int, losses: dict, preview: Optional[torch.Tensor]) -> None:
        if step % every == 0 or step == total or step == 1:
            text = " ".join(f"{k}={float(v):.4f}" for k, v in losses.items())
            print(f"[{step}/{total}] {text}", flush=True)

    return _print


def console_phase_printer(parts: int = 10) -> PhaseCallback:
    """A PhaseCallback that prints a phase at its start, about every 1/``parts`` of it and at its end.

    Args:
        parts: how many progress lines a phase prints at most (plus start and end).

    Returns:
        The callback.
    """
    shown: dict = {}

    def _print(name: str, done: int, total: int) -> None:
        mark = (done * parts) // max(total, 1)
        if done == 1 or done == total or shown.get(name) != mark:
            shown[name] = mark
            print(f"{name}: {done}/{total}", flush=True)

    return _print


@contextlib.contextmanager
def cancel_inside(check_cancel: Optional[CancelCheck], *modules: torch.nn.Module) -> Iterator[None]:
    """Check for cancellation inside long forward and backward passes, not only between steps.

    ``check_cancel`` runs after every leaf module of ``modules`` (e.g. each convolution of the generator and
    each CLIP block) in the forward pass, and again when the gradient of that module's output is computed in
    the backward pass, so a cancel takes effect within one layer's work instead of one whole training step.
    Hooks are removed on exit.

    Args:
        check_cancel: None (the block runs unhooked), or raises to cancel.
        *modules: the modules whose leaf modules are hooked.
    """
    if check_cancel is None:
        yield
        return

    def on_grad(grad: torch.Tensor) -> None:
        check_cancel()

    def after_forward(module, args, output) -> None:
        check_cancel()
        if isinstance(output, torch.Tensor) and output.requires_grad:
            output.register_hook(on_grad)

    handles = []
    for root in modules:
        for sub in root.modules():
            if next(sub.children(), None) is None:  # leaf modules only
                handles.append(sub.register_forward_hook(after_forward))
    try:
        yield
    finally:
        for h in handles:
            h.remove()
