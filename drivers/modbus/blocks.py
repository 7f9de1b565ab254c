"""One planned request's response decoded into the cycle's columns, reusing what did not change.

Decoding is the driver's own CPU cost per cycle (the rest is pymodbus and the wire), so a block
decodes its tags in as few Python steps as it can:

* *runs*: plain numeric tags (no scale or offset) of one kind (integers, float32, float64) and one
  byte layout. A run's values are unpacked from the response with one ``struct`` call and
  converted in bulk (:func:`~drivers.modbus.codec.bulk_converter`: float32s to their shortest
  decimals with C-level passes over all of them), and land in the columns with one slice
  assignment when the run's tags are evenly spaced in the configuration, as they usually are;
* *bits*: the coils or discrete inputs of a bit request, picked out in one pass;
* everything else (strings, bools in registers, scaled values, a tag overlapping a run's) is
  decoded value by value, each with its own reuse check.

Most plant values do not change between two polls, so a block remembers the registers (or bits)
it last decoded: an identical response reuses every value as it is, and in a changed one only the
runs and per-value tags whose registers changed are decoded again.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from blackbox.model import Quality, Value
from drivers.modbus.codec import Bad, BulkConverter, DecodeError, Decoder, bulk_converter, bulk_layout, make_decoder
from drivers.modbus.config import BIT_TABLES, NUMERIC_TYPES, ModbusTagConfig
from drivers.modbus.planner import ReadRequest, TagSlot

GOOD, BAD = Quality.GOOD, Quality.BAD


@dataclass(slots=True)
class Columns:
    """The value, quality and reason columns of one cycle, which every block fills in for its tags."""

    values: list[Value]
    qualities: list[Quality]
    reasons: list[str | None]

    @classmethod
    def good(cls, n: int) -> Columns:
        """``n`` good samples without a value yet."""
        return cls([None] * n, [GOOD] * n, [None] * n)

    def set_bad(self, index: int, reason: str) -> None:
        self.values[index] = None
        self.qualities[index] = BAD
        self.reasons[index] = reason


class _Part:
    """Tags of a block decoded together, their last values and where they go in the columns."""

    def __init__(self, indices: Sequence[int]) -> None:
        self.indices = tuple(indices)
        """Position of each tag in the source's configuration (and in ``read()``'s columns)."""
        self.target = _target(self.indices)
        self.values: Sequence[Value] = []
        self.bad: Bad = []

    def put(self, out: Columns) -> None:
        """Write the last decoded values (bad ones with their reasons) into ``out``."""
        if self.target is None:
            values = out.values
            for index, value in zip(self.indices, self.values, strict=True):
                values[index] = value
        else:
            out.values[self.target] = self.values
        for position, reason in self.bad:
            out.set_bad(self.indices[position], reason)


def _target(indices: tuple[int, ...]) -> slice | None:
    """The slice of the columns that ``indices`` make, if they are evenly spaced and ascending."""
    if len(indices) == 1:
        return slice(indices[0], indices[0] + 1)
    step = indices[1] - indices[0]
    if step > 0 and all(b - a == step for a, b in pairwise(indices)):
        return slice(indices[0], indices[-1] + 1, step)
    return None


class _Run(_Part):
    """Plain numeric tags of one kind and byte layout, unpacked with one ``struct`` call."""

    def __init__(self, slots: Sequence[TagSlot], index_of: dict[str, int], registers: str,
                 formats: Sequence[str], convert: BulkConverter) -> None:
        super().__init__([index_of[s.tag.name] for s in slots])
        self.registers = registers
        """``">"`` or ``"<"``: how the response's registers are packed for this run."""
        self.first = slots[0].offset
        self.end = max(s.offset + s.size for s in slots)
        layout, at = [formats[0][0]], self.first
        for slot, fmt in zip(slots, formats, strict=True):
            if slot.offset > at:
                layout.append(f"{2 * (slot.offset - at)}x")  # registers between the run's tags
            layout.append(fmt[1:])
            at = slot.offset + slot.size
        self._unpack: Callable[[bytes, int], tuple[Any, ...]] = struct.Struct("".join(layout)).unpack_from
        self._convert = convert

    def decode(self, packed: bytes) -> None:
        self.values, self.bad = self._convert(self._unpack(packed, 2 * self.first))


class _Bits(_Part):
    """The coils or discrete inputs of a bit request."""

    def __init__(self, slots: Sequence[TagSlot], index_of: dict[str, int]) -> None:
        super().__init__([index_of[s.tag.name] for s in slots])
        self._offsets = [s.offset for s in slots]

    def decode(self, bits: Sequence[int]) -> None:
        self.values = list(map(bool, map(bits.__getitem__, self._offsets)))


@dataclass(frozen=True, slots=True)
class _Slot:
    """A tag decoded on its own: where its value is, and how to convert it."""

    offset: int
    size: int
    decoder: Decoder
    scale: float
    add: float
    scaled: bool
    places: int | None
    """Decimal places of an integer scaled by decimal factors (``raw * 0.1`` has one), to round the
    binary noise away: ``3 * 0.1`` records 0.3, not 0.30000000000000004. ``None``: no rounding."""

    def decode(self, registers: Sequence[int]) -> tuple[Value, str | None]:
        """The tag's value and ``None``, or ``None`` and why it makes no usable value."""
        try:
            value: Value = self.decoder(registers, self.offset)
        except DecodeError as exc:
            return None, str(exc)
        if self.scaled:
            value = value * self.scale + self.add  # type: ignore[operator]
            if not math.isfinite(value):
                return None, "scaled value is not finite"
            if self.places is not None:
                value = round(value, self.places)
        return value, None


def _decimals(x: float) -> int | None:
    """Decimal places of ``x``'s shortest form (``0.25`` -> 2), or ``None`` in exponent notation."""
    text = repr(x)
    if "e" in text or "n" in text:
        return None
    places = text.split(".")[1].rstrip("0") if "." in text else ""
    return len(places)


def _slot(tag: ModbusTagConfig, offset: int, size: int) -> _Slot:
    decoder = make_decoder(tag.type, tag.order, length=tag.length, bit=tag.bit)
    scaled = tag.type in NUMERIC_TYPES and (tag.scale != 1.0 or tag.offset != 0.0)
    places = None
    if scaled and not tag.type.startswith("float"):
        scale_places, offset_places = _decimals(tag.scale), _decimals(tag.offset)
        if scale_places is not None and offset_places is not None:
            places = max(scale_places, offset_places)
    return _Slot(offset, size, decoder, tag.scale, tag.offset, scaled, places)


class _Each(_Part):
    """Tags decoded value by value (strings, bools in registers, scaled values, overlapping tags)."""

    def __init__(self, slots: Sequence[TagSlot], index_of: dict[str, int]) -> None:
        super().__init__([index_of[s.tag.name] for s in slots])
        self._slots = [_slot(s.tag, s.offset, s.size) for s in slots]
        self.values = [None] * len(self._slots)
        self._reasons: list[str | None] = [None] * len(self._slots)

    def decode(self, registers: list[int], last: list[int] | None) -> None:
        """Decode the tags whose registers differ from ``last`` (all of them without ``last``)."""
        values, reasons = list(self.values), self._reasons
        for position, slot in enumerate(self._slots):
            start, end = slot.offset, slot.offset + slot.size
            if last is None or registers[start:end] != last[start:end]:
                values[position], reasons[position] = slot.decode(registers)
        self.values = values
        self.bad = [(position, reason) for position, reason in enumerate(reasons) if reason is not None]


def _is_plain(tag: ModbusTagConfig) -> bool:
    """Whether a tag's value is its registers as they are: a numeric type without scale or offset."""
    return tag.type in NUMERIC_TYPES and tag.scale == 1.0 and tag.offset == 0.0


def _runs(slots: Sequence[TagSlot], index_of: dict[str, int]) -> tuple[list[_Run], list[TagSlot]]:
    """The runs ``slots`` (in address order) make, and the slots left to decode one by one."""
    groups: dict[tuple[str, str, str], list[tuple[TagSlot, str]]] = {}
    left: list[TagSlot] = []
    for slot in sorted(slots, key=lambda s: s.offset):
        tag = slot.tag
        if not _is_plain(tag):
            left.append(slot)
            continue
        registers, fmt = bulk_layout(tag.type, tag.order)
        kind = tag.type if tag.type.startswith("float") else "int"
        group = groups.setdefault((registers, fmt[0], kind), [])
        if group and slot.offset < group[-1][0].offset + group[-1][0].size:
            left.append(slot)  # shares registers with the run's previous tag
        else:
            group.append((slot, fmt))
    runs = [_Run([s for s, _ in group], index_of, registers, [f for _, f in group],
                 bulk_converter(group[0][0].tag.type))
            for (registers, _, _), group in groups.items()]
    return runs, left


class Block:
    """A request of the plan and the values of its last response."""

    def __init__(self, request: ReadRequest, index_of: dict[str, int]) -> None:
        self.request = request
        self._indices = tuple(index_of[s.tag.name] for s in request.tags)
        self._bits: _Bits | None = None
        self._runs: list[_Run] = []
        self._each: _Each | None = None
        if request.table in BIT_TABLES:
            self._bits = _Bits(request.tags, index_of)
            parts: list[_Part] = [self._bits]
        else:
            self._runs, left = _runs(request.tags, index_of)
            self._each = _Each(left, index_of) if left else None
            parts = [*self._runs, *([self._each] if self._each else [])]
        self._parts = parts
        self._packers = {order: struct.Struct(f"{order}{request.count}H").pack for order in "<>"}
        self._last: list[int] | None = None

    def decode(self, values: Sequence[int], out: Columns) -> None:
        """Put the values of the response's tags (registers, or bits of a bit request) into ``out``."""
        count = self.request.count
        if len(values) < count:  # pymodbus pads bits to whole bytes, so more is normal
            unit = "bits" if self._bits else "registers"
            self.fail(f"short response: {len(values)} of {count} {unit} for {self.request.describe()}", out)
            return
        current = list(values[:count])  # a copy: the caller may reuse its list
        last = self._last
        if current != last:
            if self._bits is not None:
                self._bits.decode(current)
            else:
                self._decode_registers(current, last)
            self._last = current
        for part in self._parts:
            part.put(out)

    def _decode_registers(self, current: list[int], last: list[int] | None) -> None:
        whole = len(self._parts) == 1  # a changed response changes its only part
        packed: dict[str, bytes] = {}
        for run in self._runs:
            if last is None or whole or current[run.first:run.end] != last[run.first:run.end]:
                if run.registers not in packed:
                    packed[run.registers] = self._packers[run.registers](*current)
                run.decode(packed[run.registers])
        if self._each is not None:
            self._each.decode(current, last)

    def fail(self, reason: str, out: Columns) -> None:
        """Every tag of the request is bad with ``reason`` (and nothing is remembered)."""
        self._last = None
        for index in self._indices:
            out.set_bad(index, reason)
