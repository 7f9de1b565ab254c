"""glibc's malloc as the agent tunes it. One arena: threads that allocate share the main arena instead
of each getting one (counted by glibc's own ``malloc_info``). Freed memory given back: pages left
free inside the heap leave the process's RSS. Each check runs in a fresh interpreter: the arena
limit applies to arenas made after it, and pytest's process already has threads."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from services import unavailable

from blackbox.glibc_malloc import FreeMemoryRelease

TIMEOUT_S = 60

ARENAS = """
import ctypes, sys, threading, tempfile
from blackbox.glibc_malloc import limit_malloc_arenas
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

@pytest.fixture
def glibc() -> None:
    """These checks need glibc (the C library of the gateways the agent runs on): skipped elsewhere on a
    developer's machine, failed in CI."""
    if not hasattr(os, "confstr") or not os.confstr("CS_GNU_LIBC_VERSION"):
        unavailable("glibc")


MALLOC_VARIABLES = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_")


def run_script(script: str, mode: str, env: dict[str, str] | None = None) -> list[str]:
    """What ``script`` prints, run with ``mode`` in a fresh interpreter; glibc's malloc variables only from ``env``."""
    base = {k: v for k, v in os.environ.items() if k not in MALLOC_VARIABLES}
    done = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, timeout=TIMEOUT_S,
                          check=False, env=base | (env or {}))
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def arenas(mode: str, env: dict[str, str] | None = None) -> tuple[str, int]:
    limited, count = run_script(ARENAS, mode, env)
    return limited, int(count)


@pytest.mark.usefixtures("glibc")
def test_threads_share_one_arena_once_limited() -> None:
    assert arenas("limit") == ("True", 1)


@pytest.mark.usefixtures("glibc")
def test_without_the_limit_threads_get_arenas_of_their_own() -> None:
    limited, count = arenas("none")
    assert limited == "None" and count > 1


@pytest.mark.usefixtures("glibc")
def test_an_operators_malloc_arena_max_is_kept() -> None:
    assert arenas("limit", {"MALLOC_ARENA_MAX": "2"}) == ("False", 2)


RELEASE = """
import ctypes, sys
from blackbox.glibc_malloc import FreeMemoryRelease
release = FreeMemoryRelease()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
before = rss_mib()
blocks = [libc.malloc(64 * 1024) for _ in range(800)]  # 50 MiB from the heap (below the mmap threshold)
for b in blocks:
    ctypes.memset(b, 1, 64 * 1024)  # resident
for b in blocks[:-1]:  # the last one keeps the heap's top: free() alone cannot shrink it
    libc.free(b)
freed = rss_mib()
if sys.argv[1] == "release":
    release(large=True)
print(before, freed, rss_mib())
"""


def rss_after_freeing(mode: str) -> tuple[float, float, float]:
    before, freed, after = map(float, run_script(RELEASE, mode))
    return before, freed, after


@pytest.mark.usefixtures("glibc")
def test_memory_freed_inside_the_heap_stays_resident_until_released() -> None:
    before, freed, after = rss_after_freeing("keep")
    assert freed - before > 40 and after - before > 40
    before, freed, after = rss_after_freeing("release")
    assert freed - before > 40 and after - before < 10


def test_small_batches_give_memory_back_at_most_once_an_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    release = FreeMemoryRelease(every_s=3600)
    trims: list[int] = []

    def trim(pad: int) -> int:
        trims.append(pad)
        return 1
    monkeypatch.setattr(release, "_trim", trim)
    for _ in range(5):
        release()
    assert len(trims) == 1
    release(large=True)
    release(large=True)
    assert trims == [0, 0, 0]


MMAP = """
import ctypes, sys
from blackbox.glibc_malloc import fix_mmap_threshold
fixed = fix_mmap_threshold() if sys.argv[1] == "fix" else None
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.sbrk.restype = ctypes.c_void_p
libc.sbrk.argtypes = [ctypes.c_ssize_t]
libc.free(libc.malloc(8 * 2**20))  # a large mapped block freed: glibc raises its threshold to 8 MiB
block = libc.malloc(2 * 2**20)
print(fixed, "heap" if block < libc.sbrk(0) else "mapped")  # the heap lies below the program break
"""


def where_a_large_block_goes(mode: str, env: dict[str, str] | None = None) -> tuple[str, str]:
    fixed, place = run_script(MMAP, mode, env)
    return fixed, place


@pytest.mark.usefixtures("glibc")
def test_large_blocks_are_mapped_once_the_threshold_is_fixed() -> None:
    assert where_a_large_block_goes("none") == ("None", "heap")
    assert where_a_large_block_goes("fix") == ("True", "mapped")


@pytest.mark.usefixtures("glibc")
def test_an_operators_mmap_threshold_is_kept() -> None:
    assert where_a_large_block_goes("fix", {"MALLOC_MMAP_THRESHOLD_": str(64 * 2**20)}) == ("False", "heap")
