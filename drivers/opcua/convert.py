"""OPC UA values to sample values of the configured type.

The configured type is a contract: a value of another kind (a String where a Double was
configured, an Int32 beyond Int16's range, an array) is not guessed at but read as bad quality
with the reason, as are NaN and ±inf. Numeric widening is allowed: an Int32 node read as
``Double`` becomes a float, a Float node read as ``Double`` too. A ``Float`` (float32) value becomes
the shortest decimal that is the same float32, as Modbus float32 registers do. ``DateTime`` values become
ISO 8601 UTC text (``...Z``), the form reports and the store show.
"""

from __future__ import annotations

import math
import struct
from datetime import UTC, datetime

from blackbox.model import Value
from drivers.modbus.codec import shortest_float32

_F32 = struct.Struct(">f").pack

_INT_RANGES = {
    "Int16": (-(2**15), 2**15 - 1),
    "Int32": (-(2**31), 2**31 - 1),
    "Int64": (-(2**63), 2**63 - 1),
    "UInt16": (0, 2**16 - 1),
    "UInt32": (0, 2**32 - 1),
    "UInt64": (0, 2**64 - 1),
}


class ConversionError(ValueError):
    """A value that cannot be a reading of the configured type; the message is the reason."""


def convert(value: object, type_name: str, sent: str | None = None) -> Value:
    """Check and convert one OPC UA value for a tag of ``type_name``; ``sent`` names its variant type."""
    if value is None:
        raise ConversionError(f"null value where {type_name} was expected")
    if isinstance(value, list | tuple):
        raise ConversionError(f"array value where scalar {type_name} was expected")
    if type_name in ("Double", "Float"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConversionError(_mismatch(value, type_name, sent))
        number = float(value)
        if not math.isfinite(number):
            raise ConversionError(f"value is {'NaN' if math.isnan(number) else ('+inf' if number > 0 else '-inf')}")
        if sent == "Float" or (sent is None and type_name == "Float"):
            # a float32 on the wire: the shortest decimal that is the same float32 (5.8458405, not its
            # exact binary value 5.8458404541015625), as the Modbus driver records a float32
            return shortest_float32(number, _F32(number))
        return number
    if type_name in _INT_RANGES:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConversionError(_mismatch(value, type_name, sent))
        low, high = _INT_RANGES[type_name]
        if not low <= value <= high:
            raise ConversionError(f"{value} is out of range for {type_name}")
        return int(value)
    if type_name == "Boolean":
        if not isinstance(value, bool):
            raise ConversionError(_mismatch(value, type_name, sent))
        return value
    if type_name == "String":
        if not isinstance(value, str):
            raise ConversionError(_mismatch(value, type_name, sent))
        return value
    if type_name == "DateTime":
        if not isinstance(value, datetime):
            raise ConversionError(_mismatch(value, type_name, sent))
        ts = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")
    raise ConversionError(f"unknown type {type_name}")


def _mismatch(value: object, type_name: str, sent: str | None) -> str:
    return f"type mismatch: expected {type_name}, server sent {sent or type(value).__name__} {value!r:.40}"
