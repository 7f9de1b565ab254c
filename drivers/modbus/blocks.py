"""One planned request's response turned into samples, reusing the samples of unchanged values.

Decoding is the driver's own CPU cost per cycle (the rest is pymodbus and the wire). Most plant
values do not change between two polls, so a block remembers the registers (or bits) it last
decoded: an identical response reuses every sample as it is, and in a changed one only the tags
whose registers changed are decoded again. Samples are immutable, so sharing them is safe.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from blackbox.model import Quality, Sample, Value
from drivers.modbus.codec import DecodeError, Decoder, make_decoder
from drivers.modbus.config import BIT_TABLES, NUMERIC_TYPES, ModbusTagConfig
from drivers.modbus.planner import ReadRequest
from drivers.samples import good_sample


@dataclass(frozen=True, slots=True)
class _Slot:
    """A tag ready to decode: where its sample goes, where its value is, and how to convert it."""

    name: str
    index: int
    """Position of the tag in the source's configuration (and in ``read()``'s result)."""
    offset: int
    size: int
    decoder: Decoder | None  # None: a bit table, the value is the bit itself
    scale: float
    add: float
    scaled: bool
    places: int | None
    """Decimal places of an integer scaled by decimal factors (``raw * 0.1`` has one), to round the
    binary noise away: ``3 * 0.1`` records 0.3, not 0.30000000000000004. ``None``: no rounding."""


def _decimals(x: float) -> int | None:
    """Decimal places of ``x``'s shortest form (``0.25`` -> 2), or ``None`` in exponent notation."""
    text = repr(x)
    if "e" in text or "n" in text:
        return None
    places = text.split(".")[1].rstrip("0") if "." in text else ""
    return len(places)


def _slot(tag: ModbusTagConfig, index: int, offset: int, size: int) -> _Slot:
    decoder = None if tag.table in BIT_TABLES else make_decoder(tag.type, tag.order, length=tag.length, bit=tag.bit)
    scaled = tag.type in NUMERIC_TYPES and (tag.scale != 1.0 or tag.offset != 0.0)
    places = None
    if scaled and not tag.type.startswith("float"):
        scale_places, offset_places = _decimals(tag.scale), _decimals(tag.offset)
        if scale_places is not None and offset_places is not None:
            places = max(scale_places, offset_places)
    return _Slot(tag.name, index, offset, size, decoder, tag.scale, tag.offset, scaled, places)


class Block:
    """A request of the plan and the samples of its last response."""

    def __init__(self, request: ReadRequest, index_of: dict[str, int]) -> None:
        self.request = request
        self.slots = tuple(_slot(s.tag, index_of[s.tag.name], s.offset, s.size) for s in request.tags)
        self._bits = request.table in BIT_TABLES
        self._last: list[int] | list[bool] | None = None
        self._samples: list[Sample] = []

    def decode(self, values: Sequence[int] | Sequence[bool], out: list[Sample | None]) -> None:
        """Put one sample per tag of the response into ``out``."""
        count = self.request.count
        if len(values) < count:  # pymodbus pads bits to whole bytes, so more is normal
            unit = "bits" if self._bits else "registers"
            self.fail(f"short response: {len(values)} of {count} {unit} for {self.request.describe()}", out)
            return
        current = list(values[:count])
        last, previous = self._last, self._samples
        if current == last:
            samples = previous
        elif last is None:
            samples = [self._decode(slot, current) for slot in self.slots]
        else:
            samples = [previous[i] if current[s.offset:s.offset + s.size] == last[s.offset:s.offset + s.size]
                       else self._decode(s, current) for i, s in enumerate(self.slots)]
        self._last, self._samples = current, samples
        for slot, sample in zip(self.slots, samples, strict=True):
            out[slot.index] = sample

    def changed(self, values: Sequence[int] | Sequence[bool]) -> bool:
        """Whether a response differs from the last one decoded (there is decoding to do)."""
        return self._last is None or list(values[:self.request.count]) != self._last

    def fail(self, reason: str, out: list[Sample | None]) -> None:
        """Every tag of the request is bad with ``reason`` (and nothing is remembered)."""
        self._last, self._samples = None, []
        for slot in self.slots:
            out[slot.index] = Sample(slot.name, None, Quality.BAD, reason)

    def _decode(self, slot: _Slot, values: list[int] | list[bool]) -> Sample:
        if slot.decoder is None:
            return good_sample(slot.name, bool(values[slot.offset]))
        try:
            value: Value = slot.decoder(values, slot.offset)  # type: ignore[arg-type]
        except DecodeError as exc:
            return Sample(slot.name, None, Quality.BAD, str(exc))
        if slot.scaled:
            value = value * slot.scale + slot.add  # type: ignore[operator]
            if not math.isfinite(value):
                return Sample(slot.name, None, Quality.BAD, "scaled value is not finite")
            if slot.places is not None:
                value = round(value, slot.places)
        return good_sample(slot.name, value)
