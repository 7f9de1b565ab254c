"""Poll cycles skipped because a cycle overran its interval are counted and recorded, never silent.

A real Modbus device answers at once; the recorder is slow (as a buffer under load is), so every
cycle takes more than two poll intervals.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from acquisition_helpers import Collector
from driver_helpers import StartModbus, modbus_source, sim_device
from waiting import eventually

from blackbox.agent import poller as poller_module
from blackbox.agent.poller import SourcePoller
from blackbox.model import EventDraft, Sample
from drivers.modbus import ModbusDriver, ModbusSourceConfig

INTERVAL_S = 0.02


class SlowRecorder(Collector):
    """Takes 2.5 poll intervals to make a cycle's samples durable."""

    async def record(self, samples: Sequence[Sample], events: Sequence[EventDraft] = ()) -> None:
        if samples:
            await asyncio.sleep(2.5 * INTERVAL_S)
        await super().record(samples, events)


async def test_skipped_cycles_are_counted_and_recorded_in_aggregated_events(modbus_server: StartModbus) -> None:
    server = await modbus_server([sim_device(hr=[(0, [7])])])
    tags = [{"name": "a", "address": "hr:0", "type": "int16", "category": "process", "unit": "U"}]
    config = ModbusSourceConfig.model_validate(modbus_source(server.port, tags, poll_interval=INTERVAL_S))
    sink = SlowRecorder()
    poller = SourcePoller(ModbusDriver(config), sink)
    assert poller_module.OVERRUN_REPORT_EVERY_S >= 60  # far longer than this test
    task = asyncio.create_task(poller.run())
    try:
        await eventually(lambda: poller.cycles >= 10, 10, "ten slow cycles")
        # each cycle took 2.5 intervals: two grid points skipped per cycle (one before the first overrun)
        assert poller.overruns >= 2 * (poller.cycles - 1)
        first = sink.events("source.overrun")
        assert len(first) == 1, "one event at the first overrun, then aggregated"
        assert first[0].data["skipped"] >= 2 and first[0].data["poll_interval_s"] == INTERVAL_S
        assert first[0].data["slowest_cycle_s"] >= 2.5 * INTERVAL_S
    finally:
        poller.request_stop()
        async with asyncio.timeout(5):
            await task
    events = sink.events("source.overrun")
    assert len(events) == 2, "the rest is recorded when the poller stops"
    assert sum(e.data["skipped"] for e in events) == poller.overruns == events[-1].data["total"]
