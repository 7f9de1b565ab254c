"""The fast paths keep the rules: the column check never accepts what the row check refuses, the
byte cap is exact, and rows sealed directly open like records sealed one by one."""

from __future__ import annotations

import copy
import math
import random
from typing import Any

import pytest

from blackbox.model import Event, Quality, Reading
from blackbox.seal import decode_records, open_batch, seal_batch, seal_rows
from blackbox.seal.records import (
    DOCUMENT_OVERHEAD,
    RecordError,
    _readings_pass_column_check,
    check_reading_row,
    check_reading_rows,
    dump_document,
    reading_columns_pass,
    rows_of,
)

from .helpers import T0, make_records

GOOD_ROW = [1, "EM-01.temperature", 71.5, "good", None, T0, None, "B-1", "emulsify"]

# Each replaces one field of GOOD_ROW (by index) with something the row check refuses.
BAD_FIELDS: list[tuple[int, Any]] = [
    (0, True), (0, -1), (0, 2**63), (0, 1.0), (0, "1"),
    (1, ""), (1, None), (1, 7), (1, b"tag"),
    (2, math.nan), (2, math.inf), (2, -math.inf), (2, [1]), (2, {"a": 1}), (2, 2**64), (2, -(2**63) - 1), (2, b"x"),
    (3, "fine"), (3, None), (3, 1), (3, ["good"]),
    (4, 1), (4, b"why"),
    (5, None), (5, 1.5), (5, 2**63), (5, True), (5, "now"),
    (6, 1.5), (6, "then"), (6, 2**63),
    (7, 1), (7, b"B"), (8, 2.0), (8, ["p"]),
]


@pytest.mark.parametrize(("field", "bad"), BAD_FIELDS)
def test_the_column_check_refuses_what_the_row_check_refuses(field: int, bad: Any) -> None:
    row = list(GOOD_ROW)
    row[field] = bad
    with pytest.raises(RecordError):
        check_reading_row(row)
    with pytest.raises(RecordError):  # the gateway's sealer makes its rows as tuples: the same rule
        check_reading_row(tuple(row))
    rows = [list(GOOD_ROW) for _ in range(50)]
    rows[random.Random(field).randrange(50)] = row
    assert not _readings_pass_column_check(rows)
    with pytest.raises(RecordError, match=r"reading (#|seq )\d+"):  # the row check names the culprit
        check_reading_rows(rows)


def block_columns(n: int = 50) -> dict[str, Any]:
    """A block of ``n`` readings as the gateway buffer keeps it: per-reading columns, shared values once."""
    return {"first_seq": 1, "last_seq": n, "tags": [f"T-{i:03d}" for i in range(n)],
            "values": [float(i) + 0.5 for i in range(n)], "qualities": ["good"] * n, "reasons": [None] * n,
            "ts_us": T0, "source_ts_us": [None] * n, "batch": "B-1", "phase": "emulsify"}


def block_rows(block: dict[str, Any]) -> list[list[Any]]:
    """The reading rows a block stands for (what the sealer seals)."""
    return [[block["first_seq"] + i if i else block["first_seq"], block["tags"][i], block["values"][i],
             block["qualities"][i], block["reasons"][i], block["ts_us"], block["source_ts_us"][i], block["batch"],
             block["phase"]]
            for i in range(len(block["tags"]))]


COLUMN_OF_FIELD = {1: "tags", 2: "values", 3: "qualities", 4: "reasons", 6: "source_ts_us"}
SHARED_OF_FIELD = {5: "ts_us", 7: "batch", 8: "phase"}


@pytest.mark.parametrize(("field", "bad"), BAD_FIELDS)
def test_the_block_check_refuses_what_the_row_check_refuses(field: int, bad: Any) -> None:
    block = block_columns()
    if field == 0:
        block["first_seq"], block["last_seq"] = bad, bad
        block = {**block, **{k: block[k][:1] for k in (*COLUMN_OF_FIELD.values(),)}}
    elif field in SHARED_OF_FIELD:
        block[SHARED_OF_FIELD[field]] = bad
    else:
        block[COLUMN_OF_FIELD[field]][random.Random(field).randrange(50)] = bad
    with pytest.raises(RecordError):
        check_reading_rows(block_rows(block))
    assert not reading_columns_pass(**block)


def test_the_block_check_accepts_a_good_block_and_its_default_columns() -> None:
    block = block_columns()
    check_reading_rows(block_rows(block))
    assert reading_columns_pass(**block)
    assert reading_columns_pass(**{**block, "qualities": None, "reasons": None, "source_ts_us": None})
    assert not reading_columns_pass(**{**block, "last_seq": 51})  # a column shorter than the run of seqs


@pytest.mark.parametrize("shape", [[], [1], "not a list", (1, 2, 3, 4, 5, 6, 7, 8), [*GOOD_ROW, None]])
def test_rows_of_the_wrong_shape_go_to_the_row_check(shape: Any) -> None:
    rows = [list(GOOD_ROW), shape]
    assert not _readings_pass_column_check(rows)
    with pytest.raises(RecordError):
        check_reading_rows(rows)


def test_the_column_check_accepts_every_valid_value_type() -> None:
    readings, _ = rows_of(make_records())
    assert _readings_pass_column_check(readings)
    check_reading_rows(readings)  # and the row check agrees


def test_a_str_subclass_passes_the_row_check_where_the_column_check_is_unsure() -> None:
    class Tag(str):
        pass

    row = list(GOOD_ROW)
    row[1] = Tag("EM-01.temperature")
    assert not _readings_pass_column_check([row])
    check_reading_rows([row])  # the row check decides, and it accepts


def readings(n: int, first: int = 1) -> list[Reading]:
    return [Reading(first + i, f"T-{i:03d}", float(i) + 0.25, Quality.GOOD, None, T0 + i, None, "B", "p")
            for i in range(n)]


@pytest.mark.parametrize("max_bytes", [200, 1000, 1777, 3768, 3769, 5000])
def test_the_byte_cap_is_exact(seal_args: dict[str, Any], max_bytes: int) -> None:
    records: list[Reading | Event] = [*readings(60)]
    records.insert(10, Event(11, "x.y", None, {"note": "é" * 30}, T0, None, None))
    for i, r in enumerate(records):  # renumber: contiguous seqs with the event in the middle
        records[i] = type(r)(**{**{f: getattr(r, f) for f in r.__dataclass_fields__}, "seq": i + 1})
    sealed = seal_batch(records, max_bytes=max_bytes, **seal_args)
    n = sealed.header.last_seq
    assert len(dump_document(*rows_of(records[:n]))) <= max_bytes
    if n < len(records):  # one more record would not have fitted
        assert len(dump_document(*rows_of(records[: n + 1]))) > max_bytes
    assert decode_records(open_batch(sealed.wire)) == records[:n]


def uneven_records(seed: int) -> list[Reading | Event]:
    """Contiguous records whose sizes vary a hundredfold: long text values, events with large data."""
    rnd = random.Random(seed)
    out: list[Reading | Event] = []
    for seq in range(1, 301):
        if rnd.random() < 0.1:
            out.append(Event(seq, "x.y", None, {"note": "n" * rnd.randrange(0, 3000)}, T0 + seq, "B", None))
        else:
            value: float | str = "v" * rnd.randrange(0, 500) if rnd.random() < 0.2 else rnd.random()
            out.append(Reading(seq, f"T-{seq:03d}", value, Quality.GOOD, None, T0 + seq, None, "B", "p"))
    return out


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("max_bytes", [1100, 5000, 20_011, 40_000])
def test_the_byte_cap_is_exact_for_records_of_uneven_size(seal_args: dict[str, Any], seed: int,
                                                          max_bytes: int) -> None:
    records = uneven_records(seed)
    assert len(dump_document(*rows_of(records))) > max_bytes  # the cap cuts the batch
    sealed = seal_batch(records, max_bytes=max_bytes, **seal_args)
    n = sealed.header.last_seq
    assert n >= 1
    assert n == 1 or len(dump_document(*rows_of(records[:n]))) <= max_bytes
    assert len(dump_document(*rows_of(records[: n + 1]))) > max_bytes
    assert decode_records(open_batch(sealed.wire)) == records[:n]


def test_one_record_larger_than_the_cap_is_sealed_alone(seal_args: dict[str, Any]) -> None:
    big = Reading(1, "T", "x" * 5000, Quality.GOOD, None, T0, None, None, None)
    sealed = seal_batch([big, *readings(3, 2)], max_bytes=1000, **seal_args)
    assert (sealed.header.first_seq, sealed.header.last_seq) == (1, 1)


def test_the_document_overhead_is_what_it_says() -> None:
    assert len(dump_document([], [])) == DOCUMENT_OVERHEAD


def test_rows_seal_like_records(seal_args: dict[str, Any]) -> None:
    records = make_records()
    r_rows, e_rows = rows_of(records)
    from_rows = seal_rows(copy.deepcopy(r_rows), copy.deepcopy(e_rows), **{k: v for k, v in seal_args.items()})
    from_records = seal_batch(records, **seal_args)
    assert from_rows.wire == from_records.wire


@pytest.mark.parametrize("checked", [False, True], ids=["rows checked one by one", "columns checked before"])
@pytest.mark.parametrize("max_bytes", [None, 700], ids=["whole", "cut by the byte cap"])
def test_reading_rows_as_tuples_seal_like_lists(seal_args: dict[str, Any], checked: bool,
                                                max_bytes: int | None) -> None:
    """The gateway's buffer hands the sealer its reading rows as tuples (they leave the cyclic GC's view):
    the batch is byte for byte the one of the same rows as lists."""
    r_rows, e_rows = rows_of(make_records())
    as_lists = seal_rows(r_rows, e_rows, **seal_args, max_bytes=max_bytes, readings_checked=checked)
    as_tuples = seal_rows([tuple(r) for r in r_rows], e_rows, **seal_args, max_bytes=max_bytes,
                          readings_checked=checked)
    assert as_tuples.wire == as_lists.wire
    assert max_bytes is None or as_lists.header.n_readings < len(r_rows)


@pytest.mark.parametrize(("r_seqs", "e_seqs", "match"), [
    ([1, 2, 4], [], "contiguous"),
    ([2, 1], [], "ascending"),
    ([1, 2], [2], "contiguous"),
    ([1, 3], [2, 2], "ascending"),
    ([], [], "empty"),
])
def test_row_seqs_must_be_one_contiguous_run(seal_args: dict[str, Any], r_seqs: list[int], e_seqs: list[int],
                                            match: str) -> None:
    r_rows = [[s, "T", 1.0, "good", None, T0, None, None, None] for s in r_seqs]
    e_rows: list[list[Any]] = [[s, "x.y", None, {}, T0, None, None] for s in e_seqs]
    with pytest.raises(ValueError, match=match):
        seal_rows(r_rows, e_rows, **seal_args)
