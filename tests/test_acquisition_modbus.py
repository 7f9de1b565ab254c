"""Modbus acquisition at production depth, against the simulated line (a real pymodbus server).

Round trips of every type and order and the 2,000-tag / 33-request plan are in
``tests/drivers/test_modbus_driver.py``; RTU in ``tests/drivers/test_modbus_rtu.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import statistics
from collections.abc import AsyncIterator

import pytest
from acquisition_helpers import Collector, good, sim_source
from waiting import eventually

from blackbox.agent.poller import SourcePoller
from blackbox.model import Quality
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


@pytest.mark.slow
async def test_an_unreachable_source_does_not_delay_the_others(sim: Simulator) -> None:
    sink = Collector()
    live = SourcePoller(line_driver(sim), sink)
    async with black_hole() as port:
        hung_cfg = ModbusSourceConfig.model_validate({**sim_source(sim, "modbus"), "name": "hung-plc",
                                                      "port": port, "timeout": 0.5, "reconnect_min": 0.1,
                                                      "reconnect_max": 0.2})
        hung_sink = Collector()
        hung = SourcePoller(ModbusDriver(hung_cfg), hung_sink)
        tasks = [asyncio.create_task(p.run()) for p in (live, hung)]
        try:
            # the hung source accepts connections, times out, is dropped, again and again
            await eventually(lambda: len(hung_sink.events("source.disconnected")) >= 2 and len(sink.cycles) >= 40,
                             10.0, "two timeouts of the hung source and 40 cycles of the live one")
            assert hung.cycles == 0
            assert "No response received" in hung_sink.events("source.disconnected")[-1].data["reason"]
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    times = sink.reading_times("CR-01.temperature")
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # poll_interval 0.1 s; the hung source's 0.5 s timeouts never show in the live source's rhythm
    assert statistics.median(gaps) == pytest.approx(0.1, abs=0.02)
    assert max(gaps) < 0.3, max(gaps)
    assert live.connected is True and not sink.events("source.disconnected")
