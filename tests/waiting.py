"""Bounded waiting for a condition that no event announces: another process's state, a socket.

Where an event can be awaited, tests await it; these helpers are for looking at what only polling
can see, and they fail with what was awaited once the timeout passes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it is truthy and return its value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
    return result


async def eventually(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    """:func:`wait_until` for tests running an event loop: the loop keeps serving while it waits."""
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)
    return result
