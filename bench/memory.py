"""Peak-memory probes shared by the bench scripts (CPU: the process's peak RSS, CUDA: max allocated).

CPU peak RSS is read from ``/proc/self/status`` (VmHWM) and reset between measurements by writing ``5``
to ``/proc/self/clear_refs`` after returning freed heap pages to the OS (``malloc_trim``), so two paths
measured in one process each get their own peak.
"""

from __future__ import annotations

import gc
import resource
from pathlib import Path

import torch

from t2l_core.runtime.cpu_heap import release_freed_heap

GIB = 2.0**30


def _vm(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024 / GIB
    except OSError:
        return None
    return None


def reset_peak(device: torch.device) -> None:
    """Start a new peak-memory window."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        return
    release_freed_heap()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_gib(device: torch.device) -> float:
    """Peak since :func:`reset_peak`: CUDA max allocated, else peak RSS (whole process, GiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / GIB
    hwm = _vm("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


def current_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / GIB
    return _vm("VmRSS") or 0.0
