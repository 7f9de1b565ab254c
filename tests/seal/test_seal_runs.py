"""Readings given as runs (the gateway buffer's blocks, made into rows one at a time) seal exactly
like the same rows given at once: the same records document, the same exact byte cap, the same checks."""

from __future__ import annotations

import random
import weakref
from collections.abc import Iterator, Sequence
from itertools import pairwise
from typing import Any

import pytest

from blackbox.agent.sealer import one_by_one
from blackbox.model import Event, Quality, Reading
from blackbox.seal import decode_records, open_batch, seal_rows
from blackbox.seal.format import seal_runs
from blackbox.seal.records import dump_document, rows_of

from .helpers import T0
from .test_seal_fast_paths import uneven_records


class CountingRun:
    """A run of rows that counts how often the sealer asked for them."""

    def __init__(self, rows: Sequence[Sequence[Any]], checked: bool = False) -> None:
        self._rows, self._checked, self.asked = rows, checked, 0

    @property
    def first_seq(self) -> int:
        return int(self._rows[0][0])

    @property
    def last_seq(self) -> int:
        return int(self._rows[-1][0])

    def rows(self) -> tuple[Sequence[Sequence[Any]], bool]:
        self.asked += 1
        return self._rows, self._checked


def runs_of(readings: list[list[Any]], seed: int) -> list[CountingRun]:
    """Reading rows cut into runs of random lengths, never across a gap in their seqs (where events sit)."""
    rnd = random.Random(seed)
    cuts = {0, len(readings)}
    cuts |= {i for i in range(1, len(readings)) if readings[i][0] != readings[i - 1][0] + 1}
    cuts |= {rnd.randrange(1, len(readings)) for _ in range(len(readings) // 7)}
    return [CountingRun(readings[a:b]) for a, b in pairwise(sorted(cuts))]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("max_bytes", [None, 900, 5000, 20_011, 40_000])
def test_runs_seal_like_rows_with_an_exact_byte_cap(seal_args: dict[str, Any], seed: int,
                                                    max_bytes: int | None) -> None:
    records = uneven_records(seed)  # readings of uneven size, events between them
    r_rows, e_rows = rows_of(records)
    runs = runs_of(r_rows, seed)
    sealed = seal_runs(runs, e_rows, **seal_args, max_bytes=max_bytes)
    n = sealed.header.last_seq
    # the oracle: the document of the records as one list, made by orjson
    if max_bytes is None:
        assert n == len(records)
    else:
        assert n == 1 or len(dump_document(*rows_of(records[:n]))) <= max_bytes
        assert n < len(records) and len(dump_document(*rows_of(records[: n + 1]))) > max_bytes
    assert decode_records(open_batch(sealed.wire)) == records[:n]
    assert sealed.wire == seal_rows(r_rows, e_rows, **seal_args, max_bytes=max_bytes).wire
    assert all(run.asked <= 1 for run in runs)  # each run made into rows once, those past the cap never
    assert sum(run.asked for run in runs) < len(runs) or max_bytes is None


def test_a_run_larger_than_the_cap_at_the_start_gives_its_first_reading_alone(seal_args: dict[str, Any]) -> None:
    rows = [[i, "T", "x" * 500, "good", None, T0, None, None, None] for i in range(1, 5)]
    sealed = seal_runs([CountingRun(rows)], [], **seal_args, max_bytes=100)
    assert (sealed.header.first_seq, sealed.header.last_seq) == (1, 1)


def reading(seq: int, value: Any = 1.5) -> list[Any]:
    return [seq, "T", value, "good", None, T0, None, None, None]


def event(seq: int) -> list[Any]:
    return [seq, "x.y", None, {}, T0, None, None]


@pytest.mark.parametrize(("runs", "events", "match"), [
    ([[1, 2], [4, 5]], [], "seq 4 follows 2"),  # a gap between runs
    ([[1, 2]], [4], "seq 4 follows 2"),  # a gap before an event
    ([[1, 3]], [], "contiguous"),  # a gap inside a run
    ([[2, 1]], [], "contiguous"),
    ([[1, 2], [2, 3]], [], "seq 2 follows 2"),
    ([], [], "empty"),
], ids=["gap between runs", "gap before an event", "gap in a run", "run descends", "runs overlap", "nothing"])
def test_runs_must_make_one_contiguous_run_of_seqs(seal_args: dict[str, Any], runs: list[list[int]],
                                                  events: list[int], match: str) -> None:
    given = [CountingRun([reading(s) for s in seqs], checked=True) for seqs in runs]
    with pytest.raises(ValueError, match=match):
        seal_runs(given, [event(s) for s in events], **seal_args)


@pytest.mark.parametrize("checked", [False, True])
def test_a_run_not_known_to_pass_is_checked_row_by_row(seal_args: dict[str, Any], checked: bool) -> None:
    """A run whose columns did not pass the quick check is checked row by row; one that passed is not
    checked again (the check ran on its columns: a NaN cannot reach here that way)."""
    rows = [reading(1), reading(2, float("nan")), reading(3)]
    if checked:
        sealed = seal_runs([CountingRun(rows, checked=True)], [], **seal_args)
        assert sealed.header.n_readings == 3
    else:
        with pytest.raises(ValueError, match="reading seq 2"):
            seal_runs([CountingRun(rows)], [], **seal_args)


def test_records_as_runs_open_as_records(seal_args: dict[str, Any]) -> None:
    records: list[Reading | Event] = [Reading(1, "A", 1.0, Quality.GOOD, None, T0, None, "B", "p"),
                                      Event(2, "x.y", None, {"k": 1}, T0 + 5, "B", "p"),
                                      Reading(3, "A", 2.0, Quality.BAD, "io", T0 + 9, None, "B", "p"),
                                      Reading(4, "B", 3, Quality.GOOD, None, T0 + 9, T0 + 1, "B", "p")]
    r_rows, e_rows = rows_of(records)
    sealed = seal_runs([CountingRun(r_rows[:1]), CountingRun(r_rows[1:])], e_rows, **seal_args)
    h = sealed.header
    assert (h.first_seq, h.last_seq, h.n_readings, h.n_events, h.first_ts_us, h.last_ts_us) == (1, 4, 3, 1, T0,
                                                                                                  T0 + 9)
    assert decode_records(open_batch(sealed.wire)) == records


@pytest.mark.parametrize("seed", range(3))
def test_a_cap_met_to_the_byte_takes_the_record_that_meets_it(seal_args: dict[str, Any], seed: int) -> None:
    """For records 1..k, a cap of exactly their document's size seals 1..k; a byte less seals fewer —
    whether k ends a run, falls inside one, or is an event (and one record even when it does not fit)."""
    records = uneven_records(seed)
    r_rows, e_rows = rows_of(records)
    runs = runs_of(r_rows, seed)
    ends = {run.last_seq for run in runs} | {row[0] for row in e_rows}
    for k in sorted(random.Random(seed).sample(range(2, len(records)), 25) + sorted(ends)[:25]):
        exact = len(dump_document(*rows_of(records[:k])))
        assert seal_runs(runs, e_rows, **seal_args, max_bytes=exact).header.last_seq == k
        fewer = seal_runs(runs, e_rows, **seal_args, max_bytes=exact - 1).header.last_seq
        assert fewer == max(k - 1, 1)  # never fewer than one record


def test_runs_handed_over_one_by_one_are_let_go_once_in_the_document(seal_args: dict[str, Any]) -> None:
    """The sealer's way (a run holds its stored block's text): when a run is made into rows, no run
    before it is held any more, and the bytes are those of the rows sealed whole."""
    r_rows, e_rows = rows_of(uneven_records(0))
    runs = runs_of(r_rows, 0)
    refs = [weakref.ref(r) for r in runs]
    held_before: list[int] = []

    class Watched(CountingRun):
        def rows(self) -> tuple[Sequence[Sequence[Any]], bool]:
            mine = next(i for i, ref in enumerate(refs) if ref() is self)
            held_before.append(sum(ref() is not None for ref in refs[:mine]))
            return super().rows()

    for run in runs:
        run.__class__ = Watched
    del run
    handed: Iterator[CountingRun] = one_by_one(runs)
    sealed = seal_runs(handed, e_rows, **seal_args)
    assert runs == [] and len(held_before) == len(refs) > 5
    assert held_before == [0] * len(refs)
    assert sealed.wire == seal_rows(r_rows, e_rows, **seal_args).wire
