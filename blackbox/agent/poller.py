"""One task per source: connect with back-off and jitter, then poll at a fixed rate or follow a subscription.

A source that is slow or dead only delays its own task: every wait on the driver is bounded by
the source's timeout, and the sources share nothing but the recorder. Connection changes are
events in the record (``source.connected`` / ``source.disconnected``), so a regulator can tell
"not read" from "unchanged"; so are values a source is known to have lost
(``source.data_lost``) and a silent subscription rebuilt (``source.resubscribed``).

Overruns: a cycle (read and record) that takes longer than the poll interval makes the poller skip
the cycles it missed rather than burst to catch up. Every skipped cycle is counted (``overruns``,
in ``status`` and the metrics) and recorded in a ``source.overrun`` event: the first at once, then
at most one per :data:`OVERRUN_REPORT_EVERY_S` with the count since the previous one, and a last
one with what is left when the source disconnects or the poller stops.

Back-off: after a failed connect, or a connection that failed before its first complete cycle,
the next attempt waits ``reconnect_min`` doubled per failure up to ``reconnect_max``, times a
random factor in [0.8, 1.2] so that many gateways do not reconnect in step. A connection that
delivered at least one cycle resets the delay: its loss is retried after ``reconnect_min``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from typing import Protocol

from blackbox.agent.exception import ExceptionFilter
from blackbox.aio import checkpoint, isolated, wait_set
from blackbox.model import EventDraft, Sample
from drivers.base import Driver, SourceUnavailable, SubscribingDriver, subscribes

log = logging.getLogger(__name__)

CONNECT_TIMEOUTS = 5
"""A connect (with its security handshake and namespace reads) may take this many source timeouts."""
CLOSE_TIMEOUTS = 3
"""A close (an OPC UA goodbye, then closing the session) may take this many source timeouts."""
OVERRUN_REPORT_EVERY_S = 60.0
"""Skipped cycles are recorded in one ``source.overrun`` event at most this often."""


def jittered(delay: float) -> float:
    return delay * random.uniform(0.8, 1.2)


class Sink(Protocol):
    """Where a poller's cycles go: the agent's :class:`~blackbox.agent.recorder.Recorder`."""

    async def record(self, samples: Sequence[Sample], events: Sequence[EventDraft] = ()) -> object:
        """Make one cycle's samples and events durable."""


class SourcePoller:
    def __init__(self, driver: Driver, recorder: Sink, stagger: float = 0.0) -> None:
        self.driver = driver
        self.recorder = recorder
        self.cfg = driver.config
        self.stagger = stagger
        self.connected: bool | None = None
        self.cycles = 0
        self.last_cycle_s: float | None = None
        self.overruns = 0
        """Poll cycles skipped since the start because a cycle overran the poll interval."""
        self._overrun_unreported = 0
        self._overrun_slowest_s = 0.0
        self._overrun_reported_at: float | None = None
        self.filter = ExceptionFilter(self.cfg.tags)
        self._delivered = False  # the current connection completed a cycle
        self._lost_seen = 0
        self._resubscribed_seen = 0
        self._stop = asyncio.Event()

    def request_stop(self) -> None:
        """Finish the cycle in progress (read and commit), then return from :meth:`run`."""
        self._stop.set()

    async def _pause(self, seconds: float) -> bool:
        """Sleep, unless a stop is requested first; return whether to go on."""
        return not await wait_set(self._stop, seconds)

    async def run(self) -> None:
        cfg = self.cfg
        delay = cfg.reconnect_min
        try:
            if not await self._pause(self.stagger):
                return
            while not self._stop.is_set():
                checkpoint()
                self._delivered = False
                try:
                    async with asyncio.timeout(cfg.timeout * CONNECT_TIMEOUTS):
                        await isolated(self.driver.connect())
                    checkpoint()
                    await self._set_connected(True, None)
                    if subscribes(self.driver):
                        await self._follow(self.driver)
                    else:
                        await self._poll()
                except (SourceUnavailable, TimeoutError, OSError) as exc:
                    reason = str(exc) or type(exc).__name__
                    if self.connected:
                        await self._set_connected(False, reason)
                    else:
                        await self._set_connected(False, f"connect failed: {reason}")
                    await self._close()
                if self._stop.is_set():
                    return
                if self._delivered:
                    delay = cfg.reconnect_min
                if not await self._pause(jittered(delay)):
                    return
                delay = min(delay * 2, cfg.reconnect_max)
        finally:
            await self._close()

    async def _close(self) -> None:
        """Close the driver, bounded: a source that never answers its goodbye cannot keep the task alive."""
        try:
            async with asyncio.timeout(self.cfg.timeout * CLOSE_TIMEOUTS):
                await isolated(self.driver.close(), cleanup_s=0.1)
        except TimeoutError:
            log.warning("source %s: closing the connection took longer than %.1f s; abandoned", self.cfg.name,
                        self.cfg.timeout * CLOSE_TIMEOUTS)

    async def _poll(self) -> None:
        interval = self.cfg.poll_interval
        next_at = time.monotonic()
        while not self._stop.is_set():
            checkpoint()
            started = time.monotonic()
            # the driver bounds each request by the timeout; this bounds the whole cycle
            async with asyncio.timeout(self.cfg.timeout * (self.driver.health.requests_per_cycle + 1)):
                samples = await isolated(self.driver.read())
            self.last_cycle_s = time.monotonic() - started
            await self._record(self.filter.admit(samples, started))
            next_at += interval
            now = time.monotonic()
            if next_at < now:  # overran: skip the missed cycles rather than bursting
                missed_at, next_at = next_at, now + interval - (now - next_at) % interval
                self._overran(round((next_at - missed_at) / interval), now - started)
            if not await self._pause(next_at - now):
                await self._report_overruns()
                return

    async def _follow(self, driver: SubscribingDriver) -> None:
        """Take what the subscription delivers; repeat heartbeat values when they are due."""
        await isolated(driver.subscribe())
        changes: asyncio.Task[list[Sample]] | None = None
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            while not self._stop.is_set():
                checkpoint()
                if changes is None:
                    changes = asyncio.ensure_future(driver.changes())
                await asyncio.wait({changes, stop}, timeout=self.filter.next_due_in(time.monotonic()),
                                   return_when=asyncio.FIRST_COMPLETED)
                now = time.monotonic()
                admitted: Sequence[Sample] = []
                if changes.done():
                    task, changes = changes, None
                    admitted = self.filter.admit(task.result(), now)  # raises SourceUnavailable on a lost link
                due = self.filter.due(now)
                await self._record([*admitted, *due] if due else admitted)
        finally:
            stop.cancel()
            if changes is not None:
                changes.cancel()

    def _overran(self, skipped: int, cycle_s: float) -> None:
        self.overruns += skipped
        self._overrun_unreported += skipped
        self._overrun_slowest_s = max(self._overrun_slowest_s, cycle_s)

    def _overrun_event(self, now: float, *, final: bool = False) -> EventDraft | None:
        """The ``source.overrun`` event due now (rate-limited unless ``final``), or ``None``."""
        if not self._overrun_unreported:
            return None
        since = self._overrun_reported_at
        if not final and since is not None and now - since < OVERRUN_REPORT_EVERY_S:
            return None
        skipped, slowest = self._overrun_unreported, self._overrun_slowest_s
        self._overrun_unreported, self._overrun_slowest_s, self._overrun_reported_at = 0, 0.0, now
        log.warning("source %s: %d poll cycle(s) skipped%s: a cycle took up to %.3f s for a poll interval of %g s "
                    "(%d skipped since the start)", self.cfg.name, skipped,
                    "" if since is None else f" in the last {now - since:.0f} s", slowest, self.cfg.poll_interval,
                    self.overruns)
        return EventDraft("source.overrun", self.cfg.name, {
            "source": self.cfg.name, "skipped": skipped, "total": self.overruns, "slowest_cycle_s": round(slowest, 6),
            "poll_interval_s": self.cfg.poll_interval})

    async def _report_overruns(self) -> None:
        """Record the skipped cycles not yet in an event (the poller stops or the source went away)."""
        event = self._overrun_event(time.monotonic(), final=True)
        if event is not None:
            await self.recorder.record([], [event])

    async def _record(self, samples: Sequence[Sample]) -> None:
        """Record one cycle, with events for values the source reports lost and cycles skipped."""
        events = []
        if (overrun := self._overrun_event(time.monotonic())) is not None:
            events.append(overrun)
        health = self.driver.health
        if health.lost > self._lost_seen:
            events.append(EventDraft("source.data_lost", self.cfg.name, {
                "source": self.cfg.name, "count": health.lost - self._lost_seen, "total": health.lost}))
            self._lost_seen = health.lost
        if health.resubscribed > self._resubscribed_seen:
            events.append(EventDraft("source.resubscribed", self.cfg.name, {
                "source": self.cfg.name, "reason": "the subscription went silent and was rebuilt"}))
            self._resubscribed_seen = health.resubscribed
        if samples or events:
            await self.recorder.record(samples, events)
        self.cycles += 1
        self._delivered = True

    async def _set_connected(self, connected: bool, reason: str | None) -> None:
        if self.connected == connected:
            return
        first_failure = self.connected is None and not connected
        self.connected = connected
        kind = "source.connected" if connected else "source.disconnected"
        if connected:
            log.info("source %s connected", self.cfg.name)
        else:
            await self._report_overruns()
            self.filter.forget()  # after the gap, the first reading of every tag is recorded
            log.warning("source %s %s: %s", self.cfg.name, "unreachable" if first_failure else "lost", reason)
        await self.recorder.record([], [EventDraft(kind, self.cfg.name, {"source": self.cfg.name, "reason": reason})])
