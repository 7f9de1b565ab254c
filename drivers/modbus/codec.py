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
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from functools import cache

from drivers.modbus.config import register_count

Decoded = int | float | bool | str
Decoder = Callable[[Sequence[int], int], Decoded]
"""``decoder(registers, offset)`` -> the value starting at ``registers[offset]``."""

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
