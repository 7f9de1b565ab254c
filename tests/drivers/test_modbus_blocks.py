"""Decoding whole responses in bulk gives exactly what decoding value by value gives.

The reference is :func:`drivers.modbus.codec.decode` of each tag's own registers (``DecodeError``:
a bad sample with its message), or :func:`~drivers.modbus.codec.shortest_float32` of each float32.
"""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Sequence
from typing import Any

import pytest

from blackbox.columns import SampleColumns
from blackbox.model import Quality, Value
from drivers.base import SourceHealth
from drivers.modbus.blocks import Block, Columns
from drivers.modbus.codec import DecodeError, decode, encode, finite_float64s, shortest_float32, shortest_float32s
from drivers.modbus.config import ModbusTagConfig
from drivers.modbus.planner import plan_reads

ORDERS = ["ABCD", "CDAB", "BADC", "DCBA"]
NUMERIC = ["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"]
F32 = struct.Struct(">f")


def f32(bits: int) -> float:
    return float(struct.unpack(">f", struct.pack(">I", bits))[0])


def bits_of(value: float) -> int:
    return int(struct.unpack(">I", struct.pack(">f", value))[0])


def neighbours(value: float, span: int = 3) -> list[float]:
    """The float32s around ``value`` (itself included when it is one)."""
    middle = bits_of(value)
    return [f32(b) for b in range(middle - span, middle + span + 1)]


def float32_patterns() -> list[float]:
    """Float32 values of every kind: the range edges, powers of ten, typed decimals, specials, random bits."""
    rng = random.Random(11)
    edges = [1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7, 8388608.0, 16777216.0]
    values = [v for edge in edges for v in neighbours(edge)]
    values += [0.1, 21.3, 21.7, 120.44, 72.38461303710938, -40.0, 0.0, -0.0, 0.001, 3.4028234663852886e38,
               -3.4028234663852886e38, 1.1754943508222875e-38, f32(1), f32(0x007FFFFF), f32(0x80000001),
               math.nan, math.inf, -math.inf, f32(0x7FC00001), f32(0xFFC00000), f32(0x7F800001)]
    values += [f32(rng.getrandbits(32)) for _ in range(4000)]
    # most process values lie in the range where the fast path works: random mantissas there
    values += [f32(rng.getrandbits(1) << 31 | rng.randrange(117, 151) << 23 | rng.getrandbits(23)) for _ in range(4000)]
    values += [f32(bits_of(round(rng.uniform(-1000, 1000), rng.randrange(0, 5)))) for _ in range(2000)]
    return [f32(bits_of(v)) if math.isfinite(v) else v for v in values]


def one_by_one(values: Sequence[float]) -> tuple[list[Value], dict[int, str]]:
    """The reference: each value decoded on its own from its registers."""
    out: list[Value] = []
    bad = {}
    for i, value in enumerate(values):
        try:
            out.append(decode(list(struct.unpack(">2H", F32.pack(value))), "float32"))
        except DecodeError as exc:
            out.append(None)
            bad[i] = str(exc)
    return out, bad


def same(a: Sequence[Value], b: Sequence[Value]) -> bool:
    """Equal values of equal types, telling -0.0 from 0.0."""
    return [(type(x), repr(x)) for x in a] == [(type(x), repr(x)) for x in b]


def test_float32_in_bulk_is_the_value_by_value_decimal() -> None:
    values = float32_patterns()
    ours, bad = shortest_float32s(values)
    expected, expected_bad = one_by_one(values)
    assert same(ours, expected)
    assert dict(bad) == expected_bad and [i for i, _ in bad] == sorted(expected_bad)
    assert {"float32 is NaN", "float32 is +inf", "float32 is -inf"} <= set(expected_bad.values())


@pytest.mark.parametrize("n", [1, 2, 7, 62])
def test_float32_in_bulk_on_short_and_mixed_runs(n: int) -> None:
    rng = random.Random(n)
    patterns = float32_patterns()
    for _ in range(200):
        values = [rng.choice(patterns) for _ in range(n)]
        ours, bad = shortest_float32s(values)
        expected, expected_bad = one_by_one(values)
        assert same(ours, expected) and dict(bad) == expected_bad


def test_float32_in_bulk_of_every_float32_near_the_decades() -> None:
    # the decade of each value sets the digits: every float32 within 2,000 steps of each edge
    values = [v for edge in (1e-3, 1e-2, 0.1, 1.0, 10.0, 1e5, 1e6, 8388608.0) for v in neighbours(edge, 2000)]
    values += [-v for v in values]
    ours, bad = shortest_float32s(values)
    expected, expected_bad = one_by_one(values)
    assert same(ours, expected) and not bad and not expected_bad


@pytest.mark.slow
def test_float32_in_bulk_of_every_float32_of_a_binade_across_a_decade() -> None:
    # 8 <= v < 16, across 10: every float32 of it (8.4 million), the per-value way too
    chunk = 1 << 16
    words, floats = struct.Struct(f">{chunk}I"), struct.Struct(f">{chunk}f")
    for start in range(bits_of(8.0), bits_of(16.0), chunk):
        values = floats.unpack(words.pack(*range(start, start + chunk)))
        ours, bad = shortest_float32s(values)
        assert not bad
        assert ours == [shortest_float32(v, F32.pack(v)) for v in values], hex(start)


def test_float64_in_bulk() -> None:
    values = [0.0, -0.0, 1.5, -2.25e300, 5e-324, math.nan, math.inf, -math.inf, 1.7976931348623157e308,
              1.7976931348623157e308]  # the last two: a sum that overflows, yet every value is finite
    out, bad = finite_float64s(values)
    assert same(out, [0.0, -0.0, 1.5, -2.25e300, 5e-324, None, None, None, 1.7976931348623157e308,
                      1.7976931348623157e308])
    assert bad == [(5, "float64 is NaN"), (6, "float64 is +inf"), (7, "float64 is -inf")]
    assert finite_float64s([1e308, 1e308]) == ([1e308, 1e308], [])


# --- whole blocks --------------------------------------------------------------------------------


def tag(name: str, address: str, data_type: str, **more: Any) -> ModbusTagConfig:
    return ModbusTagConfig.model_validate({"name": name, "address": address, "type": data_type,
                                           "category": "process", "unit": "TEST", **more})


def size(data_type: str, length: int | None = None) -> int:
    return {"int16": 1, "uint16": 1, "bool": 1, "int32": 2, "uint32": 2, "float32": 2}.get(data_type, length or 4)


def random_tags(rng: random.Random, count: int) -> list[ModbusTagConfig]:
    """Tags of every kind at random addresses in 125 registers: gaps, overlaps, shared registers."""
    tags = []
    for i in range(count):
        kind = rng.choice([*NUMERIC, "float32", "float32", "bool", "string"])
        order = rng.choice(ORDERS if kind != "string" else ["ABCD", "BADC"])
        more: dict[str, Any] = {"order": order}
        if kind == "string":
            more["length"] = rng.randrange(1, 5)
        if kind == "bool" and rng.random() < 0.5:
            more["bit"] = rng.randrange(16)
        address = rng.randrange(0, 126 - size(kind, more.get("length")))
        tags.append(tag(f"t{i:03d}", f"hr:{address}", kind, **more))
    return tags


def reference(tags: Sequence[ModbusTagConfig], registers: Sequence[int], start: int) -> SampleColumns:
    """Each tag decoded on its own from its registers."""
    values: list[Value] = []
    qualities: list[Quality] = []
    reasons: list[str | None] = []
    for t in tags:
        offset = t.register - start
        try:
            values.append(decode(registers[offset:offset + t.size], t.type, t.order, length=t.length, bit=t.bit))
            qualities.append(Quality.GOOD)
            reasons.append(None)
        except DecodeError as exc:
            values.append(None)
            qualities.append(Quality.BAD)
            reasons.append(str(exc))
    return SampleColumns([t.name for t in tags], values, qualities, reasons, [None] * len(tags))


def random_registers(rng: random.Random, n: int) -> list[int]:
    """Random registers, with float32 NaN/inf patterns and typed decimals mixed in."""
    words = [rng.getrandbits(16) for _ in range(n)]
    for _ in range(n // 8):
        at = rng.randrange(n - 1)
        value = rng.choice([math.nan, math.inf, -math.inf, 0.0, -0.0, 21.3, round(rng.uniform(-500, 500), 2)])
        words[at:at + 2] = encode(value, "float32", rng.choice(ORDERS))
    return words


def decode_block(tags: Sequence[ModbusTagConfig], block: Block, registers: Sequence[int]) -> SampleColumns:
    out = Columns.good(len(tags))
    block.decode(registers, out)
    return SampleColumns([t.name for t in tags], out.values, out.qualities, out.reasons, [None] * len(tags))


def assert_same(ours: SampleColumns, expected: SampleColumns) -> None:
    assert ours == expected
    assert same(ours.values, expected.values)


def test_random_blocks_decode_as_each_tag_on_its_own() -> None:
    rng = random.Random(3)
    for _ in range(150):
        tags = random_tags(rng, rng.randrange(1, 40))
        rng.shuffle(tags)  # configuration order is not address order: the columns are placed by index
        (request,) = plan_reads(tags, max_gap=125)
        block = Block(request, {t.name: i for i, t in enumerate(tags)})
        registers = random_registers(rng, request.count)
        assert_same(decode_block(tags, block, registers), reference(tags, registers, request.start))
        # a changed response: some registers differ, the rest is reused
        for at in rng.sample(range(request.count), rng.randrange(1, request.count + 1)):
            registers[at] = rng.getrandbits(16)
        assert_same(decode_block(tags, block, registers), reference(tags, registers, request.start))


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("data_type", NUMERIC)
def test_a_run_of_one_type_and_order(data_type: str, order: str) -> None:
    rng = random.Random(f"{data_type}{order}")
    width = size(data_type)
    gaps = [rng.choice([0, 0, 1, 3]) for _ in range(40)]
    tags, address = [], 0
    for i, gap in enumerate(gaps):
        address += gap
        if address + width > 125:
            break
        tags.append(tag(f"t{i:02d}", f"hr:{address}", data_type, order=order))
        address += width
    (request,) = plan_reads(tags, max_gap=10)
    block = Block(request, {t.name: i for i, t in enumerate(tags)})
    for _ in range(20):
        registers = random_registers(rng, request.count)
        assert_same(decode_block(tags, block, registers), reference(tags, registers, request.start))


def test_unchanged_registers_reuse_the_values() -> None:
    tags = [tag("a", "hr:0", "float32"), tag("c", "hr:2", "float32"), tag("b", "hr:4", "int16"),
            tag("s", "hr:5", "string", length=2), tag("x", "hr:7", "int16", scale=0.1)]
    block = Block(plan_reads(tags)[0], {t.name: i for i, t in enumerate(tags)})
    registers = [*encode(21.3, "float32"), *encode(-4.5, "float32"), 7, *encode("AB", "string", length=2), 215]
    first = decode_block(tags, block, registers)
    assert list(first.values) == [21.3, -4.5, 7, "AB", 21.5]
    again = decode_block(tags, block, list(registers))
    assert all(b is a for a, b in zip(first.values, again.values, strict=True))
    registers[4] = 8  # only the integer run changes: the float32 run and the per-value tags are reused
    third = decode_block(tags, block, registers)
    assert list(third.values) == [21.3, -4.5, 8, "AB", 21.5]
    assert third.values[0] is first.values[0] and third.values[1] is first.values[1]
    assert third.values[3] is first.values[3] and third.values[4] is first.values[4]


def test_a_value_turning_bad_and_good_again() -> None:
    tags = [tag("a", "hr:0", "float32"), tag("b", "hr:2", "float32")]
    block = Block(plan_reads(tags)[0], {"a": 0, "b": 1})
    nan = decode_block(tags, block, [*encode(1.5, "float32"), *encode(math.nan, "float32")])
    assert list(nan.qualities) == [Quality.GOOD, Quality.BAD] and nan.reasons[1] == "float32 is NaN"
    assert nan.values[1] is None
    fine = decode_block(tags, block, [*encode(1.5, "float32"), *encode(2.5, "float32")])
    assert list(fine.values) == [1.5, 2.5] and set(fine.qualities) == {Quality.GOOD} and fine.reasons[1] is None


def test_scaled_and_plain_tags_in_one_block() -> None:
    tags = [tag("raw", "hr:0", "int16"), tag("tenths", "hr:1", "int16", scale=0.1),
            tag("f", "hr:2", "float64", scale=2.0, offset=1.0), tag("g", "hr:6", "float32")]
    block = Block(plan_reads(tags)[0], {t.name: i for i, t in enumerate(tags)})
    registers = [3, 3, *encode(0.25, "float64"), *encode(0.1, "float32")]
    assert list(decode_block(tags, block, registers).values) == [3, 0.3, 1.5, 0.1]
    huge = [3, 3, *encode(1e308, "float64"), *encode(0.1, "float32")]
    out = decode_block(tags, block, huge)
    assert out[2].quality is Quality.BAD and out[2].reason == "scaled value is not finite"


def test_coils() -> None:
    tags = [tag(f"c{i}", f"co:{a}", "bool") for i, a in enumerate([0, 3, 4, 9])]
    (request,) = plan_reads(tags)
    block = Block(request, {t.name: i for i, t in enumerate(tags)})
    bits = [True, False, False, True, False, False, False, False, False, True, False, False, False, False, False,
            False]  # pymodbus pads to whole bytes
    out = decode_block(tags, block, bits)
    assert list(out.values) == [True, True, False, True] and all(type(v) is bool for v in out.values)


def test_a_short_response_makes_every_tag_bad() -> None:
    tags = [tag("a", "hr:0", "float32"), tag("b", "hr:2", "int16")]
    block = Block(plan_reads(tags)[0], {"a": 0, "b": 1})
    out = decode_block(tags, block, [0x41A8])
    assert list(out.qualities) == [Quality.BAD, Quality.BAD] and list(out.values) == [None, None]
    assert out.reasons[0] == "short response: 1 of 3 registers for unit 1 hr:0-2"
    assert list(decode_block(tags, block, [0x41A8, 0, 5]).values) == [21.0, 5]


def test_shortest_float32_used_by_the_reference_is_the_shortest() -> None:
    # guards the reference: for typed values the shortest decimal is what was typed
    for typed in (21.3, 0.1, 120.44, 8388607.5):
        assert shortest_float32(f32(bits_of(typed)), F32.pack(typed)) == typed


def test_health_counts_columns_without_samples() -> None:
    columns = SampleColumns(["a", "b", "c", "d"], [1, None, 2, 3],
                            [Quality.GOOD, Quality.BAD, Quality.UNCERTAIN, Quality.GOOD], [None, "x", "y", None],
                            [None] * 4)
    health = SourceHealth()
    health.count(columns)
    assert (health.tags_good, health.tags_uncertain, health.tags_bad) == (2, 1, 1)
