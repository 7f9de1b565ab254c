"""Small asyncio helpers shared by the agent's loops."""

from __future__ import annotations

import asyncio
import contextlib


async def wait_and_clear(event: asyncio.Event, timeout: float) -> bool:
    """Wait until ``event`` is set or ``timeout`` passes; clear it; return whether it was set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=max(timeout, 0.0))
    was_set = event.is_set()
    event.clear()
    return was_set
