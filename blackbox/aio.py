"""Small asyncio helpers shared by the agent's loops."""

from __future__ import annotations

import asyncio


async def wait_and_clear(event: asyncio.Event, timeout: float) -> bool:
    """Wait until ``event`` is set or ``timeout`` passes; clear it; return whether it was set.

    ``asyncio.timeout`` rather than ``asyncio.wait_for``: on Python 3.11 ``wait_for`` swallows a
    cancellation that arrives just as the event is set, and a loop built on it then never stops.
    """
    try:
        async with asyncio.timeout(max(timeout, 0.0)):
            await event.wait()
    except TimeoutError:
        pass
    was_set = event.is_set()
    event.clear()
    return was_set
