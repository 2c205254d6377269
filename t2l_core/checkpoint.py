"""Checkpoints of every resumable job (image edits, atlas edits, atlas fits): one file format, one key rule.

A checkpoint exists to survive a cancel or a crash. It is written when a run stops early (and, for atlas fits,
every ``checkpoint_every`` steps), used only by a run with exactly the same result key (inputs, settings,
target iterations, CLIP, device class, :data:`RESULT_VERSION`), and removed when the run finishes unless the
caller keeps it. A checkpoint of other inputs is never used: the run starts over, replaces it, and says so in a
note. A file that is not a checkpoint of this kind of job is an error that names it.

File: safetensors, written to ``<path>.part`` and renamed into place (a crash never leaves half a file).
Tensors: the job's state (``gen.*`` or ``model.*``), the optimizer state (``opt.<parameter index>.<name>``
and ``opt.<name>`` for state not tied to a parameter) and ``rng_state``. Metadata: ``format`` (the tag
:data:`FORMAT`), ``job``, ``key``, ``step`` and whatever the job adds (settings, history...). Files with the
older tags ``t2l_edit_checkpoint/1`` (edits) and ``t2l-nla-checkpoint`` (atlas fits) are read as well.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from .io.safetensors_files import write_tensors

# The version of the numbers the code computes, part of every result key (edits and atlas fits): a checkpoint
# written by code that computed other numbers is never resumed. tests/test_result_version.py ties it to the golden
# runs' recorded histories, so re-recording them (because a result changed) fails until this is raised.
RESULT_VERSION = "2"
FORMAT = "t2l-checkpoint"
FORMAT_VERSION = "1"
EDIT_JOB = "edit"  # an image edit or an atlas edit (the generator and its MADGRAD state)
ATLAS_FIT_JOB = "atlas-fit"  # a layered-atlas fit (the atlas model and its Adam state)
# the older tags, still read: job -> (format tag, metadata field of the key)
LEGACY_TAGS = {EDIT_JOB: ("t2l_edit_checkpoint/1", "fingerprint"), ATLAS_FIT_JOB: ("t2l-nla-checkpoint", "key")}
JOB_NAMES = {EDIT_JOB: "edit", ATLAS_FIT_JOB: "atlas fit"}
PARTIAL_SUFFIXES = (".part", ".tmp")  # a checkpoint being written (renamed into place when complete)


def result_hash() -> "hashlib._Hash":
    """The hash every result key is built on: sha256, started with :data:`RESULT_VERSION` (read at call time).

    Returns:
        A fresh ``hashlib.sha256`` object.
    """
    return hashlib.sha256(f"t2l-result-{RESULT_VERSION}|".encode())


class NonFiniteLoss(FloatingPointError):
    """A training or fitting loop met a non-finite loss; raised after the last good state was saved."""


@dataclass
class Checkpoint:
    """What :meth:`CheckpointFile.read` found: the tensors, the metadata and the step they resume at."""

    tensors: dict[str, torch.Tensor]
    meta: dict[str, str]
    step: int


class CheckpointFile:
    """The checkpoint of one run.

    Args:
        path: the file; None = the run keeps none.
        job: :data:`EDIT_JOB` or :data:`ATLAS_FIT_JOB`.
        key: the run's result key (a fingerprint of its inputs and settings).

    Raises:
        ValueError: an unknown job.
    """

    def __init__(self, path: str | Path | None, job: str, key: str) -> None:
        if job not in LEGACY_TAGS:
            raise ValueError(f"unknown checkpoint job '{job}'")
        self.path = Path(path) if path is not None else None
        self.job, self.key = job, key

    def write(self, tensors: dict[str, torch.Tensor], step: int, meta: Optional[dict[str, str]] = None) -> Optional[Path]:
        """Write the state at the start of a step, atomically.

        Args:
            tensors: the job's state.
            step: the number of finished steps.
            meta: more metadata (strings).

        Returns:
            The path, or None when the run keeps no checkpoint.
        """
        if self.path is None:
            return None
        header = {"format": FORMAT, "format_version": FORMAT_VERSION, "job": self.job, "key": self.key,
                  "step": str(int(step)), **(meta or {})}
        return write_tensors(self.path, tensors, header)

    def read(self, notes: list[str]) -> Optional[Checkpoint]:
        """The checkpoint at ``path`` when it belongs to this run.

        Args:
            notes: a note is appended when the file was made by a run with another key (it is not used).

        Returns:
            The checkpoint, or None when there is none or its key differs.

        Raises:
            ValueError: the file is not a checkpoint of this job.
        """
        if self.path is None or not self.path.is_file():
            return None
        from safetensors import safe_open

        with safe_open(str(self.path), framework="pt") as f:
            meta = f.metadata() or {}
            if _key_of(meta, self.job) is None:
                raise ValueError(f"{self.path} is not a Text2LIVE {JOB_NAMES[self.job]} checkpoint; "
                                 "delete it or turn resume off")
            if _key_of(meta, self.job) != self.key:
                notes.append(stale_note(self.path))
                return None
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        return Checkpoint(tensors, meta, int(meta["step"]))

    def finish(self, keep: bool, write_final) -> Optional[Path]:
        """At the end of a run: keep the final state or remove the checkpoint.

        Args:
            keep: whether to keep a checkpoint.
            write_final: called (to write the final state) when ``keep``.

        Returns:
            The kept path, or None.
        """
        if self.path is None:
            return None
        if keep:
            write_final()
            return self.path
        remove_run_file(self.path)
        return None


def _key_of(meta: dict[str, str], job: str) -> Optional[str]:
    """The result key a checkpoint's metadata holds for ``job`` (any format tag), None if not one of its."""
    if meta.get("format") == FORMAT:
        return meta.get("key") if meta.get("job") == job else None
    tag, field = LEGACY_TAGS[job]
    if meta.get("format") == tag or (job == ATLAS_FIT_JOB and "format" not in meta and "key" in meta):
        return meta.get(field)
    return None


# -- optimizer state ---------------------------------------------------------------------------------


def optimizer_state_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The optimizer's state as tensors.

    Args:
        optimizer: MADGRAD or Adam.

    Returns:
        ``opt.<i>.<name>`` for the i-th parameter (over all groups, in order) and ``opt.<name>`` for state
        not tied to a parameter (MADGRAD's step count ``k``), on the CPU.
    """
    index = {id(p): i for i, p in enumerate(p for g in optimizer.param_groups for p in g["params"])}
    out: dict[str, torch.Tensor] = {}
    for owner, state in optimizer.state.items():
        if isinstance(owner, torch.Tensor):
            for name, value in state.items():
                out[f"opt.{index[id(owner)]}.{name}"] = torch.as_tensor(value).detach().cpu().reshape(
                    torch.as_tensor(value).shape or (1,)).contiguous()
        elif torch.is_tensor(state):
            out[f"opt.{owner}"] = state.detach().cpu().reshape(-1)
    return out


def load_optimizer_state(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    """Restore what :func:`optimizer_state_tensors` wrote (also the ``opt.<group>.<j>.<name>`` keys of the
    ``t2l-nla-checkpoint`` format).

    State of a parameter's shape takes the parameter's memory format, so a channels-last generator resumes
    bit for bit; scalar state (Adam's ``step``) becomes a 0-dim tensor on the parameter's device, MADGRAD's
    ``k`` a long tensor.

    Args:
        optimizer: restored in place.
        tensors: a checkpoint's tensors; those not starting with ``opt.`` are ignored.
    """
    groups = [g["params"] for g in optimizer.param_groups]
    params = [p for g in groups for p in g]
    for key, value in tensors.items():
        if not key.startswith("opt."):
            continue
        parts = key.split(".")
        if len(parts) == 2:
            optimizer.state[parts[1]] = value.to(torch.long)
            continue
        param = groups[int(parts[1])][int(parts[2])] if len(parts) == 4 else params[int(parts[1])]
        name = parts[-1]
        if name == "step":
            optimizer.state[param][name] = torch.tensor(float(value.reshape(-1)[0]), device=param.device)
        elif value.shape == param.shape:
            optimizer.state[param][name] = torch.empty_like(param).copy_(value)
        else:
            optimizer.state[param][name] = value.to(param.device)


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> list:
    """Every tensor in the optimizer's state (for :func:`all_finite`).

    Args:
        optimizer: any torch optimizer.

    Returns:
        The tensors.
    """
    return [v for st in optimizer.state.values() if isinstance(st, dict) for v in st.values() if torch.is_tensor(v)]


def all_finite(*tensor_groups) -> bool:
    """Whether every floating tensor is finite.

    Args:
        *tensor_groups: iterables of tensors (parameters, buffers, optimizer states); other items are skipped.

    Returns:
        True when no floating tensor holds inf or NaN.
    """
    for group in tensor_groups:
        for t in group:
            if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t.detach()).all()):
                return False
    return True


# -- files and messages --------------------------------------------------------------------------------


def remove_run_file(path: str | Path | None) -> bool:
    """Delete a run's file and any half-written sibling (``.part``/``.tmp``).

    Args:
        path: the file, or None (nothing to do).

    Returns:
        Whether ``path`` existed.
    """
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


def stale_note(path: str | Path) -> str:
    """The note that the checkpoint at ``path`` belongs to another run and is replaced."""
    return (f"the checkpoint {path} was made by a run with other inputs or settings (image/frames, masks, "
            "prompts, iterations, seed, CLIP weights or precision); it was not used: this run trains from the "
            "start and takes its place")


def resumed_note(path: str | Path, step: int, total: int) -> str:
    """The note that a run resumed from ``path`` at ``step`` of ``total``."""
    return f"resumed from the checkpoint {path} at step {step} of {total}"


def nonfinite_message(step: int, terms, saved: Optional[str | Path], hint: str) -> str:
    """The message of :class:`NonFiniteLoss`.

    Args:
        step: the 1-based step whose loss was not finite.
        terms: the step's loss terms, as shown to the user.
        saved: the checkpoint holding the last good state, or None when none was written.
        hint: what to change, e.g. "Lower the learning rate or the loss weights."

    Returns:
        The message.
    """
    where = (f"the checkpoint {saved} holds the last good state (step {step - 1})" if saved is not None
             else "no checkpoint was written (the weights themselves were no longer finite)")
    return f"the loss became non-finite at step {step} ({terms}); {where}. {hint}"
