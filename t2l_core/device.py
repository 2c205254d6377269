"""Device and precision selection (CUDA when present, CPU otherwise), and what a device does well.

Shared by every part of the core: which device a job runs on, the dtype of CLIP weights, what an autocast
setting means on a device, how many CPU threads a job uses, and whether channels-last convolutions pay.
"""

from __future__ import annotations

import contextlib
import gc
import platform
from pathlib import Path
from typing import Iterator, Optional

import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """The device a job runs on.

    Args:
        device: ``"auto"``/None (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a device.

    Returns:
        The torch.device.

    Raises:
        ValueError: a name torch does not know as a device.
        RuntimeError: CUDA (or CUDA device N) asked for on a machine without it.
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
    """The dtype of CLIP weights for a precision name.

    Args:
        precision: ``fp32``/``fp16``/``bf16``/``auto`` or a dtype. ``auto`` is fp32: CLIP weights are kept in
            fp32 and the fast path uses autocast instead.
        device: where the weights go.

    Returns:
        A dtype valid on ``device``.

    Raises:
        ValueError: an unknown name, or fp16 on CPU (most CPU kernels do not support it).
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


# off = fp32 everywhere; *-clip = autocast for the CLIP passes only (generator fp32); bf16/fp16 = both
AUTOCAST_MODES = ("auto", "off", "bf16", "fp16", "bf16-clip", "fp16-clip")
# what "auto" means: on CUDA (with bf16 support) CLIP in bf16 and the generator in fp32 with TF32; on CPU fp32
CUDA_DEFAULT_AUTOCAST = "bf16-clip"
CPU_DEFAULT_AUTOCAST = "off"


def resolve_autocast(mode: str, device: torch.device) -> str:
    """What an autocast setting means on a device.

    Args:
        mode: one of :data:`AUTOCAST_MODES`.
        device: the training device.

    Returns:
        ``mode``, with ``"auto"`` replaced by ``"bf16-clip"`` on a CUDA device that supports bf16 and by
        ``"off"`` (fp32) elsewhere.

    Raises:
        ValueError: an unknown mode.
    """
    if mode not in AUTOCAST_MODES:
        raise ValueError(f"autocast must be one of {AUTOCAST_MODES}, got '{mode}'")
    if mode != "auto":
        return mode
    if device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return CUDA_DEFAULT_AUTOCAST
    return CPU_DEFAULT_AUTOCAST


def autocast_dtype(mode: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype of the CLIP image passes.

    Args:
        mode: one of :data:`AUTOCAST_MODES`.
        device: the training device.

    Returns:
        The dtype, or None (no autocast).

    Raises:
        ValueError: an unknown mode, or an fp16 mode off CUDA.
    """
    mode = resolve_autocast(mode, device)
    if mode == "off":
        return None
    if mode.startswith("fp16"):
        if device.type != "cuda":
            raise ValueError(f"autocast='{mode}' needs a CUDA device; use 'bf16-clip' or 'off' on CPU")
        return torch.float16
    return torch.bfloat16


def generator_autocast_dtype(mode: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype of the generator: only ``"bf16"``/``"fp16"`` autocast it.

    Args:
        mode: one of :data:`AUTOCAST_MODES`.
        device: the training device.

    Returns:
        The dtype, or None (fp32).
    """
    return autocast_dtype(mode, device) if resolve_autocast(mode, device) in ("bf16", "fp16") else None


def autocast(device: torch.device, dtype: Optional[torch.dtype]) -> torch.autocast:
    """The autocast context of a precision (:func:`autocast_dtype`, :func:`generator_autocast_dtype`).

    Args:
        device: where the passes run.
        dtype: the autocast dtype, or None.

    Returns:
        ``torch.autocast`` for ``dtype``, or an explicitly disabled one when ``dtype`` is None.
    """
    if dtype is None:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=dtype)


def channels_last_pays(device: torch.device | str = "cpu") -> bool:
    """Whether the generator runs faster in channels-last layout on ``device``.

    On CUDA, yes (cuDNN's NHWC kernels). On a CPU only where PyTorch dispatches AVX-512 kernels: there the
    layout is as fast or faster (bench/RESULTS.md), while on AVX2-only CPUs oneDNN's channels-last
    convolution backward made a 512 px step ~1.25x slower than the standard layout.

    Args:
        device: the device.

    Returns:
        Whether channels-last pays.
    """
    if torch.device(device).type != "cpu":
        return True
    return torch.backends.cpu.get_cpu_capability().upper().startswith("AVX512")


@contextlib.contextmanager
def thread_scope(threads: int = 0) -> Iterator[None]:
    """Use a number of intra-op threads inside the block (restored after).

    Args:
        threads: the threads; 0 or None = leave the user's/torch's setting alone.
    """
    if threads is None or threads <= 0:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def free_cuda_memory(device: torch.device) -> None:
    """Release cached CUDA blocks (before and after a long run); a no-op on CPU.

    Args:
        device: the job's device.
    """
    if device.type == "cuda" and torch.cuda.is_available():
        gc.collect()
        torch.cuda.empty_cache()


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what :mod:`platform` knows), for reports."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return name
