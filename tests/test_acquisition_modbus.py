"""Modbus acquisition at production depth, against the simulated line (a real pymodbus server).

Round trips of every type and order and the 2,000-tag / 33-request plan are in
``tests/drivers/test_modbus_driver.py``; RTU in ``tests/drivers/test_modbus_rtu.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

import pytest
from acquisition_helpers import Collector, good, sim_source
from waiting import eventually

from blackbox.agent.poller import SourcePoller
from blackbox.model import EventDraft, Quality, Sample
from blackbox.sim import IllegalAddress, Simulator
from drivers.modbus import ModbusDriver, ModbusSourceConfig


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(speed=0, opcua_port=0, modbus_port=0) as simulator:
        yield simulator


def line_driver(sim: Simulator) -> ModbusDriver:
    return ModbusDriver(ModbusSourceConfig.model_validate(sim_source(sim, "modbus")))


async def test_an_illegal_address_block_keeps_its_neighbours_good(sim: Simulator) -> None:
    driver = line_driver(sim)
    await driver.connect()
    try:
        before = await driver.read()
        assert good(before)
        merged = [r.describe() for r in driver.plan]
        assert "unit 1 hr:0-44" in merged  # WS-01 and FL-01 in one request, bridging hr:32-39

        # the PLC's map has a hole in the bridged gap: the merged read is refused as a whole
        hole = sim.faults.add(IllegalAddress(table="hr", start=32, count=8))
        after = await driver.read()
        assert good(after), [s for s in after if s.quality is not Quality.GOOD]
        assert [s.value for s in after] == [s.value for s in before]
        assert driver.breaks == {(1, "hr", 40)}  # split at the widest gap, and remembered
        assert [r.describe() for r in driver.plan if r.table == "hr"] == ["unit 1 hr:0-31", "unit 1 hr:40-44"]

        # a refused register block under a tag: only that tag is bad, its neighbours stay good
        sim.faults.remove(hole)
        sim.faults.add(IllegalAddress(table="hr", start=40, count=2))  # FL-01.fill_weight
        for _ in range(2):  # the second cycle runs on the learned plan
            samples = {s.tag: s for s in await driver.read()}
        assert samples["FL-01.fill_weight"].quality is Quality.BAD
        assert samples["FL-01.fill_weight"].reason == "Modbus ILLEGAL_ADDRESS (2) reading unit 1 hr:40-41"
        assert all(s.quality is Quality.GOOD for n, s in samples.items() if n != "FL-01.fill_weight")
        assert samples["FL-01.jars_filled"].value == sim.snapshot["FL-01.jars_filled"]
        assert "unit 1 hr:40-41" in [r.describe() for r in driver.plan]
        assert driver.health.tags_bad == 1 and driver.health.details["splits"]
    finally:
        await driver.close()


async def test_values_are_reused_only_while_their_registers_are_unchanged(sim: Simulator) -> None:
    driver = line_driver(sim)
    await driver.connect()
    try:
        first = await driver.read()
        second = await driver.read()
        assert second == first
        assert all(b is a for a, b in zip(first.values, second.values, strict=True))  # nothing changed: reused
        await sim.advance(60)
        third = await driver.read()
    finally:
        await driver.close()
    for sample in third:
        served = sim.snapshot[sample.tag]
        assert sample.value == (pytest.approx(served, rel=1e-6) if isinstance(served, float) else served), sample.tag
    temperature = first.tags.index("CR-01.temperature")
    assert third.values[temperature] != first.values[temperature]  # changed registers are decoded again


@contextlib.asynccontextmanager
async def black_hole() -> AsyncIterator[int]:
    """A TCP port that accepts connections and never answers: a PLC hung in the middle of a request."""
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(1024):
            pass
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


class Interleaved(Collector):
    """A poller's sink that also notes each record in a log shared with other pollers, in order."""

    def __init__(self, name: str, log: list[tuple[str, str]]) -> None:
        super().__init__()
        self.name, self.log = name, log

    async def record(self, samples: Sequence[Sample], events: Sequence[EventDraft] = ()) -> None:
        self.log.extend((self.name, e.type) for e in events)
        if samples:
            self.log.append((self.name, "cycle"))
        await super().record(samples, events)


@pytest.mark.slow
async def test_an_unreachable_source_does_not_delay_the_others(sim: Simulator) -> None:
    log: list[tuple[str, str]] = []
    sink = Interleaved("live", log)
    live = SourcePoller(line_driver(sim), sink)
    async with black_hole() as port:
        hung_cfg = ModbusSourceConfig.model_validate({**sim_source(sim, "modbus"), "name": "hung-plc",
                                                      "port": port, "timeout": 0.5, "reconnect_min": 0.1,
                                                      "reconnect_max": 0.2})
        hung_sink = Interleaved("hung", log)
        hung = SourcePoller(ModbusDriver(hung_cfg), hung_sink)
        tasks = [asyncio.create_task(p.run()) for p in (live, hung)]
        try:
            # the hung source accepts connections, times out, is dropped, again and again
            await eventually(lambda: len(hung_sink.events("source.disconnected")) >= 2 and len(sink.cycles) >= 40,
                             10.0, "two timeouts of the hung source and 40 cycles of the live one")
            assert hung.cycles == 0
            assert "no answer within 0.5 s" in hung_sink.events("source.disconnected")[-1].data["reason"]
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    # while the hung source waits out each 0.5 s request, the live one (every 0.1 s) goes on polling
    changes = [i for i, (name, kind) in enumerate(log) if name == "hung" and kind.startswith("source.")]
    for connected, disconnected in zip(changes[::2], changes[1::2], strict=False):
        assert (log[connected][1], log[disconnected][1]) == ("source.connected", "source.disconnected")
        assert log[connected:disconnected].count(("live", "cycle")) >= 2, log[connected:disconnected]
    assert live.connected is True and not sink.events("source.disconnected")
