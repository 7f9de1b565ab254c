"""The agent's one glibc malloc arena: threads that allocate share the main arena instead of each
getting one (counted by glibc's own ``malloc_info``). Each check runs in a fresh interpreter: the
limit applies to arenas made after it, and pytest's process already has threads."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

TIMEOUT_S = 60

ARENAS = """
import ctypes, sys, threading, tempfile
from blackbox.malloc_arenas import limit_malloc_arenas
limited = limit_malloc_arenas() if sys.argv[1] == "limit" else None
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
start = threading.Barrier(4)
def allocate():
    start.wait()
    libc.malloc(1000)  # kept: the arena must stay in use
threads = [threading.Thread(target=allocate) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
with tempfile.NamedTemporaryFile() as out:
    fp = libc.fopen(out.name.encode(), b"w")
    libc.malloc_info(0, fp)
    libc.fclose(fp)
    print(limited, open(out.name).read().count("<heap nr="))
"""

glibc = pytest.mark.skipif(not hasattr(os, "confstr") or not os.confstr("CS_GNU_LIBC_VERSION"),
                           reason="glibc only")


def arenas(mode: str, env: dict[str, str] | None = None) -> tuple[str, int]:
    base = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    done = subprocess.run([sys.executable, "-c", ARENAS, mode], capture_output=True, text=True, timeout=TIMEOUT_S,
                          check=False, env=base | (env or {}))
    assert done.returncode == 0, done.stderr
    limited, count = done.stdout.split()
    return limited, int(count)


@glibc
def test_threads_share_one_arena_once_limited() -> None:
    assert arenas("limit") == ("True", 1)


@glibc
def test_without_the_limit_threads_get_arenas_of_their_own() -> None:
    limited, count = arenas("none")
    assert limited == "None" and count > 1


@glibc
def test_an_operators_malloc_arena_max_is_kept() -> None:
    assert arenas("limit", {"MALLOC_ARENA_MAX": "2"}) == ("False", 2)
