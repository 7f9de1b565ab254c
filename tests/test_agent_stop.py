"""A stop request lets the cycle in progress finish: read, then commit, then the poller returns."""

from __future__ import annotations

import asyncio

from acquisition_helpers import Collector
from waiting import eventually

from blackbox.agent.poller import SourcePoller
from blackbox.columns import SampleColumns
from blackbox.config import SourceConfig
from drivers.base import SourceHealth


class GatedDriver:
    """A real driver implementation whose read completes only when the test opens the gate."""

    def __init__(self, poll_interval: float = 0.05) -> None:
        self._config = SourceConfig.model_validate({"name": "gated", "protocol": "test",
                                                    "poll_interval": poll_interval, "timeout": 5.0})
        self._health = SourceHealth()
        self.reading = asyncio.Event()
        self.gate = asyncio.Event()

    @property
    def config(self) -> SourceConfig:
        return self._config

    @property
    def health(self) -> SourceHealth:
        return self._health

    async def connect(self) -> None:
        self._health.connected = True

    async def read(self) -> SampleColumns:
        self.reading.set()
        await self.gate.wait()
        return SampleColumns.good(("T.value",), [42.0])

    async def close(self) -> None:
        self._health.connected = False


async def test_stop_during_a_read_commits_that_cycle_then_returns() -> None:
    driver, sink = GatedDriver(), Collector()
    poller = SourcePoller(driver, sink)
    task = asyncio.create_task(poller.run())
    await asyncio.wait_for(driver.reading.wait(), 5)
    poller.request_stop()
    assert not task.done()
    driver.gate.set()
    await asyncio.wait_for(task, 5)
    assert [s.value for s in sink.samples("T.value")] == [42.0]
    assert [e.type for e in sink.events()] == ["source.connected"]


async def test_stop_while_waiting_for_the_next_cycle_returns_at_once() -> None:
    driver, sink = GatedDriver(poll_interval=3600.0), Collector()  # the next cycle is an hour away
    driver.gate.set()
    poller = SourcePoller(driver, sink)
    task = asyncio.create_task(poller.run())
    await eventually(lambda: bool(sink.samples("T.value")), 5, "the first cycle to be recorded")
    poller.request_stop()
    await asyncio.wait_for(task, 2)
    assert len(sink.samples("T.value")) == 1
