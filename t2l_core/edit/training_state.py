"""The resumable state of an edit's training (image or atlas): generator, MADGRAD state, RNG, history.

Stored through :class:`t2l_core.checkpoint.CheckpointFile` (job ``edit``): tensors ``gen.*``, ``opt.*`` and
``rng_state``; metadata ``lr``, ``config`` (the flat settings, JSON), ``history`` (JSON) and ``version``.
"""

from __future__ import annotations

import json
from typing import Optional, Sequence

import torch

from .. import __version__
from ..checkpoint import (CheckpointFile, all_finite, load_optimizer_state, optimizer_state_tensors,
                          optimizer_tensors, resumed_note)


def write_state(file: CheckpointFile, generator: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int,
                rng_state: torch.Tensor, settings: dict, history: Sequence[dict]):
    """Write the state at the start of a step.

    Args:
        file: the checkpoint file.
        generator, optimizer: the generator and its MADGRAD optimizer.
        step: the number of finished steps.
        rng_state: the RNG at the start of ``step``.
        settings: the flat settings (stored as JSON; the fingerprint comes from them).
        history: the per-step losses so far.

    Returns:
        The path written, or None when the file writes nothing.
    """
    tensors = {f"gen.{k}": v for k, v in generator.state_dict().items()}
    tensors.update(optimizer_state_tensors(optimizer))
    tensors["rng_state"] = rng_state
    meta = {"lr": repr(optimizer.param_groups[0]["lr"]), "config": json.dumps(settings, default=str),
            "history": json.dumps(list(history)), "version": __version__}
    return file.write(tensors, step, meta)


def write_if_finite(file: CheckpointFile, generator: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int,
                    rng_state: torch.Tensor, settings: dict, history: Sequence[dict]):
    """:func:`write_state` when the weights and optimizer state are finite (the last good state).

    Args:
        As :func:`write_state`.

    Returns:
        The path written, or None when nothing was written.
    """
    if not all_finite(generator.parameters(), generator.buffers(), optimizer_tensors(optimizer)):
        return None
    return write_state(file, generator, optimizer, step, rng_state, settings, history)


def read_state(file: CheckpointFile, resume: bool, generator: torch.nn.Module, optimizer: torch.optim.Optimizer,
               rng: torch.Generator, iters: int, notes: list[str]) -> tuple[int, list[dict]]:
    """Restore the run's state from ``file`` when ``resume`` and it belongs to this run.

    Args:
        file: the checkpoint file.
        resume: whether to read it at all.
        generator, optimizer, rng: restored in place.
        iters: the run's steps (for the note).
        notes: messages for the user are appended here.

    Returns:
        ``(first step, history so far)``; ``(0, [])`` when there is nothing to resume (``notes`` says why when
        a checkpoint of another run was found).
    """
    found: Optional[object] = file.read(notes) if resume else None
    if found is None:
        return 0, []
    tensors = found.tensors
    generator.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("gen.")})
    load_optimizer_state(optimizer, tensors)
    optimizer.param_groups[0]["lr"] = float(found.meta["lr"])
    rng.set_state(tensors["rng_state"])
    if found.step > 0:
        notes.append(resumed_note(file.path, found.step, iters))
    return found.step, json.loads(found.meta.get("history", "[]"))
