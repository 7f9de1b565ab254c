"""Small asyncio helpers shared by the agent's loops.

Why not ``asyncio.wait_for``: on Python 3.11 it returns the awaited result when a cancellation
arrives in the same loop iteration as that result, and the cancellation is lost; a loop built on
it then never stops (a cancelled poller that goes on reconnecting forever). ``asyncio.timeout``
does not lose it. Every bounded wait in ``blackbox/`` and ``drivers/`` therefore uses
``asyncio.timeout`` or these helpers (ruff bans ``asyncio.wait_for`` there). The libraries the
drivers use (pymodbus, asyncua) still use ``wait_for`` inside: calls into them go through
:func:`isolated`, and loops look at :func:`checkpoint` between rounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


async def wait_set(event: asyncio.Event, timeout: float) -> bool:
    """Wait until ``event`` is set or ``timeout`` passes; return whether it is set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(timeout, 0.0)):
            await event.wait()
    return event.is_set()


async def wait_and_clear(event: asyncio.Event, timeout: float) -> bool:
    """Like :func:`wait_set`, and clear the event for the next round."""
    was_set = await wait_set(event, timeout)
    event.clear()
    return was_set


def checkpoint() -> None:
    """Raise :class:`asyncio.CancelledError` if this task was cancelled and something swallowed it.

    ``Task.cancelling()`` counts the cancellations requested and not withdrawn (``asyncio.timeout``
    withdraws its own when it turns one into :class:`TimeoutError`), so it stays positive after a
    library's ``wait_for`` dropped the :class:`~asyncio.CancelledError`. Call it between rounds of
    a loop, never in cleanup code that runs while a cancellation is being handled.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError("a cancellation was swallowed on the way; honouring it")


CANCEL_RETRY_S = 0.01
"""How often :func:`isolated` repeats the cancellation of a task that swallowed it."""


async def isolated(aw: Awaitable[T], cleanup_s: float = 0.5) -> T:
    """Await ``aw`` in a task of its own, so that a cancellation of the caller is never lost inside it.

    The caller waits on a shield, which a cancellation always interrupts; the inner task is then
    cancelled, again every :data:`CANCEL_RETRY_S` until it ends (a library's ``wait_for`` swallows
    one cancellation, not every one), for at most ``cleanup_s``. An inner task still running after
    that is left to finish on its own (its outcome is logged at debug level) and the caller's
    cancellation goes on regardless. Used for every call into a driver, whose libraries use
    ``wait_for`` inside.
    """
    inner = asyncio.ensure_future(aw)
    try:
        return await asyncio.shield(inner)
    except asyncio.CancelledError:
        await _cancel_until_done(inner, cleanup_s)
        raise


async def _cancel_until_done(task: asyncio.Future[T], within: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not task.done() and loop.time() < deadline:
        task.cancel()
        await asyncio.wait({task}, timeout=CANCEL_RETRY_S)
    task.add_done_callback(_note_outcome)


def _note_outcome(task: asyncio.Future[Any]) -> None:
    """Retrieve the outcome of an abandoned inner task, so that asyncio does not report it as lost."""
    if not task.cancelled() and task.exception() is not None:
        log.debug("an abandoned call ended with %r", task.exception())
