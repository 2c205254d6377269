"""One rule for every resumable run (image edits, atlas edits, atlas fits): its checkpoint exists to survive a
cancel or a crash. It is written when a run stops early, used only by a run with exactly the same result
key (inputs, settings, target iterations, CLIP), and removed when the run finishes unless the caller asks
to keep it. A checkpoint of other inputs is never used: the run starts over and replaces it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch

PARTIAL_SUFFIXES = (".part", ".tmp")  # a checkpoint being written (renamed into place when complete)


def remove_run_file(path: str | Path | None) -> bool:
    """Delete ``path`` and any half-written sibling (``.part``/``.tmp``). Returns whether ``path`` existed."""
    if path is None:
        return False
    p = Path(path)
    existed = p.is_file()
    for q in (p, *(p.with_name(p.name + s) for s in PARTIAL_SUFFIXES)):
        try:
            os.remove(q)
        except FileNotFoundError:
            pass
    return existed


def all_finite(*tensor_groups) -> bool:
    """Whether every floating tensor in the given iterables (parameters, optimizer states) is finite."""
    for group in tensor_groups:
        for t in group:
            if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t.detach()).all()):
                return False
    return True


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> list:
    return [v for st in optimizer.state.values() if isinstance(st, dict) for v in st.values() if torch.is_tensor(v)]


def stale_note(path: str | Path) -> str:
    return (f"the checkpoint {path} was made by a run with other inputs or settings (image/frames, masks, "
            "prompts, iterations, seed, CLIP weights or precision); it was not used: this run trains from the "
            "start and takes its place")


def resumed_note(path: str | Path, step: int, total: int) -> str:
    return f"resumed from the checkpoint {path} at step {step} of {total}"


def nonfinite_message(step: int, terms, saved: Optional[str | Path], hint: str) -> str:
    where = (f"the checkpoint {saved} holds the last good state (step {step - 1})" if saved is not None
             else "no checkpoint was written (the weights themselves were no longer finite)")
    return f"the loss became non-finite at step {step} ({terms}); {where}. {hint}"


class NonFiniteLoss(FloatingPointError):
    """A training or fitting loop met a non-finite loss; raised after the last good state was saved."""
