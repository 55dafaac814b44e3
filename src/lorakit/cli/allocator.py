"""Host-memory allocator settings that the CLI applies once, at start, before torch allocates.

Why: on the CPU every tensor comes from glibc's malloc. Its default *dynamic* mmap threshold rises
each time a large mmapped block is freed (up to 32 MB), after which blocks below it come from the
heap and its per-thread arenas, where a training step's mix of sizes (variable-length batches,
optimizer state, logits) fragments memory differently from run to run: the same full fine-tuning
command peaked anywhere within ~1.7× across runs. A *fixed* threshold sends every large block to
its own mapping, returned to the system on free, so the peak follows what is live, not the heap's
history; set low (128 KB) that also costs a page fault per page of every activation (1.6× slower),
set at a few MB only the blocks big enough to amortise the fault are mapped.

``LORAKIT_MALLOC`` picks a setting by name (see :data:`SETTINGS`; ``glibc`` leaves malloc alone);
``benchmarks/allocator.py`` measures each one's peak spread and speed side by side. Not glibc (musl,
macOS): nothing is changed. A library user's process is never changed: only the CLI calls
:func:`apply_allocator`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

from lorakit.errors import LorakitError

__all__ = ["DEFAULT", "SETTINGS", "apply_allocator"]

# mallopt(3) parameter numbers (glibc's malloc.h).
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -2, -3, -8
MB = 2**20

# name -> {mallopt parameter: value}. Setting M_MMAP_THRESHOLD (or M_TRIM_THRESHOLD) also turns glibc's
# dynamic threshold off, which is the point.
SETTINGS: dict[str, dict[int, int]] = {
    "glibc": {},
    "one-arena": {M_ARENA_MAX: 1},
    "mmap-4m": {M_MMAP_THRESHOLD: 4 * MB, M_TRIM_THRESHOLD: 64 * MB},
    "mmap-1m": {M_MMAP_THRESHOLD: 1 * MB, M_TRIM_THRESHOLD: 64 * MB},
    "mmap-128k": {M_MMAP_THRESHOLD: 128 * 2**10, M_TRIM_THRESHOLD: 128 * 2**10},
}
# The default, from benchmarks/results/allocator.md (smollm2 full fine-tuning, 3 fresh processes per setting):
# a 4 MB fixed threshold lowered the peak by 5% at the same speed (0.99x); 1 MB lowered it by 11% but
# cost 14% of the speed (median of 3). glibc's own spread was 1% on that machine: the ~1.7x swings seen
# on an earlier one were not reproduced there.
DEFAULT = "mmap-4m"


def apply_allocator(name: str | None = None) -> dict[int, int]:
    """Apply the malloc setting ``name`` (default: ``$LORAKIT_MALLOC``, else :data:`DEFAULT`).

    Returns the parameters set ({} when none was, or when the C library is not glibc).
    Raises :class:`~lorakit.errors.LorakitError` for an unknown name.
    """
    name = name or os.environ.get("LORAKIT_MALLOC") or DEFAULT
    if name not in SETTINGS:
        raise LorakitError(f"LORAKIT_MALLOC={name!r} is not one of: {', '.join(SETTINGS)}")
    libc = _glibc()
    if libc is None:
        return {}
    done = {}
    for param, value in SETTINGS[name].items():
        if libc.mallopt(ctypes.c_int(param), ctypes.c_int(value)) == 1:  # mallopt returns 1 on success
            done[param] = value
    return done


def _glibc() -> ctypes.CDLL | None:
    """The process's C library if it is glibc (it has ``mallopt`` and ``gnu_get_libc_version``)."""
    path = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(path)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version") else None
