"""Small asyncio helpers shared by the agent's loops."""

from __future__ import annotations

import asyncio
import contextlib


async def wait_set(event: asyncio.Event, timeout: float) -> bool:
    """Wait until ``event`` is set or ``timeout`` passes; return whether it is set.

    ``asyncio.timeout`` rather than ``asyncio.wait_for``: on Python 3.11 ``wait_for`` swallows a
    cancellation that arrives just as the event is set, and a loop built on it then never stops.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(timeout, 0.0)):
            await event.wait()
    return event.is_set()


async def wait_and_clear(event: asyncio.Event, timeout: float) -> bool:
    """Like :func:`wait_set`, and clear the event for the next round."""
    was_set = await wait_set(event, timeout)
    event.clear()
    return was_set
