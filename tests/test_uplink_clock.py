"""The clock status in each batch header: a step of the wall clock marks the batch, and the
kernel's own synchronisation status is reported."""

from __future__ import annotations

import ctypes
import struct
from pathlib import Path

import pytest
from uplink_support import Pipeline

from blackbox.agent.sealer import CLOCK_STEP_US, ClockWatch
from blackbox.config import MqttConfig
from blackbox.seal import open_batch


def test_a_step_of_the_wall_clock_marks_the_next_batch() -> None:
    offsets = iter([0, 500, 500 + CLOCK_STEP_US + 1, CLOCK_STEP_US + 1, -5 * CLOCK_STEP_US])
    watch = ClockWatch(check_sync=False, offset=lambda: next(offsets))
    assert [watch.status() for _ in range(4)] == ["ok", "stepped", "ok", "stepped"]


# adjtimex(2) return values, from the man page: TIME_OK, TIME_INS, TIME_DEL, TIME_OOP, TIME_WAIT, TIME_ERROR
@pytest.mark.parametrize(("answer", "expected"), [(0, "ok"), (1, "ok"), (2, "ok"), (3, "ok"), (4, "ok"),
                                                  (5, "unsynced")])
def test_the_kernels_answer_decides_between_ok_and_unsynced(answer: int, expected: str) -> None:
    watch = ClockWatch(check_sync=True, offset=lambda: 0)
    watch._adjtimex = lambda _timex: answer
    assert watch.status() == expected


STA_UNSYNC, STA_CLOCKERR = 0x0040, 0x1000
"""Bits of ``struct timex``'s ``status`` (linux/timex.h) for which the kernel reports TIME_ERROR."""


def kernel_clock_unsynced() -> bool:
    """A second reading of the kernel's state, independent of the agent's: the status bits of the
    ``struct timex`` adjtimex fills in (64-bit Linux layout: ``int status`` at offset 40), not its
    return value."""
    assert ctypes.sizeof(ctypes.c_long) == 8, "the layout below is the 64-bit one"
    timex = ctypes.create_string_buffer(512)  # modes 0: a read-only query
    assert ctypes.CDLL(None, use_errno=True).adjtimex(timex) >= 0
    (status,) = struct.unpack_from("i", timex, 40)
    return bool(status & (STA_UNSYNC | STA_CLOCKERR))


async def test_sealed_batches_carry_the_clock_status(tmp_path: Path) -> None:
    p = Pipeline(tmp_path, MqttConfig(), seal={"clock_sync_check": True})
    try:
        await p.start(forward=False, seal=False)
        await p.commit(5)
        await p.sealer.flush()
        (batch,) = p.buffer.undelivered(0, 10)
        expected = "unsynced" if kernel_clock_unsynced() else "ok"
        assert open_batch(batch.wire).header.clock == expected
    finally:
        await p.stop()
