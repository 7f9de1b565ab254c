"""The register codec against known byte layouts, and encode/decode as inverses."""

from __future__ import annotations

import math
import random
import re
import struct

import pytest

from drivers.modbus.codec import DecodeError, decode, encode, make_decoder

ORDERS = ["ABCD", "CDAB", "BADC", "DCBA"]

SAMPLES: dict[str, list[int | float]] = {
    "int16": [-32768, -1, 0, 12345, 32767],
    "uint16": [0, 1, 0xABCD, 65535],
    "int32": [-(2**31), -123456789, 0, 2**31 - 1],
    "uint32": [0, 0xDEADBEEF, 2**32 - 1],
    "int64": [-(2**63), -1234567890123456789, 0, 2**63 - 1],
    "uint64": [0, 0x0123456789ABCDEF, 2**64 - 1],
    "float32": [0.0, -1.5, 2.0**127, 2.0**-149, 16777216.0],
    "float64": [0.0, math.pi, -1.0e300, 5e-324],
}


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("data_type", sorted(SAMPLES))
def test_encode_then_decode_gives_the_value_back(data_type: str, order: str) -> None:
    for value in SAMPLES[data_type]:
        decoded = decode(encode(value, data_type, order), data_type, order)
        if data_type == "float32":  # the same float32, written as its shortest decimal
            assert struct.pack(">f", decoded) == struct.pack(">f", value)
        else:
            assert decoded == value


def _shortest_by_search(raw: bytes) -> float:
    """Reference: try every length from 1 significant digit up."""
    value = struct.unpack(">f", raw)[0]
    for digits in range(1, 10):
        candidate = float(f"{value:.{digits}g}")
        try:
            if struct.pack(">f", candidate) == raw:
                return candidate
        except OverflowError:
            continue
    raise AssertionError("9 digits always round-trip a float32")


@pytest.mark.parametrize("typed,expected", [(120.44, 120.44), (0.1, 0.1), (-40.0, -40.0), (21.7, 21.7),
                                            (1e-3, 0.001), (8388607.5, 8388607.5), (3.4028235e38, 3.4028235e38),
                                            (72.38461303710938, 72.38461), (-0.0, -0.0)])
def test_float32_decodes_to_the_shortest_decimal_that_round_trips(typed: float, expected: float) -> None:
    for order in ORDERS:
        decoded = decode(encode(typed, "float32", order), "float32", order)
        assert decoded == expected and repr(decoded) == repr(expected)


def test_float32_shortest_decimal_agrees_with_an_exhaustive_search() -> None:
    # every exponent, random mantissas: the cheap way and the exhaustive search agree
    rng = random.Random(5)
    for _ in range(20_000):
        raw = struct.pack(">I", rng.getrandbits(32))
        if not math.isfinite(struct.unpack(">f", raw)[0]):
            continue
        registers = list(struct.unpack(">2H", raw))
        assert decode(registers, "float32") == _shortest_by_search(raw), raw.hex()


def test_float32_byte_layouts() -> None:
    # 1.0f is 3F 80 00 00 (A B C D)
    assert encode(1.0, "float32", "ABCD") == [0x3F80, 0x0000]
    assert encode(1.0, "float32", "CDAB") == [0x0000, 0x3F80]
    assert encode(1.0, "float32", "BADC") == [0x803F, 0x0000]
    assert encode(1.0, "float32", "DCBA") == [0x0000, 0x803F]


def test_64_bit_word_swap_reverses_all_four_registers() -> None:
    assert encode(0x0102030405060708, "uint64", "ABCD") == [0x0102, 0x0304, 0x0506, 0x0708]
    assert encode(0x0102030405060708, "uint64", "CDAB") == [0x0708, 0x0506, 0x0304, 0x0102]
    assert encode(0x0102030405060708, "uint64", "DCBA") == [0x0807, 0x0605, 0x0403, 0x0201]
    assert decode([0x0708, 0x0506, 0x0304, 0x0102], "uint64", "CDAB") == 0x0102030405060708


def test_16_bit_types_only_see_the_byte_swap() -> None:
    assert decode([0x1234], "uint16", "CDAB") == 0x1234
    assert decode([0x1234], "uint16", "BADC") == 0x3412
    assert decode([0xFFFE], "int16", "ABCD") == -2


def test_decoder_reads_at_an_offset_in_a_long_response() -> None:
    registers = [0xFFFF] * 3 + encode(-2.25, "float64", "CDAB") + [0xFFFF]
    assert make_decoder("float64", "CDAB")(registers, 3) == -2.25


@pytest.mark.parametrize("value,name", [(math.nan, "NaN"), (math.inf, "+inf"), (-math.inf, "-inf")])
@pytest.mark.parametrize("data_type", ["float32", "float64"])
def test_non_finite_floats_are_decode_errors(data_type: str, value: float, name: str) -> None:
    registers = encode(value, data_type)
    with pytest.raises(DecodeError, match=rf"{data_type} is {re.escape(name)}"):
        decode(registers, data_type)


def test_strings() -> None:
    assert encode("AB", "string", length=2) == [0x4142, 0x0000]
    assert decode([0x4142, 0x4300], "string", length=2) == "ABC"
    assert decode([0x4241, 0x0043], "string", "BADC", length=2) == "ABC"
    assert decode([0x4220, 0x2020], "string", length=2) == "B"  # space padding stripped
    assert decode(encode("Lot-é7", "string", length=4), "string", length=4) == "Lot-é7"
    with pytest.raises(ValueError, match="more than 2 registers"):
        encode("ABCDE", "string", length=2)


@pytest.mark.parametrize("registers", [[0xFFFE, 0x4142], [0x4101, 0x4200]])
def test_garbage_strings_are_decode_errors(registers: list[int]) -> None:
    with pytest.raises(DecodeError, match="string"):
        decode(registers, "string", length=2)


def test_bools_in_registers() -> None:
    word = 0b1000_0000_0010_0000
    assert decode([word], "bool", bit=5) is True
    assert decode([word], "bool", bit=4) is False
    assert decode([word], "bool", bit=15) is True
    assert decode([word], "bool") is True  # no bit: register is not 0
    assert decode([0], "bool") is False
    assert encode(True, "bool", bit=5) == [1 << 5]
    swapped = encode(True, "bool", "BADC", bit=3)
    assert swapped == [0x0800]
    assert decode(swapped, "bool", "BADC", bit=3) is True


@pytest.mark.parametrize("value,data_type", [(70000, "int16"), (-1, "uint16"), (2**32, "uint32"), ("x", "int32")])
def test_encode_rejects_values_that_do_not_fit(value: object, data_type: str) -> None:
    with pytest.raises(ValueError):
        encode(value, data_type)  # type: ignore[arg-type]


def test_decode_checks_register_count_and_order() -> None:
    with pytest.raises(ValueError, match="needs 2 registers"):
        decode([1], "float32")
    with pytest.raises(ValueError, match="byte order"):
        decode([1, 2], "float32", "ACBD")


def test_decoder_matches_struct_for_every_order() -> None:
    raw = struct.pack(">d", 123.456)
    words = list(struct.unpack(">4H", raw))
    assert decode(words, "float64", "ABCD") == 123.456
    assert decode(words[::-1], "float64", "CDAB") == 123.456

