"""The cyclic garbage collector held off while a large batch is re-verified.

Re-verifying a production batch of a million readings makes millions of short-lived tuples, ints
and floats (the stored chunks put back into document rows, the statistics' lists). None of them
is in a reference cycle, so reference counting frees them all, but every 700 allocations the
collector runs anyway and walks the young objects; with the web process's heap behind them that
was about 0.2 s of a 1.5 s trace report's CPU. The pause is counted, so that overlapping reports
in the web process's threads leave the collector as the first one found it once the last ends.
It changes no check: only when memory is reclaimed.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator


class _Pause:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.depth = 0
        self.was_enabled = False


_PAUSE = _Pause()


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Hold off the cyclic garbage collector for the block (process-wide; nested and concurrent uses counted)."""
    with _PAUSE.lock:
        if _PAUSE.depth == 0:
            _PAUSE.was_enabled = gc.isenabled()
            gc.disable()
        _PAUSE.depth += 1
    try:
        yield
    finally:
        with _PAUSE.lock:
            _PAUSE.depth -= 1
            if _PAUSE.depth == 0 and _PAUSE.was_enabled:
                gc.enable()
