"""Report by exception (deadband + heartbeat) and the poller's reconnect back-off."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from acquisition_helpers import Collector, sim_source
from waiting import eventually

from blackbox.agent.exception import DEFAULT_HEARTBEAT_S, ExceptionFilter
from blackbox.agent.poller import SourcePoller
from blackbox.config import TagConfig
from blackbox.model import Category, Quality, Sample
from blackbox.sim import Simulator, Stuck
from drivers.modbus import ModbusDriver, ModbusSourceConfig
from drivers.opcua import OpcUaDriver, OpcUaSourceConfig


def tag(name: str, **rbe: Any) -> TagConfig:
    return TagConfig(name=name, address="x", type="float32", category=Category.PROCESS, unit="U", **rbe)


def test_a_deadband_records_moves_beyond_it_from_the_last_recorded_value() -> None:
    f = ExceptionFilter([tag("t", deadband=0.5)])
    kept = [s.value for v in (20.0, 20.3, 20.5, 20.6, 20.2, 19.9, 21.2) for s in f.admit([Sample("t", v)], 0.0)]
    # 20.6 is 0.6 from the recorded 20.0; the slow creep back is caught once it adds up (19.9 is 0.7 from 20.6)
    assert kept == [20.0, 20.6, 19.9, 21.2]


def test_quality_and_reason_changes_always_pass_and_text_passes_on_any_change() -> None:
    f = ExceptionFilter([tag("t", deadband=100.0), tag("s", deadband=0.0)])
    seq = [Sample("t", 1.0), Sample("t", None, Quality.BAD, "float32 is NaN"),
           Sample("t", None, Quality.BAD, "float32 is NaN"), Sample("t", None, Quality.BAD, "BadSensorFailure"),
           Sample("t", 1.0), Sample("s", "idle"), Sample("s", "idle"), Sample("s", "emulsify"), Sample("s", True)]
    kept = [s for x in seq for s in f.admit([x], 0.0)]
    assert kept == [seq[0], seq[1], seq[3], seq[4], seq[5], seq[7], seq[8]]


def test_the_heartbeat_records_an_unchanged_value_again() -> None:
    f = ExceptionFilter([tag("t", deadband=1.0), tag("plain"), tag("h", deadband=1.0, heartbeat=10.0)])
    times = [0.0, 5.0, 9.9, 10.0, 15.0, 59.9, 60.0]
    kept = {name: [t for t in times for s in f.admit([Sample(name, 1.0)], t) if s] for name in ("t", "plain", "h")}
    assert kept["plain"] == times  # no deadband: every reading
    assert kept["h"] == [0.0, 10.0, 59.9]
    assert kept["t"] == [0.0, DEFAULT_HEARTBEAT_S]


def test_due_repeats_subscribed_values_and_forget_starts_afresh() -> None:
    f = ExceptionFilter([tag("h", heartbeat=10.0), tag("plain")])
    assert f.active and f.next_due_in(0.0) is None  # nothing recorded yet
    first = Sample("h", 3.0, source_ts_us=123)
    assert f.admit([first, Sample("plain", 1.0)], 0.0) == [first, Sample("plain", 1.0)]
    assert f.next_due_in(4.0) == 6.0 and f.due(9.0) == []
    assert f.due(10.0) == [first]  # the same value, its source timestamp kept
    assert f.due(12.0) == [] and f.next_due_in(12.0) == 8.0
    f.forget()
    assert f.due(100.0) == [] and not ExceptionFilter([tag("plain")]).active


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(speed=0, opcua_port=0, modbus_port=0) as simulator:
        yield simulator


@pytest.mark.slow
async def test_a_polled_tag_with_a_deadband_is_recorded_on_change_and_heartbeat(sim: Simulator) -> None:
    raw = sim_source(sim, "modbus", poll_interval=0.05)
    for t in raw["tags"]:
        if t["name"] == "CR-01.temperature":
            t |= {"deadband": 0.5, "heartbeat": 0.4}
    sink = Collector()
    poller = SourcePoller(ModbusDriver(ModbusSourceConfig.model_validate(raw)), sink)
    task = asyncio.create_task(poller.run())
    try:
        await eventually(lambda: len(sink.samples("CR-01.temperature")) >= 3, 5, "three heartbeats")
        fault = sim.faults.add(Stuck(tag="CR-01.temperature", value=40.0))  # a jump far beyond the deadband
        await sim.advance(1)
        await eventually(lambda: sink.samples("CR-01.temperature")[-1].value == 40.0, 2, "the jump")
        sim.faults.remove(fault)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    # unchanged: recorded on its heartbeat only (the spacing is checked with explicit times above)
    assert len(sink.samples("CR-01.humidity")) > 2 * len(sink.samples("CR-01.temperature"))  # others: every poll


@pytest.mark.slow
async def test_a_subscribed_tag_with_a_heartbeat_is_repeated_while_unchanged(sim: Simulator) -> None:
    raw = sim_source(sim, "opcua", mode="subscription", publishing_interval=0.05)
    for t in raw["tags"]:
        if t["name"] == "EM-01.phase":
            t["heartbeat"] = 0.3
    sink = Collector()
    poller = SourcePoller(OpcUaDriver(OpcUaSourceConfig.model_validate(raw)), sink)
    task = asyncio.create_task(poller.run())
    try:
        await eventually(lambda: len(sink.samples("EM-01.phase")) >= 3, 5, "the phase repeated twice")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    phases = sink.samples("EM-01.phase")
    assert len({(s.value, s.source_ts_us) for s in phases}) == 1  # the same value, recorded again
    assert len(sink.samples("EM-01.temperature")) == 1  # no heartbeat: recorded once, as the server sent it


@contextlib.asynccontextmanager
async def hang_up_server() -> AsyncIterator[tuple[int, list[int]]]:
    """A port that accepts connections and closes them at once; yields it and a list of accepts."""
    accepted: list[int] = []

    async def hang_up(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(len(accepted))
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], accepted
    finally:
        server.close()


class PauseLog(SourcePoller):
    """The real poller, whose pauses between attempts are noted and then skipped (no wall clock)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pauses: list[float] = []

    async def _pause(self, seconds: float) -> bool:
        self.pauses.append(seconds)
        return await super()._pause(0)


async def test_reconnects_back_off_exponentially_with_jitter() -> None:
    async with hang_up_server() as (port, accepted):
        config = ModbusSourceConfig.model_validate({
            "name": "flaky", "protocol": "modbus", "host": "127.0.0.1", "port": port, "timeout": 0.5,
            "reconnect_min": 0.1, "reconnect_max": 0.4,
            "tags": [{"name": "a", "address": "hr:0", "type": "int16", "category": "process", "unit": "U"}]})
        sink = Collector()
        poller = PauseLog(ModbusDriver(config), sink)
        task = asyncio.create_task(poller.run())
        try:
            await eventually(lambda: len(accepted) >= 6 and len(poller.pauses) >= 6, 10, "six connection attempts")
        finally:
            poller.request_stop()
            async with asyncio.timeout(5):
                await task
    stagger, *waits = poller.pauses[:6]
    assert stagger == 0.0
    # each connection is accepted, then fails before a first cycle: 0.1, 0.2, 0.4, 0.4, 0.4 s, each x 0.8-1.2
    for wait, delay in zip(waits, [0.1, 0.2, 0.4, 0.4, 0.4], strict=True):
        assert 0.8 * delay <= wait <= 1.2 * delay, (waits, delay)
    assert len(set(waits[2:])) == 3, "jitter: equal delays are not equal waits"
    kinds = [e.type for e in sink.events()]
    assert kinds[:4] == ["source.connected", "source.disconnected", "source.connected", "source.disconnected"]
