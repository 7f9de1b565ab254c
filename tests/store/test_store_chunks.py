"""Readings packed into column chunks come back exactly, grouped by (tag, production batch, phase)."""

from __future__ import annotations

from typing import Any

import pytest

from blackbox.store.chunks import (
    CHUNK_COLUMNS,
    ChunkError,
    check_sizes,
    decode_tuple,
    explode,
    make_chunks,
    merge,
    pack_chunk,
    pack_single,
)
from blackbox.store.derive import decode_value


def row(seq: int, tag: str, value: Any, *, quality: str = "good", reason: str | None = None,
        source: int | None = None, batch: str | None = "B", phase: str | None = "mix") -> list[Any]:
    return [seq, tag, value, quality, reason, 1_000 + seq * 10, source, batch, phase]


def polled(n_tags: int, cycles: int, **kw: Any) -> list[list[Any]]:
    """The usual batch: every tag once per cycle, in the same order."""
    return [row(c * n_tags + t + 1, f"T-{t}", float(c * 10 + t), **kw) for c in range(cycles) for t in range(n_tags)]


CASES = {
    "polled": polled(5, 4),
    "one tag": polled(1, 7),
    "one cycle": polled(6, 1),
    "a phase change mid-batch": polled(3, 2) + [row(7 + i, f"T-{i % 3}", 1.5, phase="heat") for i in range(6)],
    "another production batch": [*polled(2, 2), row(5, "T-0", 2.5, batch="C")],
    "not periodic": [row(1, "A", 1.0), row(2, "B", 2.0), row(3, "B", 3.0), row(4, "A", 4.0), row(5, "C", 5.0)],
    "every kind": [row(1, "K", True), row(2, "K", 0), row(3, "K", -(2**63)), row(4, "K", 2**64 - 1),
                   row(5, "K", -0.0), row(6, "K", 1e-300), row(7, "K", "lot 42 é"),
                   row(8, "K", None, quality="bad", reason="open circuit"), row(9, "K", 3.25, quality="uncertain")],
    "some source times": [row(1, "S", 1.0, source=5), row(2, "S", 2.0), row(3, "S", 3.0, source=-7)],
    "no batch or phase": polled(2, 3, batch=None, phase=None),
    "an old quality": [row(1, "Q", 1.0, quality="GOOD"), row(2, "Q", 2.0)],
    "two sources' cycles interleaving": [row(i + 1, tag, float(i), quality="uncertain" if i % 5 == 0 else "good",
                                             source=i * 3)
                                         for i, tag in enumerate(["A1", "A2", "B1", "B2", "B3", "A1", "A2", "A1",
                                                                  "B1", "A2", "B2", "B3", "B1"])],
    "one reading of each tag": [row(i + 1, f"T-{(i * 7) % 9}", 0.5 * i) for i in range(9)],
}


@pytest.mark.parametrize("rows", CASES.values(), ids=CASES.keys())
def test_chunks_hold_exactly_the_readings(rows: list[list[Any]]) -> None:
    chunks = make_chunks(rows, 7, 3)
    back = sorted((r for c in chunks for r in explode(decode_tuple(c))), key=lambda r: r[1])
    assert [[r[1], r[3], decode_value(r[4], r[5], r[6]), r[7], r[8], r[9], r[10], r[11], r[12]] for r in back] == rows
    assert all(r[0] == 7 and r[2] == 3 for r in back)
    for r in back:  # the value's Python type survives (True is not 1, 0 is not 0.0)
        assert type(decode_value(r[4], r[5], r[6])) is type(rows[[x[0] for x in rows].index(r[1])][2])
    keys = [(c[2], c[3], c[4]) for c in chunks]
    assert len(keys) == len(set(keys)) == len({(r[1], r[7], r[8]) for r in rows})  # one chunk per group
    first = [c[CHUNK_COLUMNS.index("first_seq")] for c in chunks]
    assert first == sorted(first)  # by first seq: the same batch always gives the same tuples


@pytest.mark.parametrize("rows", CASES.values(), ids=CASES.keys())
def test_chunks_are_the_general_packing_of_each_group_byte_for_byte(rows: list[list[Any]]) -> None:
    """Stored chunks are compared with the ones derived from the signed batch as bytes, also those an
    earlier version stored: whatever shortcut a batch takes, each chunk is exactly what
    :func:`pack_chunk` makes of its group (tag, production batch, phase), in the order of first seq."""
    groups: dict[tuple[Any, Any, Any], list[list[Any]]] = {}
    for r in rows:
        groups.setdefault((r[1], r[7], r[8]), []).append(r)
    expected = [pack_chunk([list(column) for column in zip(*g, strict=True)], 7, 3) for g in groups.values()]
    assert make_chunks(rows, 7, 3) == expected


ONE_READING = {f"{case}, row {i}": r for case, rows in CASES.items() for i, r in enumerate(rows)}
ONE_READING["a reason and a source time"] = row(3, "R", 2, quality="uncertain", reason="over range", source=9)


@pytest.mark.parametrize("one", ONE_READING.values(), ids=ONE_READING.keys())
def test_a_chunk_of_one_reading_is_the_general_chunk_byte_for_byte(one: list[Any]) -> None:
    """The re-verification compares stored chunks with derived ones as bytes: the shortcut for a
    chunk of one reading must build exactly the tuple the general packing builds."""
    assert pack_single(one, 7, 3) == pack_chunk([[value] for value in one], 7, 3)


def test_merged_chunks_join_their_columns() -> None:
    rows = [make_chunks(polled(1, 3), 1, 1)[0], make_chunks([row(4, "T-0", 9.0)], 1, 2)[0]]
    merged = merge([_Row(r) for r in rows])
    assert (merged.n, list(merged.seqs), list(merged.nums)) == (4, [1, 2, 3, 4], [0.0, 10.0, 20.0, 9.0])


@pytest.mark.parametrize(("column", "value"), [("nums", b"\x00" * 7), ("seqs", b""), ("kinds", b"ff"),
                                               ("qualities", b"gggg")])
def test_a_chunk_whose_columns_do_not_hold_n_readings_is_refused(column: str, value: bytes) -> None:
    chunk = list(make_chunks(polled(1, 3), 1, 1)[0])
    chunk[CHUNK_COLUMNS.index(column)] = value
    with pytest.raises(ChunkError):
        decode_tuple(chunk)
    with pytest.raises(ChunkError):
        check_sizes(_Row(chunk))


class _Row:
    def __init__(self, t: Any) -> None:
        self.__dict__.update(zip(CHUNK_COLUMNS, t, strict=True))
