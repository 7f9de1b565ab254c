"""glibc's malloc tuned for the agent, a process that runs for months: one arena, large blocks always
mapped, and freed memory given back after each large transient.

One arena for the whole process instead of one more per thread that allocates
(:func:`limit_malloc_arenas`). glibc gives each thread that calls ``malloc`` while another holds
the main arena an arena of its own (up to eight per core), and memory freed in one arena is never
reused by another thread's. In the agent the buffer thread, the MQTT client's thread and the event
loop's helper threads each kept one: about 4 MiB of the agent's RSS at 10,000 tags. Python's small
objects do not go through ``malloc`` (they live in Python's own 1 MiB arenas), so the threads
rarely wait on the shared lock: the agent's CPU per reading did not change measurably.
``MALLOC_ARENA_MAX`` in the environment wins: an operator who sets it keeps their value.

Freed memory given back. glibc returns memory to the system only from the top of its heap, and
once a large block has been freed it raises its threshold for serving blocks by ``mmap`` (up to
32 MiB), so the next large blocks come from the heap too. Sealing a batch of 50,000 readings
makes a few such blocks; what they left free inside the heap stayed resident: about 10 MiB of the
agent's RSS at 10,000 tags. The threshold is fixed at 1 MiB (:func:`fix_mmap_threshold`), and
``malloc_trim`` gives the heap's free pages back after large batches (:class:`FreeMemoryRelease`;
it takes about 0.2 ms). Together they took the agent's RSS peaks during sealing from 10 to about
6 MiB above its resting size, at no CPU cost measurable at 10,000 tags.
"""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Callable

M_ARENA_MAX = -8
"""glibc's ``mallopt`` parameter number for the arena limit (malloc.h)."""
M_MMAP_THRESHOLD = -3
"""glibc's ``mallopt`` parameter number for the size from which blocks are served by ``mmap`` (malloc.h)."""
MMAP_THRESHOLD = 1024 * 1024
"""Blocks of a MiB or more (a batch's records document, the compressor's buffers) are always mapped."""


def _glibc() -> ctypes.CDLL | None:
    """The C library, if it is glibc."""
    try:
        version = os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError):  # no such name on this system
        return None
    return ctypes.CDLL(None) if version else None


def limit_malloc_arenas(count: int = 1) -> bool:
    """Limit glibc's malloc to ``count`` arenas; whether the limit is now in force.

    ``False`` where the C library is not glibc (musl, macOS) or ``mallopt`` refused; also ``False``
    when ``MALLOC_ARENA_MAX`` is set, which glibc has already applied. Call it before the process
    starts threads: arenas that threads already hold stay.
    """
    return _mallopt(M_ARENA_MAX, count, unless_set="MALLOC_ARENA_MAX")


def fix_mmap_threshold(size: int = MMAP_THRESHOLD) -> bool:
    """Serve every block of ``size`` bytes or more by ``mmap``; whether that is now in force.

    glibc starts at 128 KiB but raises the threshold to the size of each mapped block freed, up to
    32 MiB, so after the first large batch the next ones' buffers come from the heap, where what
    they leave free stays resident (and the heap grows when the next batch finds it fragmented).
    Fixed, a large block's pages go back to the system as it is freed. ``False`` where the C
    library is not glibc, or when ``MALLOC_MMAP_THRESHOLD_`` is set (an operator's value wins).
    """
    return _mallopt(M_MMAP_THRESHOLD, size, unless_set="MALLOC_MMAP_THRESHOLD_")


def _mallopt(param: int, value: int, unless_set: str) -> bool:
    """glibc's ``mallopt(param, value)``, unless the environment variable ``unless_set`` is set (glibc has
    applied the operator's value then); whether it is now in force."""
    if os.environ.get(unless_set):
        return False
    libc = _glibc()
    if libc is None:
        return False
    mallopt = libc.mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(param, value))


class FreeMemoryRelease:
    """Gives the heap's free pages back to the system (glibc's ``malloc_trim``); does nothing where the C
    library is not glibc.

    Called after each sealed batch: at once after a large one (``large=True``), otherwise at most
    once every ``every_s`` seconds. Pages given back are faulted in again when the heap grows into
    them: trimming after each of 20 small batches a second cost about 0.2 us of system CPU per
    reading at 10,000 tags, while after a large batch it must be at once, before other allocations
    settle in the freed space and the next batch grows the heap again.
    """

    def __init__(self, every_s: float = 1.0) -> None:
        libc = _glibc()
        self._trim: Callable[[int], int] | None = None
        if libc is not None:
            trim = libc.malloc_trim
            trim.argtypes = [ctypes.c_size_t]
            trim.restype = ctypes.c_int
            self._trim = trim
        self._every_s = every_s
        self._last = -every_s

    def __call__(self, large: bool = False) -> None:
        if self._trim is None:
            return
        now = time.monotonic()
        if large or now - self._last >= self._every_s:
            self._last = now
            self._trim(0)
