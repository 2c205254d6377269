"""Device and precision selection (CUDA when present, CPU otherwise)."""

from __future__ import annotations

import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Return a torch.device; ``"auto"``/None picks CUDA when available, else CPU.

    Raises ValueError for a name torch does not know as a device, and RuntimeError when CUDA
    (or CUDA device N) is asked for on a machine without it.
    """
    if device is None or (isinstance(device, str) and device.strip() == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device.strip() if isinstance(device, str) else device)
    except (RuntimeError, ValueError):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda' (or 'cuda:N'), got '{device}'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device '{device}' was requested but CUDA is not available on this machine; use 'cpu' or 'auto'."
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise RuntimeError(f"device '{device}' was requested but this machine has {torch.cuda.device_count()} "
                           f"CUDA device(s) (cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    return dev


def resolve_dtype(precision: str | torch.dtype, device: torch.device) -> torch.dtype:
    """Map a precision name (``fp32``/``fp16``/``bf16``/``auto``) to a dtype valid on ``device``.

    ``auto`` is fp32: CLIP weights are kept in fp32 and the fast path uses autocast instead.
    fp16 weights on CPU are refused because most CPU kernels do not support them.
    """
    if isinstance(precision, torch.dtype):
        return precision
    if precision == "auto":
        return torch.float32
    if precision not in DTYPES:
        raise ValueError(f"precision must be one of {sorted(DTYPES) + ['auto']}, got '{precision}'")
    dtype = DTYPES[precision]
    if dtype == torch.float16 and device.type == "cpu":
        raise ValueError("fp16 weights are not supported on CPU; choose 'fp32' or 'bf16' for a CPU device.")
    return dtype
