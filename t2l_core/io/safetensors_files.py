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
from typing import Optional

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


#: safetensors' names of the tensor types written
_DTYPE_NAMES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
                torch.bool: "BOOL"}


def write_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str],
                  streamed: Optional[dict] = None) -> Path:
    """Write a safetensors file atomically (``<path>.part``, then renamed into place; folders are created).

    The file is the safetensors layout (8-byte little-endian header length, the JSON header padded with spaces
    to a multiple of 8, then every tensor's bytes in the header's order; wider types first, so each stays
    aligned), read back by ``safetensors.safe_open``. Each tensor's bytes are written straight from its memory,
    with no serialised copy of the whole file, so a file as large as the free memory can be written (an atlas
    fit's optical flow, a minute of video).

    Args:
        path: the file.
        tensors: {name: tensor} (a non-contiguous or GPU tensor is copied to contiguous CPU memory first).
        metadata: the header's string metadata.
        streamed: None, or {name: :class:`~t2l_core.io.frame_sources.StreamedVideo`} (uint8) too large to
            hold: read in order a few frames at a time and written after the others.

    Returns:
        The path written.
    """
    import json
    import struct

    from .frame_sources import frame_chunks

    streamed = streamed or {}
    bad = {k: type(v).__name__ for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)}
    if bad:
        raise TypeError(f"safetensors metadata must map str to str; not: {bad}")
    small = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    unknown = sorted({str(v.dtype) for v in small.values() if v.dtype not in _DTYPE_NAMES})
    if unknown:
        raise TypeError(f"cannot write tensors of type {', '.join(unknown)} to a safetensors file")
    order = sorted(small, key=lambda k: (-small[k].element_size(), k))
    header: dict = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for k in order:
        n = small[k].numel() * small[k].element_size()
        header[k] = {"dtype": _DTYPE_NAMES[small[k].dtype], "shape": list(small[k].shape),
                     "data_offsets": [offset, offset + n]}
        offset += n
    for k, video in streamed.items():
        n = int(torch.Size(video.shape).numel())
        header[k] = {"dtype": "U8", "shape": list(video.shape), "data_offsets": [offset, offset + n]}
        offset += n
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    part = p.with_name(p.name + ".part")
    with open(part, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for k in order:
            if small[k].numel():
                f.write(small[k].reshape(-1).view(torch.uint8).numpy().data)
        for video in streamed.values():
            for _, chunk in frame_chunks(video):
                f.write(chunk.contiguous().numpy().data)
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
