"""Registers to values and back, with :mod:`struct` (pymodbus' converters are ~20x slower on bulk data).

Byte order is named after a 32-bit value whose big-endian bytes are A B C D:

* ``ABCD`` big-endian: the first register holds the most significant word, high byte first;
* ``CDAB`` word-swapped: the registers come in reverse order (for 64-bit values all four);
* ``BADC`` byte-swapped: the bytes within each register are swapped;
* ``DCBA`` both: a little-endian value.

16-bit types only see the byte swap. A string is ``length`` registers of UTF-8 (in practice ASCII),
first character in the high byte (``ABCD``) or the low byte (``BADC``), padded with NUL or spaces.
A bool in a register is bit ``bit`` (0 = least significant) or, without a bit, "register is not 0".

A float32 decodes to the shortest decimal that reads back as the same float32 (``120.44``, not
the float32's exact binary value ``120.44000244140625``): that is the number the PLC programmer
typed or the instrument meant, and what the record should show (see :func:`shortest_float32`).

:func:`make_decoder` builds a fast decoder for one tag; :func:`decode` and :func:`encode` are the
one-off forms (the simulator and the tests use :func:`encode` to put values into a server).
:func:`bulk_layout` and :func:`bulk_converter` decode many values of one type at once (a whole
response with one ``struct`` call, see :mod:`drivers.modbus.blocks`) to the same values.
"""

from __future__ import annotations

import math
import struct
from bisect import bisect_right
from collections.abc import Callable, Sequence
from functools import cache
from itertools import compress, repeat
from operator import add, mul, ne, sub, truediv
from typing import Any

from drivers.modbus.config import register_count

Decoded = int | float | bool | str
Decoder = Callable[[Sequence[int], int], Decoded]
"""``decoder(registers, offset)`` -> the value starting at ``registers[offset]``."""
Bad = list[tuple[int, str]]
"""Values of a bulk conversion that make no usable value: ``(position, reason)``."""
BulkConverter = Callable[[Sequence[Any]], tuple[Sequence[Decoded | None], Bad]]
"""``convert(unpacked)`` -> the values (``None`` where bad) and the bad ones with their reasons."""

_FORMATS = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "int64": "q", "uint64": "Q",
            "float32": "f", "float64": "d"}


class DecodeError(ValueError):
    """Registers that do not make a usable value (NaN, infinity, undecodable text): a bad-quality reading."""


def _word_swap(order: str) -> bool:
    return order in ("CDAB", "DCBA")


def _byte_swap(order: str) -> bool:
    return order in ("BADC", "DCBA")


def _check_order(order: str) -> None:
    if order not in ("ABCD", "CDAB", "BADC", "DCBA"):
        raise ValueError(f"unknown byte order {order!r} (ABCD, CDAB, BADC, DCBA)")


def _registers_to_bytes(count: int, order: str) -> Callable[[Sequence[int], int], bytes]:
    """A function packing ``count`` registers from an offset into big-endian value bytes."""
    packer = struct.Struct(("<" if _byte_swap(order) else ">") + f"{count}H").pack
    if _word_swap(order) and count > 1:
        return lambda regs, off: packer(*regs[off:off + count][::-1])
    return lambda regs, off: packer(*regs[off:off + count])


@cache
def make_decoder(data_type: str, order: str = "ABCD", *, length: int | None = None,
                 bit: int | None = None) -> Decoder:
    """A function decoding one value of ``data_type`` from a register list at an offset.

    Raises :class:`DecodeError` (from the returned function) for NaN, ±inf and undecodable strings.
    """
    _check_order(order)
    count = register_count(data_type, length)
    to_bytes = _registers_to_bytes(count, order)
    if data_type == "bool":
        if bit is None:
            return lambda regs, off: regs[off] != 0
        mask = 1 << bit
        if _byte_swap(order):
            return lambda regs, off: bool(int.from_bytes(to_bytes(regs, off), "big") & mask)
        return lambda regs, off: bool(regs[off] & mask)
    if data_type == "string":
        return lambda regs, off: _decode_text(to_bytes(regs, off))
    fmt = _FORMATS.get(data_type)
    if fmt is None:
        raise ValueError(f"unknown Modbus data type {data_type!r}")
    unpack = struct.Struct(">" + fmt).unpack
    if data_type == "float32":
        def decode_float32(regs: Sequence[int], off: int) -> float:
            raw = to_bytes(regs, off)
            value: float = unpack(raw)[0]
            if not math.isfinite(value):
                raise DecodeError(f"float32 is {_float_name(value)}")
            return shortest_float32(value, raw)
        return decode_float32
    if data_type == "float64":
        def decode_float64(regs: Sequence[int], off: int) -> float:
            value: float = unpack(to_bytes(regs, off))[0]
            if not math.isfinite(value):
                raise DecodeError(f"float64 is {_float_name(value)}")
            return value
        return decode_float64
    if data_type == "uint16" and order in ("ABCD", "CDAB"):
        return lambda regs, off: regs[off]
    return lambda regs, off: unpack(to_bytes(regs, off))[0]


_F32 = struct.Struct(">f").pack


def shortest_float32(value: float, raw: bytes) -> float:
    """The float nearest to the shortest decimal that rounds to the float32 ``raw`` (``value`` decoded).

    ``%.7g`` is tried first, then 8 and 9 digits (9 always round-trip). In the range 0.001 to
    8,388,608 the first of these that reads back as ``raw`` is the shortest: a shorter decimal
    that rounds to the same float32 would be what ``%.7g`` prints, trailing zeros stripped,
    because a float32 there is finer than the 7th digit. Outside that range (where a float32 can
    be coarser than the 7th digit) every length from 1 digit is tried. One or two formatting
    calls per value on a process value: cheap enough for 2,000 tags per cycle.
    """
    if 1e-3 <= abs(value) < 8388608.0:
        shortest = float("%.7g" % value)  # noqa: UP031 - %-formatting is the fastest here
        if _F32(shortest) == raw:
            return shortest
        shortest = float("%.8g" % value)  # noqa: UP031
        if _F32(shortest) == raw:
            return shortest
        return float("%.9g" % value)  # noqa: UP031
    for digits in range(1, 10):
        shortest = float("%.*g" % (digits, value))  # noqa: UP031
        try:
            if _F32(shortest) == raw:
                return shortest
        except OverflowError:  # rounded up past the largest float32: not this one
            continue
    return value  # unreachable for a finite float32: 9 digits always round-trip


_DECADES = (1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 8388608.0)
_SCALES = (0.0, *(10.0 ** (6 - e) for e in range(-3, 7)), 0.0)
"""By ``bisect_right(_DECADES, |v|)``: ``10 ** (6 - e)`` for ``10 ** e <= |v| < 10 ** (e + 1)``, which
gives ``|v| * scale`` 7 digits before the point; 0.0 outside 0.001 <= |v| < 8,388,608 (and for NaN).
No float32 lies between a power of ten and the float nearest it, so the decade is exactly right."""
_ROUNDER = 1.5 * 2.0**52
"""``x + _ROUNDER - _ROUNDER`` is ``x`` rounded to an integer, half to even, for ``|x| < 2 ** 51``."""


@cache
def _float32s(n: int) -> struct.Struct:
    return struct.Struct(f"{n}f")


def shortest_float32s(values: Sequence[float]) -> tuple[list[float | None], Bad]:
    """:func:`shortest_float32` of many float32 values (as floats) at once; NaN and infinities bad.

    Decoding value by value formats and parses each one, up to three times. In 0.001 <= |v| <
    8,388,608 this does the same with arithmetic, in C-level passes over all the values at once,
    and gets the very same floats: for ``10 ** e <= |v| < 10 ** (e + 1)`` and ``d`` digits (7, then
    8, then 9), ``v * 10 ** k`` with ``k = d - 1 - e <= 11`` is exact (a float32's 24-bit mantissa
    times ``5 ** k < 2 ** 26`` fits a float's 53 bits), so rounding it to an integer ``m`` half to
    even gives the digits ``%.{d}g`` prints, and ``m / 10 ** k`` (both exact, and a division is
    correctly rounded) is the float ``float("%.{d}g" % v)`` parses. As value by value, the first
    length whose candidates pack back to the same float32 wins, 9 digits always.

    Zero is its own shortest decimal; other values out of the range go value by value.
    """
    n = len(values)
    scales = list(map(_SCALES.__getitem__, map(bisect_right, repeat(_DECADES, n), map(abs, values))))
    if 0.0 not in scales:
        return _shortest_in_range(values, scales), []
    out: list[float | None] = list(values)
    bad: Bad = []
    inside = []
    for i, scale in enumerate(scales):
        value = values[i]
        if scale:
            inside.append(i)
        elif not math.isfinite(value):
            out[i] = None
            bad.append((i, f"float32 is {_float_name(value)}"))
        elif value != 0.0:
            out[i] = shortest_float32(value, _F32(value))
    if inside:
        for i, decimal in zip(inside, _shortest_in_range([values[i] for i in inside], [scales[i] for i in inside]),
                              strict=True):
            out[i] = decimal
    return out, bad


def _shortest_in_range(values: Sequence[float], scales: Sequence[float]) -> list[float | None]:
    """:func:`shortest_float32s` of values in the range, with their ``_SCALES``."""
    out: list[float | None] = _decimals(values, scales)  # 7 digits
    misses = _misses(out, values)
    for factor in (10.0, 100.0):  # 8, then 9 digits
        if not misses:
            break
        missed = [values[i] for i in misses]
        longer = _decimals(missed, [scales[i] * factor for i in misses])
        for i, decimal in zip(misses, longer, strict=True):
            out[i] = decimal
        misses = [misses[j] for j in _misses(longer, missed)]
    return out


def _decimals(values: Sequence[float], scales: Sequence[float]) -> list[float | None]:
    """``round(v * scale) / scale`` of each value, rounding half to even."""
    n = len(values)
    return list(map(truediv, map(sub, map(add, map(mul, values, scales), repeat(_ROUNDER, n)), repeat(_ROUNDER, n)),
                    scales))


def _misses(candidates: Sequence[float | None], values: Sequence[float]) -> list[int]:
    """Positions of the candidates that do not pack to the same float32 as their value."""
    f32 = _float32s(len(values))
    packed = f32.pack(*candidates)
    if packed == f32.pack(*values):
        return []
    return list(compress(range(len(values)), map(ne, f32.unpack(packed), values)))


def finite_float64s(values: Sequence[float]) -> tuple[list[float | None], Bad]:
    """Many float64 values, NaN and infinities bad, as decoding each does."""
    out: list[float | None] = list(values)
    bad: Bad = []
    if not math.isfinite(sum(values)):  # a finite sum has no NaN nor infinity in it
        for i, value in enumerate(values):
            if not math.isfinite(value):
                out[i] = None
                bad.append((i, f"float64 is {_float_name(value)}"))
    return out, bad


def _integers(values: Sequence[int]) -> tuple[list[Decoded | None], Bad]:
    return list(values), []


def bulk_layout(data_type: str, order: str) -> tuple[str, str]:
    """How to decode many values of a fixed-size type at once: ``(registers, value format)``.

    Packed with ``registers + "H"`` (``">"`` or ``"<"``), a response's registers hold each such
    value as ``value format`` (``"<f"``, ``">h"``…): a byte swap (BADC, DCBA) reverses the bytes of
    each register, a word swap (CDAB, DCBA) the order of the value's registers, and both together
    reverse all of its bytes. So the registers are packed little-endian when exactly one of the
    two applies, and the value read little-endian when the words are swapped. (A 16-bit value,
    which only sees the byte swap, comes out the same: a word swap reverses its bytes twice.)
    """
    _check_order(order)
    fmt = _FORMATS.get(data_type)
    if fmt is None:
        raise ValueError(f"{data_type!r} is not a fixed-size numeric type")
    word, byte = _word_swap(order), _byte_swap(order)
    return ("<" if word != byte else ">"), ("<" if word else ">") + fmt


def bulk_converter(data_type: str) -> BulkConverter:
    """The bulk conversion of ``data_type``'s unpacked values (see :func:`bulk_layout`)."""
    if data_type not in _FORMATS:
        raise ValueError(f"{data_type!r} is not a fixed-size numeric type")
    if data_type == "float32":
        return shortest_float32s
    if data_type == "float64":
        return finite_float64s
    return _integers


def decode(registers: Sequence[int], data_type: str, order: str = "ABCD", *, length: int | None = None,
           bit: int | None = None) -> Decoded:
    """Decode one value from its registers; :class:`DecodeError` if they make no usable value."""
    need = register_count(data_type, length)
    if len(registers) < need:
        raise ValueError(f"{data_type} needs {need} registers, got {len(registers)}")
    return make_decoder(data_type, order, length=length, bit=bit)(registers, 0)


def encode(value: Decoded, data_type: str, order: str = "ABCD", *, length: int | None = None,
           bit: int | None = None) -> list[int]:
    """The registers holding ``value``; ``ValueError`` if it does not fit the type.

    A bool with a bit sets only that bit (OR it into the register's other bits yourself).
    """
    _check_order(order)
    count = register_count(data_type, length)
    if data_type == "bool":
        word = (1 << bit if bit is not None else 1) if value else 0
        raw = word.to_bytes(2, "big")
    elif data_type == "string":
        if not isinstance(value, str):
            raise ValueError(f"a string tag needs a str, got {type(value).__name__}")
        text = value.encode("utf-8")
        if len(text) > 2 * count:
            raise ValueError(f"{value!r} is {len(text)} bytes, more than {count} registers hold")
        raw = text.ljust(2 * count, b"\x00")
    else:
        fmt = _FORMATS.get(data_type)
        if fmt is None:
            raise ValueError(f"unknown Modbus data type {data_type!r}")
        if isinstance(value, str):
            raise ValueError(f"{data_type} cannot hold a str")
        try:
            raw = struct.pack(">" + fmt, value)
        except struct.error as exc:
            raise ValueError(f"{value!r} does not fit {data_type}: {exc}") from exc
    words = list(struct.unpack(("<" if _byte_swap(order) else ">") + f"{count}H", raw))
    return words[::-1] if _word_swap(order) else words


def _decode_text(raw: bytes) -> str:
    text = raw.rstrip(b"\x00 ")
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"string is not valid UTF-8 text: {raw!r}") from exc
    if any(ord(c) < 32 or ord(c) == 127 for c in decoded):
        raise DecodeError(f"string holds control characters: {raw!r}")
    return decoded


def _float_name(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return "+inf" if value > 0 else "-inf"
