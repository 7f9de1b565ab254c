"""Cycles as columns: the same samples and readings as the objects, at a fraction of the cost."""

from __future__ import annotations

import math

import pytest

from blackbox.agent.exception import ExceptionFilter
from blackbox.agent.recorder import sanitize, sealable_event
from blackbox.columns import ReadingBlock, SampleColumns, TagPicker
from blackbox.config import TagConfig
from blackbox.model import EventDraft, Quality, Reading, Sample, Value
from blackbox.seal.records import check_event_row

SAMPLES = [Sample("a", 1.5), Sample("b", True), Sample("c", None, Quality.BAD, "timeout"),
           Sample("d", "lot 7", Quality.UNCERTAIN, None, 1_700_000_000_000_000)]


def test_columns_are_the_samples_they_hold() -> None:
    cols = SampleColumns.of(SAMPLES)
    assert len(cols) == 4 and list(cols) == SAMPLES and cols == SAMPLES
    assert cols[2] == SAMPLES[2] and cols[-1] == SAMPLES[-1]
    assert cols[1:3] == SAMPLES[1:3] and isinstance(cols[1:3], SampleColumns)
    assert cols.pick([3, 0]) == [SAMPLES[3], SAMPLES[0]]
    assert SampleColumns.of(cols) is cols
    assert SampleColumns.good(("x", "y"), [1, 2.0]) == [Sample("x", 1), Sample("y", 2.0)]
    assert cols != SAMPLES[:3]


def test_columns_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="2 tags, 1 values"):
        SampleColumns(("a", "b"), [1.0], [Quality.GOOD] * 2, [None] * 2, [None] * 2)


def test_a_reading_block_is_its_readings() -> None:
    block = ReadingBlock(41, 7, "B1", "mix", SampleColumns.of(SAMPLES))
    expected = [Reading(41 + i, s.tag, s.value, s.quality, s.reason, 7, s.source_ts_us, "B1", "mix")
                for i, s in enumerate(SAMPLES)]
    assert list(block) == expected and block == expected
    assert block[0] == expected[0] and block[-1] == expected[-1] and block[1:3] == expected[1:3]
    assert block.last_seq == 44 and len(block) == 4
    with pytest.raises(IndexError):
        block[4]
    empty = ReadingBlock(9, 7, None, None, SampleColumns.of([]))
    assert len(empty) == 0 and list(empty) == [] and empty.last_seq == 8


@pytest.mark.parametrize("make", [list, SampleColumns.of], ids=["samples", "columns"])
def test_the_picker_takes_the_wanted_tags_in_cycle_order(make: type) -> None:
    pick = TagPicker({"d", "a", "zz"})
    assert pick(make(SAMPLES)) == [SAMPLES[0], SAMPLES[3]]
    assert TagPicker(()).__call__(make(SAMPLES)) == []


def test_the_picker_remembers_positions_per_tag_tuple_and_never_mixes_sources() -> None:
    pick = TagPicker({"b"})
    first = SampleColumns.good(("a", "b"), [1, 2])
    other = SampleColumns.good(("b", "a"), [3, 4])  # a second source, tags in another order
    for _ in range(3):  # alternating cycles of two sources, each with its own tuple
        assert pick(first) == [Sample("b", 2)]
        assert pick(other) == [Sample("b", 3)]
    assert pick(SampleColumns.good(["b", "b"], [5, 6])) == [Sample("b", 5), Sample("b", 6)]


@pytest.mark.parametrize(("values", "bad"), [
    ([1.0, 2, True, "x", None, 2**64 - 1, -(2**63), 1e300], {}),
    ([1.0, math.nan, 3.0], {1: "non-finite value nan"}),
    (["x", math.inf, -math.inf], {1: "non-finite value inf", 2: "non-finite value -inf"}),
    ([10**400, math.nan], {0: "integer 1000000000000000000000000000000000000000 is outside the range a batch holds "
                               "(-2**63 .. 2**64-1)", 1: "non-finite value nan"}),
    ([1.0, 2**64], {1: "integer 18446744073709551616 is outside the range a batch holds (-2**63 .. 2**64-1)"}),
    ([-(2**63) - 1, 1.5], {0: "integer -9223372036854775809 is outside the range a batch holds (-2**63 .. 2**64-1)"}),
    (["ok", "a\x00b"], {1: "text value holds a NUL character (U+0000), which a batch cannot hold"}),
], ids=["sealable", "nan", "inf-after-text", "huge-int", "int-past-2**64", "int-below-2**63", "nul-in-text"])
def test_sanitize_makes_what_a_batch_cannot_hold_bad_readings(values: list[Value], bad: dict[int, str]) -> None:
    tags = tuple(f"t{i}" for i in range(len(values)))
    for given in (SampleColumns.good(tags, values), list(SampleColumns.good(tags, values))):
        clean = sanitize(given)
        for i, s in enumerate(clean):
            if i in bad:
                assert (s.value, s.quality, s.reason) == (None, Quality.BAD, bad[i])
            else:
                assert s == Sample(tags[i], values[i])


def test_sanitize_spells_out_a_nul_in_a_reason() -> None:
    clean = sanitize([Sample("t", None, Quality.BAD, "server said \x00oops"), Sample("u", 1.0)])
    assert [(s.value, s.reason) for s in clean] == [(None, "server said \\x00oops"), (1.0, None)]


def test_the_exception_filter_keeps_columns_and_drops_only_unchanged_deadband_tags() -> None:
    tags = [TagConfig.model_validate({"name": n, "address": "hr:0", "type": "float32", "category": "process",
                                      "unit": "U", "deadband": 0.5 if n == "slow" else None}) for n in ("fast", "slow")]
    f = ExceptionFilter(tags)
    names = ("fast", "slow")
    assert f.admit(SampleColumns.good(names, [1.0, 1.0]), 0.0) == [Sample("fast", 1.0), Sample("slow", 1.0)]
    assert f.admit(SampleColumns.good(names, [2.0, 1.2]), 1.0) == [Sample("fast", 2.0)]
    kept = f.admit(SampleColumns.good(names, [3.0, 1.6]), 2.0)
    assert isinstance(kept, SampleColumns) and kept == [Sample("fast", 3.0), Sample("slow", 1.6)]
    plain = ExceptionFilter(tags[:1])
    cycle = SampleColumns.good(names, [1.0, 1.0])
    assert plain.admit(cycle, 0.0) is cycle  # nothing reports by exception: the cycle passes as it is


def test_a_nul_in_an_event_is_spelled_out_so_the_batch_can_be_sealed() -> None:
    """A driver's error message holding NUL ends up in source.disconnected: the sealer must not refuse it."""
    draft = EventDraft("source.disconnected", "plc\x00", {"reason": "server said \x00", "k\x00": ["\x00", 1.5]})
    clean = sealable_event(draft)
    assert (clean.subject, clean.data) == ("plc\\x00", {"reason": "server said \\x00", "k\\x00": ["\\x00", 1.5]})
    check_event_row([1, clean.type, clean.subject, clean.data, 0, None, None])  # what the sealer checks
    plain = EventDraft("alarm.raised", "T", {"value": 1.0, "text": "a\\u0000 is not a NUL"})
    assert sealable_event(plain) == plain  # a backslash and 'u0000' are not a NUL
