"""Reading a records document: a shortcut for the readings, typed decoding at C speed (msgspec).

The full reader (:func:`blackbox.seal.records.parse_document`: orjson, a re-encoding check for
exactness, then column checks) costs about 1.2 µs per reading, most of a store worker's decoding
CPU. Here msgspec parses the readings straight into typed tuples and checks each field's type,
length and range while it parses: about 0.35 µs per reading, with one tuple per reading and no
second pass.

It is only a shortcut. :func:`fast_readings` returns ``None`` whenever it cannot vouch for a
document, and :func:`read_document` then lets the full reader decide (and say what is wrong). So
it is as strict as the full reader, field by field (:data:`ReadingRow`), and leaves to it
whatever it does not check:

- any ``\\u`` escape in the readings (the only way to write U+0000 or a lone surrogate, which
  msgspec would read): a JSON string cannot hold a raw control character, so without escapes no
  string holds a NUL;
- any layout of the top-level object but ``{"e":E,"r":R}`` (or ``r`` first) with no byte between
  the tokens: a key twice, a third key or whitespace make the document longer than that;
- integers beyond the signed 64-bit range in ``value`` (those up to 2**64-1 are legal, and read
  exactly by the full reader);
- the events: few per batch, with nested ``data`` (duplicate keys, depth): the full reader reads
  them, alone in a document of the same shape (so nested exactly as deep).

``tests/seal/test_seal_fast_records.py`` checks that both readers agree on generated documents.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from blackbox.seal.records import INT64_MAX, INT64_MIN, MAX_NAME, RecordError, parse_document

_Int64 = Annotated[int, Meta(ge=INT64_MIN, le=INT64_MAX)]
_Seq = Annotated[int, Meta(ge=0, le=INT64_MAX)]
_Tag = Annotated[str, Meta(min_length=1, max_length=MAX_NAME)]
_Name = Annotated[str, Meta(max_length=MAX_NAME)]

Quality = Literal["good", "uncertain", "bad"]
"""The values of :class:`blackbox.model.Quality` (a test checks they are the same)."""

ReadingRow = tuple[
    _Seq,  # seq
    _Tag,  # tag
    bool | _Int64 | float | str | None,  # value: msgspec refuses NaN and infinity (1e400) as floats
    Quality,  # quality
    str | None,  # reason
    _Int64,  # ts_us
    _Int64 | None,  # source_ts_us
    _Name | None,  # batch
    _Name | None,  # phase
]
"""A reading row of docs/batch-format.md as msgspec checks it (strict: no ``true`` for an int)."""


class _Document(msgspec.Struct, forbid_unknown_fields=True):
    e: msgspec.Raw
    r: msgspec.Raw


# Built once and shared by every thread: msgspec's decoders are thread-safe since 0.16.
_DOCUMENT = msgspec.json.Decoder(_Document)
_READINGS = msgspec.json.Decoder(list[ReadingRow])
_LAYOUT = len(b'{"e":,"r":}')
"""Bytes of the top-level object besides the two lists, when nothing else is written."""
_NO_EVENTS = b'{"e":[],"r":'
"""How the document of a batch without events starts, as the reference sealer writes it."""


def split_document(raw: bytes) -> tuple[bytes, bytes] | None:
    """``(the events list's raw JSON, the readings list's raw JSON)`` of a document laid out exactly
    ``{"e":E,"r":R}`` (nothing else in it), or ``None``: let the full reader decide.

    The readings are not parsed (only scanned where there are events): the store's verification
    compares them as bytes (:mod:`blackbox.store.confirm`).
    """
    try:
        if raw.startswith(_NO_EVENTS) and raw.endswith(b"}"):
            # The usual document. What lies between must then be one JSON value (msgspec refuses
            # anything after it when it is parsed), so no key can follow "r": the document is exactly
            # {"e":[],"r":R}.
            return b"[]", raw[len(_NO_EVENTS):-1]
        document = _DOCUMENT.decode(raw)
    except (msgspec.MsgspecError, RecursionError):  # RecursionError: nesting deeper than msgspec reads
        return None
    r, events = bytes(document.r), bytes(document.e)
    if len(raw) != _LAYOUT + len(events) + len(r):
        return None
    return events, r


def fast_readings(raw: bytes) -> tuple[list[tuple[Any, ...]], bytes] | None:
    """``(reading tuples, the events list's raw JSON)``, or ``None``: let the full reader decide."""
    parts = split_document(raw)
    if parts is None:
        return None
    events, r = parts
    try:
        if b"\\" in raw and b"\\u" in r:
            return None
        readings = _READINGS.decode(r)
    except (msgspec.MsgspecError, RecursionError):
        return None
    return readings, events


def read_events(events_raw: bytes) -> list[list[Any]]:
    """The checked event rows of an events list's raw JSON (:func:`split_document`); :class:`RecordError`.

    Read by the full reader, alone in a document of the same shape (so nested exactly as deep).
    """
    if events_raw == b"[]":
        return []
    return parse_document(b'{"e":' + events_raw + b',"r":[]}')[1]


def read_document(raw: bytes) -> tuple[list[tuple[Any, ...]], list[list[Any]]]:
    """Checked ``(reading rows as tuples, event rows)`` of a records document; raise :class:`RecordError`."""
    fast = fast_readings(raw)
    if fast is not None:
        readings, events_raw = fast
        try:
            return readings, read_events(events_raw)
        except RecordError:
            pass  # the whole document again, so that the message is the full reader's
    rows_r, rows_e = parse_document(raw)
    return [tuple(row) for row in rows_r], rows_e
