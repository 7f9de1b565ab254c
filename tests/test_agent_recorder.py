"""The recorder on a real buffer: quota and full disk never lose data silently, a refused commit never
lets the context run ahead of the record, clock jumps are recorded and timestamps stay monotonic."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from agent_helpers import BufferThread, FakeClock, events_of, fill_disk, make_recorder, small_disk

from blackbox.agent.system_alarms import QUIET_BEFORE_CLEAR_US
from blackbox.buffer import Buffer
from blackbox.config import ContextConfig
from blackbox.model import Sample

TAGS = 1000
CYCLES = 150


def cycle(i: int) -> list[Sample]:
    return [Sample(f"PLC-{t:04d}.value", float(i * TAGS + t)) for t in range(TAGS)]


@pytest.fixture
async def db() -> AsyncIterator[BufferThread]:
    thread = BufferThread()
    yield thread
    thread.close()


def readings_in(path: Path) -> list[int]:
    with sqlite3.connect(path) as conn:
        return [s for (s,) in conn.execute("SELECT seq FROM readings ORDER BY seq")]


def assert_nothing_lost_silently(path: Path, offered: int) -> None:
    """Every reading offered is in the buffer, or counted in a buffer.gap event (with its seq range if it had one)."""
    gaps = events_of(path, "buffer.gap")  # a gap event dropped in turn was recorded again (carried)
    assert len(readings_in(path)) + sum(g["data"]["readings"] for g in gaps) == offered
    with sqlite3.connect(path) as conn:
        present = {s for (s,) in conn.execute("SELECT seq FROM readings UNION SELECT seq FROM events")}
    covered = set(present)
    for g in gaps:
        if g["data"]["first_seq"] is not None:
            covered |= set(range(g["data"]["first_seq"], g["data"]["last_seq"] + 1))
    assert covered == set(range(1, max(present) + 1)), "a sequence number is neither stored nor inside a gap"


async def test_the_quota_forces_drops_only_with_gap_events_and_one_alarm(tmp_path: Path, db: BufferThread) -> None:
    path = tmp_path / "b.sqlite"
    buffer = Buffer(path, "NORMAL", quota_bytes=2 * 2**20)  # nothing is ever delivered: the store is away
    clock = FakeClock()
    rec = make_recorder(buffer, db, clock=clock.gateway_clock())
    committed = []
    for i in range(CYCLES):
        clock.advance(0.1)
        committed.append(await rec.record(cycle(i)))
    assert all(c is not None for c in committed), "the quota must never refuse a cycle: room is made first"
    assert buffer.usage().used_bytes <= 2 * 2**20
    gaps = events_of(path, "buffer.gap")
    assert len(gaps) > 1 and all(g["data"]["reason"] == "quota" for g in gaps)
    ranges = sorted({(g["data"]["first_seq"], g["data"]["last_seq"]) for g in gaps})
    assert ranges[0][0] == 1, "the oldest goes first"
    assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(ranges)), "each drop continues the previous one"
    assert any("carried_from_seq" in g["data"] for g in gaps), "earlier gap events outlive later drops"
    alarms = events_of(path, "alarm.raised")
    assert len(alarms) == 1, "one alarm for the whole episode, kept however often the buffer drops"
    assert alarms[0]["data"]["priority"] == "critical" and alarms[0]["data"]["rule"] == "buffer.data_loss"
    assert rec.dropped_records == sum(g["data"]["readings"] + g["data"]["events"] for g in gaps)
    assert_nothing_lost_silently(path, CYCLES * TAGS)
    # the alarm clears after a quiet minute without further loss
    clock.advance(QUIET_BEFORE_CLEAR_US / 1e6 - 1)
    await rec.tick()
    assert events_of(path, "alarm.cleared") == []
    clock.advance(1)
    await rec.tick()
    assert events_of(path)[-1]["type"] == "alarm.cleared"
    assert rec.alarms.active() == []
    buffer.close()


async def test_delivered_data_goes_before_any_undelivered(tmp_path: Path, db: BufferThread) -> None:
    path = tmp_path / "b.sqlite"
    buffer = Buffer(path, "NORMAL", quota_bytes=2 * 2**20)
    rec = make_recorder(buffer, db)
    for i in range(60):
        c = await rec.record(cycle(i))
        assert c is not None
        # sealed and acknowledged by the store at once
        buffer.add_sealed(i + 1, buffer.last_seq - len(c.readings) - len(c.events) + 1, buffer.last_seq,
                          f"{i:064x}", b"w")
        assert buffer.mark_delivered(i + 1, f"{i:064x}")
    assert events_of(path, "buffer.gap") == [] and events_of(path, "alarm.raised") == []
    assert buffer.usage().used_bytes <= 2 * 2**20
    assert readings_in(path)[-1] == 60 * TAGS  # the newest are all here
    buffer.close()


async def test_a_full_disk_is_met_like_the_quota_and_the_agent_keeps_recording(tmp_path: Path,
                                                                              db: BufferThread) -> None:
    with small_disk(tmp_path / "disk", 48) as disk:
        path = disk / "b.sqlite"
        buffer = Buffer(path, "NORMAL", quota_bytes=1024 * 2**20)  # the quota is far away: the disk fills first
        assert buffer.ensure_reserve()
        rec = make_recorder(buffer, db)
        for i in range(20):
            assert await rec.record(cycle(i)) is not None
        fill_disk(disk / "other-programs-logs")
        results = [await rec.record(cycle(i)) for i in range(20, 120)]
        assert sum(r is None for r in results) <= 1, "after the first refusal the buffer keeps to its size"
        assert buffer.size_held
        gaps = events_of(path, "buffer.gap")
        assert gaps and all("disk full" in g["data"]["reason"] for g in gaps)
        assert len(events_of(path, "alarm.raised")) == 1
        assert_nothing_lost_silently(path, 120 * TAGS)
        # the disk gets room again: the buffer may grow again and the reserve comes back
        (disk / "other-programs-logs").unlink()
        await rec.maintain()
        assert not buffer.size_held and buffer.reserve_path.exists()
        assert await rec.record(cycle(120)) is not None
        buffer.close()


async def test_a_refused_commit_keeps_the_events_and_the_context_never_runs_ahead(tmp_path: Path,
                                                                                db: BufferThread) -> None:
    ctx = ContextConfig.model_validate({"batch_tag": "EM-01.batch_id", "phase_tag": "EM-01.phase"})
    with small_disk(tmp_path / "disk", 48) as disk:
        path = disk / "b.sqlite"
        buffer = Buffer(path, "NORMAL")  # no reserve, no quota: nothing to make room with
        rec = make_recorder(buffer, db, ctx)
        assert await rec.record([Sample("EM-01.batch_id", "idle")]) is not None
        fill_disk(disk / "hog")
        refused = 0
        for i in range(200):  # the batch starts while the disk is full
            batch = [Sample("EM-01.batch_id", "B7"), Sample("EM-01.phase", "dispense" if i < 100 else "emulsify")]
            refused += await rec.record(batch + cycle(i)) is None
        assert refused > 0 and rec.failed_commits == refused
        assert rec.tracker.context.batch == "B7"
        (disk / "hog").unlink()
        assert await rec.record([Sample("EM-01.batch_id", "B7"), Sample("EM-01.phase", "emulsify")]) is not None
        kinds = [(e["type"], e["data"].get("phase")) for e in events_of(path) if e["type"].startswith("batch.")]
        assert kinds == [("batch.started", None), ("batch.phase", "dispense"), ("batch.phase", "emulsify")]
        lost = [g for g in events_of(path, "buffer.gap") if g["data"]["first_seq"] is None]
        assert lost and lost[0]["data"]["reason"].startswith("not recorded")
        assert_nothing_lost_silently(path, 1 + 200 * (TAGS + 2) + 2)
        buffer.close()


async def test_a_clock_jump_is_recorded_and_timestamps_never_go_back(tmp_path: Path, db: BufferThread) -> None:
    clock = FakeClock()
    buffer = Buffer(tmp_path / "b.sqlite")
    rec = make_recorder(buffer, db, clock=clock.gateway_clock())
    for step, jump in [(0.1, 0), (0.1, 0), (0.1, -3600), (0.1, 0), (0.1, 0), (0.1, 7200), (0.1, 0)]:
        clock.advance(step, jump)
        await rec.record([Sample("t", 1.0)])
    jumps = events_of(tmp_path / "b.sqlite", "clock.jump")
    assert [j["data"]["direction"] for j in jumps] == ["backward", "forward"]
    assert jumps[0]["data"]["delta_us"] == -3600 * 10**6 and "held_until_us" in jumps[0]["data"]
    with sqlite3.connect(tmp_path / "b.sqlite") as conn:
        times = [t for _, t in conn.execute("SELECT seq, ts_us FROM readings UNION ALL "
                                            "SELECT seq, ts_us FROM events ORDER BY 1")]
    assert len(times) == 9 and times == sorted(times), "timestamps must be monotonic in sequence order"
    buffer.close()
