"""The local buffer on real SQLite files."""

from __future__ import annotations

from pathlib import Path

import pytest

from blackbox.buffer import Buffer
from blackbox.model import Context, EventDraft, Quality, Sample, Value

CTX = Context(batch="FC050-2026-1125-01", product="FC-050", phase="emulsify")


def samples(n: int, start: int = 0) -> list[Sample]:
    return [Sample(f"T{i}", float(i) + 0.5) for i in range(start, start + n)]


def test_sequence_is_contiguous_across_events_and_readings_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    buf = Buffer(path)
    first = buf.commit(samples(3), [EventDraft("batch.phase", "B", {"phase": "emulsify"})], CTX)
    assert [e.seq for e in first.events] == [1]
    assert [r.seq for r in first.readings] == [2, 3, 4]
    buf.close()
    buf = Buffer(path)
    second = buf.commit(samples(2), [], CTX)
    assert [r.seq for r in second.readings] == [5, 6]
    assert buf.last_seq == 6


def test_values_keep_their_types_and_context(tmp_path: Path) -> None:
    buf = Buffer(tmp_path / "b.sqlite", "NORMAL")
    values: list[Value] = [True, 0, 3, 2.5, -0.08, "RM-001", None, 1e300]
    ss = [Sample(f"t{i}", v, Quality.GOOD if v is not None else Quality.BAD, None if v is not None else "timeout",
                 source_ts_us=1_700_000_000_000_000 + i) for i, v in enumerate(values)]
    committed = buf.commit(ss, [], CTX, ts_us=42)
    back = buf.readings_between(1, 100)
    assert back == committed.readings
    assert [type(r.value) for r in back] == [type(v) for v in values]
    assert all(r.batch == CTX.batch and r.phase == "emulsify" and r.ts_us == 42 for r in back)


def test_batch_ended_event_keeps_the_old_context(tmp_path: Path) -> None:
    buf = Buffer(tmp_path / "b.sqlite")
    old = Context(batch="B1", phase="fill")
    c = buf.commit([], [EventDraft("batch.ended", "B1", {}, context=old), EventDraft("batch.started", "B2", {})],
                   Context(batch="B2", phase="dispense"))
    assert [(e.batch, e.phase) for e in c.events] == [("B1", "fill"), ("B2", "dispense")]


def test_sealed_batches_delivery_and_sequence_after_pruning(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    buf = Buffer(path)
    buf.commit(samples(5), [], CTX)
    buf.add_sealed(1, 1, 5, "h1", b"wire1")
    assert [b.batch_seq for b in buf.undelivered(0, 10)] == [1]
    assert not buf.mark_delivered(1, "wrong-hash")
    assert buf.mark_delivered(1, "h1")
    assert buf.undelivered(0, 10) == []
    with buf.transaction() as cur:  # delivered data pruned: the sequence must still go on
        cur.execute("DELETE FROM reading_blocks")
    buf.close()
    assert Buffer(path).commit(samples(1), [], CTX).readings[0].seq == 6


def test_the_oldest_undelivered_batch_is_found_past_out_of_order_acks_and_drops(tmp_path: Path) -> None:
    buf = Buffer(tmp_path / "b.sqlite")
    buf.commit(samples(8), [], CTX)
    for n in range(4):
        buf.add_sealed(n + 1, 2 * n + 1, 2 * n + 2, f"h{n + 1}", b"wire")
    assert buf.first_undelivered() == (1, 1)
    assert buf.mark_delivered(2, "h2")  # acknowledged out of order: batch 1 is still the oldest
    assert buf.first_undelivered() == (1, 1)
    assert buf.mark_delivered(1, "h1")
    assert buf.first_undelivered() == (3, 5)
    with buf.transaction() as cur:  # the quota dropped batch 3
        cur.execute("UPDATE sealed_batches SET dropped_at_us = 1, wire = x'' WHERE batch_seq = 3")
    assert buf.first_undelivered() == (4, 7) and [b.batch_seq for b in buf.undelivered(0, 10)] == [4]
    assert buf.mark_delivered(4, "h4") and buf.first_undelivered() is None


def test_state_is_saved_with_the_commit(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    buf = Buffer(path)
    assert buf.load_state() == {}
    buf.commit(samples(1), [], CTX, state={"context": {"batch": "B1"}})
    buf.close()
    assert Buffer(path).load_state() == {"context": {"batch": "B1"}}


def test_wal_and_synchronous_pragmas_are_in_effect(tmp_path: Path) -> None:
    buf = Buffer(tmp_path / "b.sqlite", "NORMAL")
    assert buf.db.execute("PRAGMA journal_mode").fetchall() == [("wal",)]
    assert buf.db.execute("PRAGMA synchronous").fetchall() == [(1,)]  # NORMAL


# (after, limit, without) -> the batches given, of 1..8 pending (3 acknowledged, 6 dropped)
UNDELIVERED = [
    ((0, 10, frozenset()), [1, 2, 4, 5, 7, 8]),
    ((0, 3, frozenset()), [1, 2, 4]),
    ((0, 3, frozenset({1, 2})), [4, 5, 7]),  # the limit counts only the batches given
    ((2, 2, frozenset({4, 99})), [5, 7]),
    ((0, 10, frozenset({1, 2, 4, 5, 7, 8})), []),
    ((4, 10, frozenset({3, 6})), [5, 7, 8]),  # neither pending anyway
]


@pytest.mark.parametrize(("ask", "given"), UNDELIVERED)
def test_undelivered_batches_leave_out_those_asked_without_reading_their_wires(
        tmp_path: Path, ask: tuple[int, int, frozenset[int]], given: list[int]) -> None:
    buf = Buffer(tmp_path / "b.sqlite")
    buf.commit(samples(8), [], CTX)
    for n in range(1, 9):
        buf.add_sealed(n, n, n, f"h{n}", f"wire-{n}".encode())
    assert buf.mark_delivered(3, "h3")
    with buf.transaction() as cur:  # the quota dropped batch 6
        cur.execute("UPDATE sealed_batches SET dropped_at_us = 1, wire = x'' WHERE batch_seq = 6")
    statements: list[str] = []
    buf.db.set_trace_callback(statements.append)
    batches = buf.undelivered(*ask)
    buf.db.set_trace_callback(None)
    assert [(b.batch_seq, b.wire) for b in batches] == [(n, f"wire-{n}".encode()) for n in given]
    wire_reads = [sql for sql in statements if "wire" in sql]
    if not ask[2]:
        assert len(wire_reads) == 1
    else:  # only the wires of the batches given are read, by their numbers (the trace shows them bound)
        assert [seqs_named(sql) for sql in wire_reads] == ([set(given)] if given else [])


def seqs_named(sql: str) -> set[int]:
    """The batch numbers of a traced ``... WHERE batch_seq IN (4, 5, 7) ...``."""
    listed = sql.split("IN (", 1)[1].split(")", 1)[0]
    return {int(n) for n in listed.split(",")}
