"""From configured tags to node ids, and from ``DataValue`` to sample fields: shared by polling and subscriptions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from asyncua import ua

from blackbox.model import Quality, Sample, Value
from drivers.opcua.config import NodeAddress
from drivers.opcua.convert import ConversionError, convert

_SC = ua.StatusCodes
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_OPC_MIN = datetime(1601, 1, 2, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_CODE_MASK = 0xFFFF0000
"""The status code proper; the low 16 bits are info bits (e.g. a monitored item's queue overflow)."""
OVERFLOW_BITS = 0x0480
"""InfoType DataValue (0x0400) with the Overflow bit (0x0080): the server's queue for the item overflowed."""

LINK_LOST_CODES = frozenset({
    _SC.BadSessionIdInvalid, _SC.BadSessionClosed, _SC.BadSessionNotActivated, _SC.BadSecureChannelIdInvalid,
    _SC.BadSecureChannelClosed, _SC.BadConnectionClosed, _SC.BadServerHalted, _SC.BadShutdown,
    _SC.BadCommunicationError, _SC.BadTimeout, _SC.BadRequestTimeout, _SC.BadNotConnected,
    _SC.BadServerNotConnected, _SC.BadTcpInternalError, _SC.BadSecureChannelTokenUnknown,
})
"""Service results that mean the session or its channel is gone: the source is unavailable."""


@dataclass(frozen=True, slots=True)
class Node:
    """A tag resolved against the server's namespace array."""

    name: str
    type: str
    node_id: ua.NodeId
    position: int
    """The tag's place in the source's configuration (and in ``read()``'s columns)."""


def node_id(address: NodeAddress, index: int) -> ua.NodeId:
    kinds = {"i": ua.NodeIdType.Numeric, "s": ua.NodeIdType.String, "g": ua.NodeIdType.Guid,
             "b": ua.NodeIdType.ByteString}
    # asyncua annotates with int/str subclasses (ua.Int32, ua.String...); plain values encode the same
    return ua.NodeId(cast(Any, address.identifier), ua.Int16(index), kinds[address.kind])


def timestamp_us(ts: datetime | None) -> int | None:
    if ts is None:
        return None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    if ts < _OPC_MIN:  # DateTime 0 on the wire: "no timestamp"
        return None
    return (ts - _EPOCH) // _MICROSECOND


def status_name(code: int) -> str:
    """The name of a status code, info bits ignored."""
    return ua.StatusCode(ua.UInt32(code & _CODE_MASK)).name


Fields = tuple[Value, Quality, str | None, int | None]
"""A sample without its tag: value, quality, reason, source timestamp (µs)."""


def decode(type_name: str, dv: ua.DataValue) -> Fields:
    """One ``DataValue`` as the fields of a sample of the configured type."""
    code = dv.StatusCode.value & _CODE_MASK if dv.StatusCode is not None else _SC.Good
    source_ts = timestamp_us(dv.SourceTimestamp)
    if code & 0x80000000:  # severity Bad (and the reserved 11)
        return None, Quality.BAD, status_name(code), source_ts
    quality = Quality.UNCERTAIN if code & 0x40000000 else Quality.GOOD
    reason = None if code == _SC.Good else status_name(code)
    variant = dv.Value
    try:
        value = convert(variant.Value, type_name, variant.VariantType.name) if variant is not None \
            else convert(None, type_name)
    except ConversionError as exc:
        return None, Quality.BAD, str(exc), source_ts
    return value, quality, reason, source_ts


def to_sample(name: str, type_name: str, dv: ua.DataValue) -> Sample:
    """Turn one ``DataValue`` into a sample of the configured type."""
    return Sample(name, *decode(type_name, dv))
