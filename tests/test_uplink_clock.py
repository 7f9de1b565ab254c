"""The clock status in each batch header: a step of the wall clock marks the batch, and the
kernel's own synchronisation status is reported."""

from __future__ import annotations

from pathlib import Path

from uplink_support import Pipeline

from blackbox.agent.sealer import CLOCK_STEP_US, ClockWatch
from blackbox.config import MqttConfig
from blackbox.seal import open_batch


def test_a_step_of_the_wall_clock_marks_the_next_batch() -> None:
    offsets = iter([0, 500, 500 + CLOCK_STEP_US + 1, CLOCK_STEP_US + 1, -5 * CLOCK_STEP_US])
    watch = ClockWatch(check_sync=False, offset=lambda: next(offsets))
    assert [watch.status() for _ in range(4)] == ["ok", "stepped", "ok", "stepped"]


async def test_sealed_batches_carry_the_clock_status(tmp_path: Path) -> None:
    p = Pipeline(tmp_path, MqttConfig(), seal={"clock_sync_check": True})
    try:
        await p.start(forward=False, seal=False)
        await p.commit(5)
        await p.sealer.flush()
        (batch,) = p.buffer.undelivered(0, 10)
        expected = "unsynced" if ClockWatch(check_sync=True).kernel_unsynced() else "ok"
        assert open_batch(batch.wire).header.clock == expected
    finally:
        await p.stop()
