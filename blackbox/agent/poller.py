"""One task per source: connect with back-off, poll on a fixed schedule, record every cycle.

A source that is slow or dead only delays its own task. Connection changes are events in the
record, so a regulator can tell "not read" from "unchanged".
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

from blackbox.agent.recorder import Recorder
from blackbox.model import EventDraft
from drivers.base import Driver, SourceUnavailable

log = logging.getLogger(__name__)


class SourcePoller:
    def __init__(self, driver: Driver, recorder: Recorder, stagger: float = 0.0) -> None:
        self.driver = driver
        self.recorder = recorder
        self.cfg = driver.config
        self.stagger = stagger
        self.connected: bool | None = None
        self.cycles = 0
        self.last_cycle_s: float | None = None

    async def run(self) -> None:
        delay = self.cfg.reconnect_min
        await asyncio.sleep(self.stagger)
        try:
            while True:
                try:
                    await asyncio.wait_for(self.driver.connect(), timeout=self.cfg.timeout * 2)
                except (SourceUnavailable, TimeoutError, OSError) as exc:
                    await self._set_connected(False, f"connect failed: {exc or type(exc).__name__}")
                    await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                    delay = min(delay * 2, self.cfg.reconnect_max)
                    continue
                delay = self.cfg.reconnect_min
                await self._set_connected(True, None)
                try:
                    await self._poll()
                except (SourceUnavailable, TimeoutError, OSError) as exc:
                    await self._set_connected(False, str(exc) or type(exc).__name__)
                    await self.driver.close()
        finally:
            await self.driver.close()

    async def _poll(self) -> None:
        interval = self.cfg.poll_interval
        next_at = time.monotonic()
        while True:
            started = time.monotonic()
            samples = await asyncio.wait_for(self.driver.read(), timeout=self.cfg.timeout)
            self.last_cycle_s = time.monotonic() - started
            self.cycles += 1
            await self.recorder.record(samples)
            next_at += interval
            now = time.monotonic()
            if next_at < now:  # overran: skip the missed cycles rather than bursting
                next_at = now + interval - (now - next_at) % interval
            await asyncio.sleep(next_at - now)

    async def _set_connected(self, connected: bool, reason: str | None) -> None:
        if self.connected == connected:
            return
        first_failure = self.connected is None and not connected
        self.connected = connected
        kind = "source.connected" if connected else "source.disconnected"
        if connected:
            log.info("source %s connected", self.cfg.name)
        else:
            log.warning("source %s %s: %s", self.cfg.name, "unreachable" if first_failure else "lost", reason)
        await self.recorder.record([], [EventDraft(kind, self.cfg.name, {"source": self.cfg.name, "reason": reason})])
