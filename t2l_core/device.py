"""Device and precision selection (CUDA when present, CPU otherwise)."""

from __future__ import annotations

import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Return a torch.device; ``"auto"``/None picks CUDA when available, else CPU."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device '{device}' was requested but CUDA is not available on this machine; use 'cpu' or 'auto'."
        )
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
