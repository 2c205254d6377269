"""Reading and writing safetensors files: reads fail with errors that name the file and say what to do,
writes are atomic.

safetensors reports an empty, truncated or foreign file as a bare ``SafetensorError`` ("header too small",
"invalid JSON in header") without the file's name. These helpers turn every such failure into a
:class:`UnreadableFile` (a ``ValueError``) whose message is ``<kind> file '<path>' <problem>. <remedy>``; the
caller supplies ``remedy`` in the words of the place the message appears (a CLI flag, a ComfyUI folder).
:func:`write_tensors` writes ``<path>.part`` and renames it into place, so a crash never leaves half a file.
"""

from __future__ import annotations

from pathlib import Path

import torch


class UnreadableFile(ValueError):
    """A file that is missing, empty, truncated or not safetensors; ``str()`` is the full message."""


def _check_exists(p: Path, kind: str, remedy: str) -> None:
    if not p.is_file():
        raise FileNotFoundError(_message(kind, p, "was not found", remedy))
    if p.stat().st_size == 0:
        raise UnreadableFile(_message(kind, p, "is empty (0 bytes): an interrupted download or copy", remedy))


def _message(kind: str, p: Path, problem: str, remedy: str) -> str:
    text = f"{kind} file '{p}' {problem}."
    return f"{text} {remedy}" if remedy else text


def _unreadable(kind: str, p: Path, exc: Exception, remedy: str) -> UnreadableFile:
    reason = str(exc).strip() or type(exc).__name__
    return UnreadableFile(_message(kind, p, f"cannot be read as safetensors ({reason}): it is truncated or not a "
                                            "safetensors file", remedy))


def write_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """Write a safetensors file atomically (``<path>.part``, then renamed into place; folders are created).

    Args:
        path: the file.
        tensors: {name: tensor} (copied to contiguous CPU memory).
        metadata: the header's string metadata.

    Returns:
        The path written.
    """
    from safetensors.torch import save_file

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    part = p.with_name(p.name + ".part")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(part), metadata=metadata)
    part.replace(p)
    return p


def read_metadata(path: str | Path, kind: str, remedy: str = "") -> dict:
    """The header metadata of a safetensors file (no tensors are read).

    Args:
        path: the file.
        kind: what the file holds, as the user knows it ("CLIP weights", "atlas").
        remedy: what to do about a missing or damaged file, in the caller's words (ends the message).

    Returns:
        {key: str}. A missing file raises FileNotFoundError, an unreadable one :class:`UnreadableFile`.
    """
    from safetensors import safe_open

    p = Path(path)
    _check_exists(p, kind, remedy)
    try:
        with safe_open(str(p), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as exc:  # SafetensorError, OSError
        raise _unreadable(kind, p, exc, remedy) from None


def read_tensors(path: str | Path, kind: str, remedy: str = "") -> tuple[dict[str, torch.Tensor], dict]:
    """All tensors and the metadata of a safetensors file (a file cut short after its header is reported too).

    Args: as :func:`read_metadata`.

    Returns:
        (tensors {name: tensor}, metadata {key: str}).
    """
    from safetensors import safe_open

    p = Path(path)
    _check_exists(p, kind, remedy)
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # SafetensorError, OSError
        raise _unreadable(kind, p, exc, remedy) from None
    return tensors, meta
