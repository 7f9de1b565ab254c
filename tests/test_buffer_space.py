"""The buffer's space: delivered data pruned first, undelivered dropped only with a gap event, the quota
enforced by SQLite itself."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from blackbox.buffer import Buffer, BufferFull, Committed, Dropped
from blackbox.model import Context, EventDraft, Sample

CTX = Context(batch="B1", phase="emulsify")


def drop(buf: Buffer, fraction: float, reason: str, context: Context, ts_us: int) -> tuple[Committed, Dropped]:
    """``buf.drop_undelivered(...)``, which must find something to drop."""
    result = buf.drop_undelivered(fraction, reason, context, ts_us)
    assert result is not None, "nothing was dropped"
    return result


def cycle(n: int, base: float = 0.0) -> list[Sample]:
    return [Sample(f"T{i:04d}", base + i) for i in range(n)]


def filled(tmp_path: Path, batches: int = 4, per_batch: int = 10, quota: int | None = None) -> Buffer:
    """``batches`` sealed batches of ``per_batch`` readings each, none delivered yet."""
    buf = Buffer(tmp_path / "b.sqlite", "NORMAL", quota)
    for b in range(batches):
        c = buf.commit(cycle(per_batch), [], CTX, ts_us=1000 + b)
        buf.add_sealed(b + 1, c.readings[0].seq, c.readings[-1].seq, f"{b + 1:064x}", b"wire")
    return buf


def seqs(buf: Buffer) -> list[int]:
    with sqlite3.connect(buf.path) as db:
        return [s for (s,) in db.execute("SELECT seq FROM readings UNION ALL SELECT seq FROM events ORDER BY 1")]


def test_pruning_removes_only_delivered_records_and_keeps_the_chain_tip(tmp_path: Path) -> None:
    buf = filled(tmp_path)
    assert buf.mark_delivered(1, f"{1:064x}") and buf.mark_delivered(2, f"{2:064x}")
    assert buf.mark_delivered(4, f"{4:064x}")  # out of order: 3 is still out
    assert buf.prune_delivered() == 30  # 1, 2 (the prefix) and 4's rows
    assert seqs(buf) == list(range(21, 31))  # batch 3 stays: the store does not have it
    assert [b.batch_seq for b in buf.undelivered(0, 10)] == [3]
    assert (last := buf.last_sealed()) is not None and last.batch_seq == 4
    backlog = buf.backlog()
    assert (backlog.last_seq, backlog.undelivered_records, backlog.pending_batches) == (40, 20, 1)
    buf.close()
    assert Buffer(tmp_path / "b.sqlite").commit(cycle(1), [], CTX).readings[0].seq == 41


def test_retention_prunes_only_what_was_delivered_before_the_cutoff(tmp_path: Path) -> None:
    buf = filled(tmp_path)
    buf.mark_delivered(1, f"{1:064x}")
    with buf.transaction() as cur:  # delivered long ago
        cur.execute("UPDATE sealed_batches SET delivered_at_us = 5 WHERE batch_seq = 1")
    buf.mark_delivered(2, f"{2:064x}")
    assert buf.prune_delivered(delivered_before_us=10) == 10
    assert seqs(buf)[0] == 11


def test_dropping_undelivered_records_a_gap_event_with_the_exact_range(tmp_path: Path) -> None:
    buf = filled(tmp_path)
    buf.commit(cycle(5), [], CTX, ts_us=2000)  # unsealed 41..45
    assert buf.mark_delivered(1, f"{1:064x}")
    # a fifth of 11..45 reaches into sealed batch 2 (11..20): the whole batch goes
    result = buf.drop_undelivered(0.2, "quota", CTX, 3000, [EventDraft("alarm.raised", "buffer", {"x": 1})])
    assert result is not None
    committed, dropped = result
    assert (dropped.first_seq, dropped.last_seq, dropped.readings, dropped.batches) == (11, 20, 10, 1)
    assert (dropped.from_us, dropped.to_us) == (1001, 1001)
    gap, alarm = committed.events
    assert (gap.seq, gap.type, alarm.seq) == (46, "buffer.gap", 47)
    assert gap.data == {"first_seq": 11, "last_seq": 20, "from_us": 1001, "to_us": 1001, "reason": "quota",
                        "readings": 10, "events": 0, "batches": 1}
    assert (gap.batch, gap.phase, gap.ts_us) == ("B1", "emulsify", 3000)
    assert [b.batch_seq for b in buf.undelivered(0, 10)] == [3, 4]  # 2 is dropped, never sent
    assert not buf.mark_delivered(2, f"{2:064x}")
    # everything not delivered is either still here or inside the gap's range
    assert seqs(buf) == [*range(1, 11), *range(21, 48)]
    # dropping everything left: unsealed rows after the sealed batches too
    _, everything = drop(buf, 1.0, "quota", CTX, 4000)
    assert (everything.first_seq, everything.last_seq) == (21, 47)
    assert buf.undelivered(0, 10) == []
    # dropping again takes the gap events too, but records each of them again: the account survives
    committed, _ = drop(buf, 1.0, "quota", CTX, 5000)
    assert [(e.type, e.data.get("carried_from_seq")) for e in committed.events] == [
        ("buffer.gap", 48), ("buffer.gap", 49), ("buffer.gap", None)]
    assert committed.events[0].data["first_seq"] == 11 and committed.events[1].data["first_seq"] == 21
    assert buf.backlog().undelivered_records == 3


def test_a_drop_never_takes_the_production_context(tmp_path: Path) -> None:
    buf = Buffer(tmp_path / "b.sqlite", "NORMAL")
    context = [EventDraft("batch.started", "B7", {"batch": "B7", "product": "FC-050"}),
               EventDraft("material.consumed", "RM-010", {"lot": "GLY-77", "actual": 25.02}),
               EventDraft("batch.phase", "B7", {"batch": "B7", "phase": "emulsify", "previous": "dispense"}),
               EventDraft("qc.result", "pH", {"value": 6.1, "pass": True}),
               EventDraft("batch.ended", "B7", {"batch": "B7", "last_phase": "cool"})]
    for i, event in enumerate(context):  # seqs 5i+1: a source event, 5i+2: the context event, then readings
        buf.commit(cycle(3), [EventDraft("source.disconnected", "plc", {"reason": "x"}), event],
                   Context(batch="B7", phase=f"p{i}"), ts_us=1000 * (i + 1))
    committed, dropped = drop(buf, 1.0, "quota", CTX, 9000)
    assert (dropped.first_seq, dropped.last_seq, dropped.readings) == (1, 25, 15)
    assert dropped.events == 5, "the source events are lost (and counted); the context ones are not"
    *carried, gap = committed.events
    assert gap.type == "buffer.gap" and gap.data["events"] == 5
    assert [(e.type, e.data, e.ts_us, e.batch, e.phase) for e in carried] == [
        (d.type, {**d.data, "carried_from_seq": 5 * i + 2}, 1000 * (i + 1), "B7", f"p{i}")
        for i, d in enumerate(context)]
    # a second drop takes the carried copies too, and records them again
    again, _ = drop(buf, 1.0, "quota", CTX, 9500)
    assert [e.type for e in again.events] == [*(d.type for d in context), "buffer.gap", "buffer.gap"]
    assert [e.ts_us for e in again.events[:5]] == [1000 * (i + 1) for i in range(5)]


def test_the_quota_is_enforced_by_sqlite_and_a_refused_commit_uses_no_sequence_number(tmp_path: Path) -> None:
    buf = Buffer(tmp_path / "b.sqlite", "NORMAL", quota_bytes=256 * 1024)
    with pytest.raises(BufferFull) as info:
        for i in range(1000):
            buf.commit(cycle(200, i), [], CTX)
    assert info.value.reason == "quota"
    last = buf.last_seq
    assert last % 200 == 0 and seqs(buf)[-1] == last  # whole cycles only
    assert buf.usage().used_bytes <= 256 * 1024
    _, dropped = drop(buf, 0.5, "quota", CTX, 1)
    assert dropped.first_seq == 1
    assert buf.commit(cycle(200), [], CTX).readings[0].seq == last + 2  # after the gap event


def test_holding_the_size_makes_the_present_file_the_quota_until_released(tmp_path: Path) -> None:
    buf = Buffer(tmp_path / "b.sqlite", "NORMAL", quota_bytes=64 * 2**20)
    buf.commit(cycle(2000), [], CTX)
    held = buf.hold_size()
    assert buf.size_held and held < 64 * 2**20 and buf.usage().quota_bytes == held
    with pytest.raises(BufferFull) as info:
        for _ in range(100):
            buf.commit(cycle(2000), [], CTX)
    assert info.value.reason == "disk full"
    buf.release_size()
    assert not buf.size_held
    buf.commit(cycle(2000), [], CTX)


def test_the_reserve_is_kept_beside_the_buffer_and_given_back_on_demand(tmp_path: Path) -> None:
    buf = Buffer(tmp_path / "b.sqlite")
    assert buf.ensure_reserve()
    assert buf.reserve_path.stat().st_size >= 8 << 20
    assert buf.release_reserve() and not buf.reserve_path.exists()
    assert not buf.release_reserve()
