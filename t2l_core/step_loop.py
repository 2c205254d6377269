"""The optimisation loop both trainings share: an edit layer's generator (paper sections 3.1-3.2) and a layered
atlas. Steps run from where a run stands to its last, with a cancel point before each and a progress report
after each; a cancel or an error saves the run's state, then goes on up. A non-finite loss is the step's own
business: it writes the last good state and raises :class:`~t2l_core.checkpoint.NonFiniteLoss`, which passes
through unchanged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .checkpoint import NonFiniteLoss
from .progress import Hooks


@dataclass
class StepReport:
    """What one finished step reports."""

    logs: dict  # the step's loss terms and whatever else the progress shows (learning rate, PSNR...)
    last: bool = False  # the run ends after this step (e.g. it reached a target quality)


def run_steps(start: int, total: int, step: Callable[[int], StepReport], hooks: Hooks, save: Callable[[], object],
              preview: Optional[Callable[[], torch.Tensor]] = None,
              before: Optional[Callable[[], None]] = None) -> int:
    """Run steps ``start .. total - 1`` (fewer when a step reports it is the last).

    Args:
        start: the first step to run (0-based; a resumed run's finished steps).
        total: the run's steps.
        step: runs step ``i`` (computes, updates the weights) and reports it.
        hooks: cancel points and progress; ``hooks.step(done, total, logs, preview)`` after each step, with
            ``total = done`` after the last one when a step ends the run early.
        save: saves the run's state as it stands (called on a cancel or an error, then the exception goes on).
        preview: the current result, computed when the hooks ask for a preview.
        before: start-up work run first (when there is a step to run), under the same error handling.

    Returns:
        The finished steps.

    Raises:
        NonFiniteLoss: from a step (nothing saved here); whatever cancelled or failed, after ``save``.
    """
    done = start
    try:
        if before is not None and start < total:
            before()
        for i in range(start, total):
            hooks.cancel_point()
            report = step(i)
            done = i + 1
            hooks.step(done, done if report.last else total, report.logs, preview)
            if report.last:
                break
    except NonFiniteLoss:
        raise
    except BaseException:
        save()
        raise
    return done
