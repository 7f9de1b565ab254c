"""One glibc malloc arena for the whole agent process instead of one more per thread that allocates.

glibc gives each thread that calls ``malloc`` while another holds the main arena an arena of its own
(up to eight per core), and memory freed in one arena is never reused by another thread's. In the
agent the buffer thread, the MQTT client's thread and the event loop's helper threads each kept
one: about 4 MiB of the agent's RSS at 10,000 tags. Python's small objects do not go through
``malloc`` (they live in Python's own 1 MiB arenas), so the threads rarely wait on the shared lock:
the agent's CPU per reading did not change measurably.

``MALLOC_ARENA_MAX`` in the environment wins: an operator who sets it keeps their value.
"""

from __future__ import annotations

import ctypes
import os

M_ARENA_MAX = -8
"""glibc's ``mallopt`` parameter number for the arena limit (malloc.h)."""


def limit_malloc_arenas(count: int = 1) -> bool:
    """Limit glibc's malloc to ``count`` arenas; whether the limit is now in force.

    ``False`` where the C library is not glibc (musl, macOS) or ``mallopt`` refused; also ``False``
    when ``MALLOC_ARENA_MAX`` is set, which glibc has already applied. Call it before the process
    starts threads: arenas that threads already hold stay.
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        glibc = os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError):  # no such name on this system
        return False
    if not glibc:
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, count))
