"""The buffer's data-loss alarm goes through the alarm lifecycle: raised unacknowledged, listed and
acknowledged with `blackbox alarms` like a rule's alarm, cleared after a quiet minute, and kept
across a restart in whatever state it was."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import BufferThread, FakeClock, events_of, make_recorder, reply

from blackbox.agent.alarm_commands import handlers as alarm_handlers
from blackbox.agent.control import Caller, ControlError
from blackbox.agent.recorder import Recorder
from blackbox.agent.system_alarms import QUIET_BEFORE_CLEAR_US, SystemAlarms
from blackbox.buffer import Buffer
from blackbox.model import Sample

WANG = Caller(1000, "wang", "wang.fang")


@pytest.fixture
async def lossy(tmp_path: Path) -> AsyncIterator[tuple[Recorder, Buffer, FakeClock, Path]]:
    """A recorder whose buffer (2 MB, nothing ever delivered) has had to drop data."""
    path = tmp_path / "b.sqlite"
    thread = BufferThread()
    buffer = Buffer(path, "NORMAL", quota_bytes=2 * 2**20)
    clock = FakeClock()
    rec = make_recorder(buffer, thread, clock=clock.gateway_clock())
    i = 0
    while not events_of(path, "buffer.gap"):
        clock.advance(0.1)
        await rec.record([Sample(f"PLC-{t:04d}.value", float(i * 1000 + t)) for t in range(1000)])
        i += 1
    yield rec, buffer, clock, path
    buffer.close()
    thread.close()


async def call(rec: Recorder, command: str, **args: object) -> dict[str, Any]:
    answer: dict[str, Any] = await reply(alarm_handlers(rec.rules, rec.commit)[command], args, WANG)
    return answer


async def test_the_data_loss_alarm_is_listed_acknowledged_and_cleared_through_the_lifecycle(
        lossy: tuple[Recorder, Buffer, FakeClock, Path]) -> None:
    rec, _, clock, path = lossy
    (raised,) = events_of(path, "alarm.raised")
    assert raised["data"]["state"] == "active_unacknowledged" and raised["data"]["priority"] == "critical"
    listed = (await call(rec, "alarms.list"))["alarms"]
    assert [(a["alarm"], a["state"]) for a in listed] == [("buffer.data_loss", "active_unacknowledged")]

    await call(rec, "alarms.ack", alarms=["buffer.data_loss"])
    (acked,) = events_of(path, "alarm.acknowledged")
    assert (acked["data"]["alarm"], acked["data"]["user"], acked["data"]["state"]) == (
        "buffer.data_loss", "wang.fang (os:wang)", "active_acknowledged")
    with pytest.raises(ControlError, match="nothing to acknowledge"):
        await call(rec, "alarms.ack", alarms=["buffer"])  # by its subject, as for a tag

    clock.advance(QUIET_BEFORE_CLEAR_US / 1e6)
    await rec.tick()
    (cleared,) = events_of(path, "alarm.cleared")
    assert (cleared["data"]["alarm"], cleared["data"]["state"]) == ("buffer.data_loss", "normal")
    assert (await call(rec, "alarms.list"))["alarms"] == []


async def test_a_loss_cleared_before_anyone_acknowledged_it_waits_for_an_acknowledgement_even_after_a_restart(
        lossy: tuple[Recorder, Buffer, FakeClock, Path]) -> None:
    rec, buffer, clock, path = lossy
    clock.advance(QUIET_BEFORE_CLEAR_US / 1e6)
    await rec.tick()
    assert events_of(path, "alarm.cleared")[0]["data"]["state"] == "cleared_unacknowledged"

    restarted = SystemAlarms(buffer.load_state()["alarms"])  # what the next start reads from the buffer
    assert restarted.data_loss_alarm.state.value == "cleared_unacknowledged"
    assert restarted.active() == []


async def test_shelving_the_data_loss_alarm_is_recorded_and_expires(
        lossy: tuple[Recorder, Buffer, FakeClock, Path]) -> None:
    rec, _, clock, path = lossy
    await call(rec, "alarms.shelve", alarms=["buffer.data_loss"], duration_s=30, reason="store migration tonight")
    (shelved,) = events_of(path, "alarm.shelved")
    assert (shelved["data"]["user"], shelved["data"]["reason"]) == ("wang.fang (os:wang)", "store migration tonight")
    assert [a["state"] for a in (await call(rec, "alarms.list"))["alarms"]] == ["shelved"]
    clock.advance(31)
    await rec.tick()
    (unshelved,) = events_of(path, "alarm.unshelved")
    assert (unshelved["data"]["reason"], unshelved["data"]["state"]) == ("shelving expired", "active_unacknowledged")



def test_an_alarm_saved_before_the_lifecycle_is_taken_back_active_and_unacknowledged() -> None:
    alarms = SystemAlarms({"buffer.data_loss": {"since_us": 5_000_000, "last_us": 7_000_000, "reason": "quota"}})
    assert alarms.data_loss_alarm.state.value == "active_unacknowledged" and alarms.active() == [("buffer", "quota")]
    (cleared,) = alarms.tick(7_000_000 + QUIET_BEFORE_CLEAR_US)
    assert (cleared.type, cleared.data["state"], cleared.data["reason"]) == (
        "alarm.cleared", "cleared_unacknowledged", "no further loss since quota")
