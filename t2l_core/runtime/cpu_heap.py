"""How the C heap holds freed CPU tensors during training (glibc on Linux; a no-op elsewhere).

PyTorch allocates CPU tensors with ``malloc``. glibc serves requests below its *mmap threshold* from the
heap and larger ones with ``mmap``; the threshold rises by itself up to 32 MiB as large blocks are freed.
Text2LIVE's crops change size every step, so activations of a few MiB fragment the heap, and freed pages
between live blocks stay resident: the process's peak RSS ends up ~2 GiB above the tensors alive at any
time (bench/RESULTS.md). Two remedies, both measured there:

* :func:`mmap_threshold_scope`: while training, blocks of 4 MiB and more are mmapped, so freeing one gives
  its pages straight back; afterwards the threshold is left at 32 MiB, the value glibc's own adjustment
  reaches in a long-running process such as ComfyUI.
* :func:`release_freed_heap` after every step: ``malloc_trim(0)`` returns the free pages inside the heap.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
from typing import Iterator, Optional

M_MMAP_THRESHOLD = -3  # mallopt parameter number (malloc.h)
TRAINING_MMAP_THRESHOLD = 4 << 20
GLIBC_MAX_MMAP_THRESHOLD = 32 << 20  # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit systems


@functools.lru_cache(maxsize=1)
def _libc() -> Optional[ctypes.CDLL]:
    """glibc, or None when the C library lacks ``malloc_trim``/``mallopt`` (musl, macOS, Windows)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    except (OSError, AttributeError, TypeError):
        return None
    return libc


def release_freed_heap() -> bool:
    """Return free heap pages to the OS (glibc ``malloc_trim(0)``).

    Returns:
        True when done, False where that is not available.
    """
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


def set_mmap_threshold(nbytes: int) -> bool:
    """Serve allocations of ``nbytes`` and more with mmap (glibc ``mallopt``).

    Args:
        nbytes: the threshold in bytes.

    Returns:
        True when set, False where that is not available.
    """
    libc = _libc()
    return bool(libc is not None and libc.mallopt(M_MMAP_THRESHOLD, int(nbytes)) == 1)


@contextlib.contextmanager
def mmap_threshold_scope(nbytes: int = TRAINING_MMAP_THRESHOLD, enabled: bool = True) -> Iterator[bool]:
    """Inside the block, mmap every allocation of ``nbytes`` or more.

    On entry the free pages that earlier work left in the heap are returned first (once: a long-running
    process such as ComfyUI starts a run with them), since glibc serves even large requests from free heap
    space before it mmaps.

    Args:
        nbytes: the threshold in bytes.
        enabled: False makes the block a no-op.

    Yields:
        Whether the threshold took effect.
    """
    active = enabled and set_mmap_threshold(nbytes)
    if active:
        release_freed_heap()
    try:
        yield active
    finally:
        if active:
            set_mmap_threshold(GLIBC_MAX_MMAP_THRESHOLD)
            release_freed_heap()
