"""Readings stored in blocks: each seq-level operation of the buffer keeps its exact meaning.

The buffer is compared with a plain model, the list of records it was given: whatever is deleted,
dropped, read back or handed to the sealer must be exactly what the model says, values with their
exact types (``True`` is not ``1``, ``1`` is not ``1.0``).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import fields
from itertools import product
from pathlib import Path
from typing import Any

import orjson
import pytest

from blackbox.buffer import Buffer, BufferError
from blackbox.columns import ReadingBlock, SampleColumns
from blackbox.model import Context, Event, EventDraft, Quality, Reading, Sample
from blackbox.seal.records import MAX_NAME, rows_of

CTX = Context(batch="B1", phase="emulsify")

KINDS: list[Sample] = [  # values whose types JSON and SQLite could confuse, qualities, reasons, source times
    Sample("b.true", True),
    Sample("i.one", 1),
    Sample("f.one", 1.0),
    Sample("s.one", "1"),
    Sample("i.zero", 0),
    Sample("b.false", False),
    Sample("f.neg_zero", -0.0),
    Sample("f.tiny", 5e-324),
    Sample("f.huge", 1e300),
    Sample("f.sum", 0.1 + 0.2),
    Sample("i.u64", 2**64 - 1),
    Sample("i.min", -(2**63)),
    Sample("s.empty", ""),
    Sample("s.json", '"quoted" \\ {"a": [1, null]}'),
    Sample("s.unicode", "Füllstand ≥ 3 µm\n\t\u0001"),
    Sample("s.null", "null"),
    Sample("none.bad", None, Quality.BAD, "timeout"),
    Sample("none.uncertain", None, Quality.UNCERTAIN),
    Sample("f.stale", 2.5, Quality.UNCERTAIN, "stale", 1_700_000_000_000_123),
    Sample("i.sourced", -7, Quality.GOOD, None, 1_700_000_000_000_456),
]

LAYOUT = [(1, 5, 100), (0, 4, 200), (2, 3, 300), (0, 1, 400), (1, 0, 500), (0, 6, 600)]
"""Commits as (events, readings, ts_us): seqs 1 event, 2-6, 7-10, 11-12 events, 13-15, 16, 17 event, 18-23."""


def exact(records: Sequence[Reading | Event]) -> list[tuple[str, ...]]:
    """Records compared field by field with each value's type (``==`` holds ``True == 1 == 1.0``)."""
    return [(type(r).__name__, *(repr(getattr(r, f.name)) for f in fields(r))) for r in records]


def exact_rows(rows: Sequence[Sequence[Any]]) -> list[list[str]]:
    return [list(map(repr, row)) for row in rows]


def samples(n: int, offset: int) -> list[Sample]:
    return [KINDS[(offset + i) % len(KINDS)] for i in range(n)]


def build(path: Path, layout: Sequence[tuple[int, int, int]] = LAYOUT) -> tuple[Buffer, list[Reading | Event]]:
    """A buffer committed as ``layout`` says, and the model: every record it was given, in seq order."""
    buf = Buffer(path, "NORMAL")
    model: list[Reading | Event] = []
    for k, (n_events, n_readings, ts) in enumerate(layout):
        drafts = [EventDraft("note", f"e{k}.{i}", {"k": k, "i": i, "x": [1.0, True, None]}) for i in range(n_events)]
        c = buf.commit(SampleColumns.of(samples(n_readings, k * 3)), drafts, CTX, ts_us=ts)
        model += [*c.events, *c.readings]
    return buf, model


def readings_of(model: Sequence[Reading | Event]) -> list[Reading]:
    return [r for r in model if isinstance(r, Reading)]


def event_seqs(buf: Buffer) -> list[int]:
    with sqlite3.connect(buf.path) as db:
        return [s for (s,) in db.execute("SELECT seq FROM events ORDER BY seq")]


def blocks(buf: Buffer) -> list[tuple[int, int]]:
    """The stored blocks, checked to be well formed: ordered, disjoint, each list as long as its range."""
    with sqlite3.connect(buf.path) as db:
        rows = db.execute("SELECT first_seq, last_seq, tags, vals, qualities, reasons, source_ts_us "
                          "FROM reading_blocks ORDER BY first_seq").fetchall()
    previous = 0
    for first, last, *columns in rows:
        assert previous < first <= last
        assert {len(orjson.loads(c)) for c in columns if c is not None} == {last - first + 1}
        previous = last
    return [(first, last) for first, last, *_ in rows]


def everything(buf: Buffer) -> list[Reading | Event]:
    """What the buffer holds: its readings read back, its events as stored."""
    with sqlite3.connect(buf.path) as db:
        events = [Event(seq, kind, subject, orjson.loads(data), ts, batch, phase) for seq, kind, subject, data, ts,
                  batch, phase in db.execute("SELECT seq, type, subject, data, ts_us, batch, phase FROM events")]
    return sorted([*buf.readings_between(0, 10_000), *events], key=lambda r: r.seq)


# -- what a commit stores ------------------------------------------------------------------------


def test_values_qualities_reasons_and_source_times_round_trip_exactly(tmp_path: Path) -> None:
    buf = Buffer(tmp_path / "b.sqlite")
    committed = buf.commit(SampleColumns.of(KINDS), [], CTX, ts_us=42)
    back = buf.readings_between(1, 100)
    assert exact(back) == exact(committed.readings) == exact(
        [Reading(i + 1, s.tag, s.value, s.quality, s.reason, 42, s.source_ts_us, "B1", "emulsify")
         for i, s in enumerate(KINDS)])
    assert all(type(r.quality) is Quality for r in back)
    negative_zero = back[6].value
    assert isinstance(negative_zero, float) and math.copysign(1, negative_zero) == -1  # -0.0 keeps its sign
    # the sealer's rows: quality a plain string, values as given
    rows, events = buf.unsealed_rows(0, 100)
    assert events == []
    assert exact_rows(rows) == exact_rows(rows_of(back)[0])
    assert {type(row[3]) for row in rows} == {str}
    # the inspection view: the value's JSON text, NULL for a missing value
    with sqlite3.connect(buf.path) as db:
        view = db.execute("SELECT seq, ts_us, tag, value, quality, reason, source_ts_us, batch, phase "
                          "FROM readings ORDER BY seq").fetchall()
    assert view == [(i + 1, 42, s.tag, None if s.value is None else orjson.dumps(s.value).decode(), s.quality.value,
                     s.reason, s.source_ts_us, "B1", "emulsify") for i, s in enumerate(KINDS)]


@pytest.mark.parametrize(("given", "nulls"), [
    ([Sample("a", 1.0), Sample("b", 2)], (True, True, True)),
    ([Sample("a", 1.0), Sample("b", None, Quality.BAD)], (False, True, True)),
    ([Sample("a", 1.0, reason="manual"), Sample("b", 2)], (True, False, True)),
    ([Sample("a", 1.0), Sample("b", 2, source_ts_us=5)], (True, True, False)),
])
def test_columns_all_at_their_default_are_stored_as_null(tmp_path: Path, given: list[Sample],
                                                         nulls: tuple[bool, bool, bool]) -> None:
    buf = Buffer(tmp_path / "b.sqlite")
    buf.commit(given, [], CTX, ts_us=1)
    with sqlite3.connect(buf.path) as db:
        stored = db.execute("SELECT qualities IS NULL, reasons IS NULL, source_ts_us IS NULL FROM reading_blocks")
        assert stored.fetchall() == [tuple(map(int, nulls))]
    assert exact(buf.readings_between(1, 2)) == exact(
        [Reading(i + 1, s.tag, s.value, s.quality, s.reason, 1, s.source_ts_us, "B1", "emulsify")
         for i, s in enumerate(given)])


def test_columns_and_samples_are_stored_alike_as_one_block(tmp_path: Path) -> None:
    stored = []
    for i, given in enumerate([list(KINDS), SampleColumns.of(KINDS)]):
        buf = Buffer(tmp_path / f"{i}.sqlite")
        committed = buf.commit(given, [EventDraft("batch.started", "B1", {})], CTX, ts_us=7)
        assert isinstance(committed.readings, ReadingBlock)
        assert (committed.readings.first_seq, committed.readings.last_seq) == (2, len(KINDS) + 1)
        with sqlite3.connect(buf.path) as db:
            stored.append(db.execute("SELECT * FROM reading_blocks").fetchall())
    assert stored[0] == stored[1] and len(stored[0]) == 1


def test_a_commit_without_samples_stores_no_block_and_returns_an_empty_one(tmp_path: Path) -> None:
    buf = Buffer(tmp_path / "b.sqlite")
    buf.commit([Sample("a", 1.0)], [], CTX)
    c = buf.commit([], [EventDraft("note", "x", {}), EventDraft("note", "y", {})], CTX, ts_us=9)
    assert len(c.readings) == 0 and list(c.readings) == []
    assert (c.readings.first_seq, c.readings.ts_us, c.readings.batch) == (4, 9, "B1")  # the next seq
    assert blocks(buf) == [(1, 1)]


@pytest.mark.parametrize(("columns", "error"), [
    # deliberately of the wrong types (type: ignore): what a buggy driver could hand over
    (SampleColumns(["t"], [1.0], ["excellent"], [None], [None]), r"unknown quality 'excellent'"),  # type: ignore[list-item]
    (SampleColumns(["t", "u"], [1.0, 2.0], [Quality.BAD, None], [None, None], [None, None]),  # type: ignore[list-item]
     r"unknown quality None"),
    (SampleColumns(["t"], [object()], [Quality.GOOD], [None], [None]),  # type: ignore[list-item]
     r"not JSON serializable"),
])
def test_a_cycle_that_cannot_be_stored_is_refused_whole(tmp_path: Path, columns: SampleColumns, error: str) -> None:
    buf = Buffer(tmp_path / "b.sqlite")
    buf.commit([Sample("a", 1.0)], [], CTX)
    with pytest.raises(BufferError, match=error):
        buf.commit(columns, [EventDraft("note", "x", {})], CTX)
    assert buf.last_seq == 1 and blocks(buf) == [(1, 1)] and event_seqs(buf) == []
    assert buf.commit([Sample("b", 2.0)], [], CTX).readings.first_seq == 2  # no seq was used up


# -- deleting any range of seqs ------------------------------------------------------------------

RANGES = [
    (3, 4),  # inside one block: it is split in two
    (2, 6),  # exactly one block
    (1, 6),  # an event and a block
    (4, 8),  # the end of one block and the start of the next
    (6, 6),  # the last reading of a block
    (7, 7),  # the first reading of a block
    (5, 14),  # through events, cutting blocks at both ends
    (11, 12),  # events only
    (17, 17),  # an event between blocks
    (19, 22),  # inside the last block
    (1, 100),  # everything
    (24, 30),  # nothing
]


@pytest.mark.parametrize(("first", "last"), RANGES)
def test_deleting_a_range_removes_exactly_its_records_and_keeps_the_rest_as_they_were(
        tmp_path: Path, first: int, last: int) -> None:
    buf, model = build(tmp_path / "b.sqlite")
    with buf.transaction() as cur:
        n = Buffer._delete_rows(cur, first, last)
    kept = [r for r in model if not first <= r.seq <= last]
    assert n == len(model) - len(kept)
    assert exact(everything(buf)) == exact(kept)
    blocks(buf)  # well formed
    with sqlite3.connect(buf.path) as db:  # and the inspection view sees the same
        assert [s for (s,) in db.execute("SELECT seq FROM readings ORDER BY seq")] == [
            r.seq for r in readings_of(kept)]


def test_pruning_a_delivered_batch_that_ends_inside_a_block_keeps_the_rest_of_the_block(tmp_path: Path) -> None:
    buf, model = build(tmp_path / "b.sqlite")
    buf.add_sealed(1, 1, 8, "a" * 64, b"w")  # ends inside the block 7..10
    assert buf.mark_delivered(1, "a" * 64)
    assert buf.prune_delivered() == 8
    assert exact(everything(buf)) == exact(model[8:])
    assert blocks(buf)[0] == (9, 10)
    backlog = buf.backlog()
    assert (backlog.undelivered_records, backlog.oldest_undelivered_ts_us) == (15, 200)


@pytest.mark.parametrize("max_records", [1, 3, 4, 7, 100])
def test_pruning_by_a_number_of_records_may_stop_inside_a_block(tmp_path: Path, max_records: int) -> None:
    buf, model = build(tmp_path / "b.sqlite")
    buf.add_sealed(1, 1, 16, "a" * 64, b"w")
    buf.add_sealed(2, 17, 23, "b" * 64, b"w")
    assert buf.mark_delivered(1, "a" * 64)
    pruned = min(max_records, 16)
    assert buf.prune_delivered(max_records=max_records) == pruned
    assert exact(everything(buf)) == exact(model[pruned:])


# -- dropping undelivered records ----------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.25, 0.3, 0.5, 0.9, 1.0])
def test_a_drop_cutting_blocks_accounts_for_exactly_what_it_removed(tmp_path: Path, fraction: float) -> None:
    buf, model = build(tmp_path / "b.sqlite")
    buf.add_sealed(1, 1, 3, "a" * 64, b"w")  # delivered: the drop starts after it, inside the block 2..6
    assert buf.mark_delivered(1, "a" * 64)
    result = buf.drop_undelivered(fraction, "quota", CTX, 9000)
    assert result is not None
    committed, dropped = result
    upto = 4 + max(1, math.ceil(20 * fraction)) - 1
    gone = [r for r in model if 4 <= r.seq <= upto]
    gone_r = readings_of(gone)
    assert (dropped.first_seq, dropped.last_seq) == (4, upto)
    assert (dropped.readings, dropped.events) == (len(gone_r), len(gone) - len(gone_r))
    assert (dropped.from_us, dropped.to_us) == (min(r.ts_us for r in gone), max(r.ts_us for r in gone))
    (gap,) = committed.events
    assert gap.data == {"first_seq": 4, "last_seq": upto, "from_us": dropped.from_us, "to_us": dropped.to_us,
                        "reason": "quota", "readings": dropped.readings, "events": dropped.events, "batches": 0}
    kept = [r for r in model if not 4 <= r.seq <= upto]
    assert exact(everything(buf)) == exact([*kept, gap])
    blocks(buf)
    assert buf.backlog().undelivered_records == 23 - upto + 1  # what is left after the delivered prefix, and the gap


# -- reading back ---------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["whole", "with holes"])
def stored(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           ) -> Iterator[tuple[Buffer, list[Reading | Event]]]:
    """The layout, whole or with holes (records deleted inside a block, an event, a whole block)."""
    buf, model = build(tmp_path_factory.mktemp("blocks") / "b.sqlite")
    if request.param == "with holes":
        with buf.transaction() as cur:
            for first, last in [(4, 4), (11, 11), (16, 16), (20, 21)]:
                Buffer._delete_rows(cur, first, last)
        model = [r for r in model if r.seq not in {4, 11, 16, 20, 21}]
    yield buf, model
    buf.close()


@pytest.mark.parametrize(("after", "limit"), list(product([0, 1, 2, 3, 5, 6, 10, 11, 12, 15, 17, 22, 23],
                                                          [1, 2, 3, 4, 5, 7, 100])))
def test_unsealed_rows_are_the_limit_lowest_records_above_after(
        stored: tuple[Buffer, list[Reading | Event]], after: int, limit: int) -> None:
    buf, model = stored
    rows_r, rows_e = buf.unsealed_rows(after, limit)
    expected_r, expected_e = rows_of([r for r in model if r.seq > after][:limit])
    assert exact_rows(rows_r) == exact_rows(expected_r)
    assert exact_rows(rows_e) == exact_rows(expected_e)
    assert all(type(row[3]) is str for row in rows_r) and all(type(row[3]) is dict for row in rows_e)


def test_unsealed_rows_needs_a_positive_limit(stored: tuple[Buffer, list[Reading | Event]]) -> None:
    with pytest.raises(ValueError, match="limit must be at least 1"):
        stored[0].unsealed_rows(0, 0)


@pytest.mark.parametrize(("first", "last"), [(1, 23), (0, 100), (3, 3), (3, 8), (6, 7), (11, 13), (17, 17),
                                             (19, 21), (22, 40), (30, 40), (5, 4)])
def test_readings_between_are_the_readings_in_the_range(stored: tuple[Buffer, list[Reading | Event]],
                                                        first: int, last: int) -> None:
    buf, model = stored
    assert exact(buf.readings_between(first, last)) == exact(
        [r for r in readings_of(model) if first <= r.seq <= last])


def test_the_sealer_s_rows_are_the_same_when_asked_again_and_again(
        stored: tuple[Buffer, list[Reading | Event]]) -> None:
    """The buffer remembers tag columns that passed the sealer's check (parsed and checked once per
    source, not per block): asked over and over, partial blocks first, it still hands the model's rows."""
    buf, model = stored
    for after, limit in product([0, 3, 2, 12, 0, 15, 1, 0], [2, 7, 100, 1]):
        found = buf.unsealed(after, limit)
        expected_r, expected_e = rows_of([r for r in model if r.seq > after][:limit])
        assert exact_rows(found.readings) == exact_rows(expected_r)
        assert exact_rows(found.events) == exact_rows(expected_e)


def passes_as_columns(buf: Buffer, after: int) -> bool:
    """Whether every run of the next two records passed the sealer's check as columns (none checked row by row)."""
    return all(run.rows()[1] for run in buf.unsealed(after, 2).runs)


@pytest.mark.parametrize("bad_tag", ["", "x" * (MAX_NAME + 1), "nul\x00tag"], ids=["empty", "too long", "NUL"])
def test_a_tag_column_that_fails_the_check_fails_it_every_time(tmp_path: Path, bad_tag: str) -> None:
    buf = Buffer(tmp_path / "b.db")
    good = SampleColumns(("a", "b"), [1.0, 2.0], [Quality.GOOD] * 2, [None] * 2, [None] * 2)
    bad = SampleColumns(("a", bad_tag), [1.0, 2.0], [Quality.GOOD] * 2, [None] * 2, [None] * 2)
    for _ in range(3):
        buf.commit(good, [], CTX)
        buf.commit(bad, [], CTX)
    verdicts = [(passes_as_columns(buf, after), passes_as_columns(buf, after)) for after in (0, 2, 4, 6, 8, 10)]
    assert verdicts == [(True, True), (False, False)] * 3
    buf.close()
