"""The records document inside a batch: readings and events as compact JSON rows.

``{"e": [[seq, type, subject, data, ts_us, batch, phase], ...],
   "r": [[seq, tag, value, quality, reason, ts_us, source_ts_us, batch, phase], ...]}``

Both lists are in ascending ``seq`` order; together they hold every seq of the batch once.
The same validators run when sealing (so nothing unreadable is ever signed) and when decoding
(so a crafted payload gives :class:`RecordError`, never a crash or a wrong record). JSON keeps
``true`` / ``1`` / ``1.0`` apart and orjson writes floats in shortest round-trip form, so every
value comes back with its exact type and value. JSON has no NaN or infinity, and orjson would
silently write NaN as ``null``: non-finite floats are refused at seal time.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

import orjson

from blackbox.model import Event, Quality, Reading

INT_MIN = -(2**63)
INT_MAX = 2**64 - 1
"""orjson's integer range: values outside it cannot be encoded (and would decode as floats)."""

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
"""Range of sequence numbers and timestamps: they become BIGINT columns in the store."""

MAX_DEPTH = 254
"""Deepest nesting of arrays and objects in a records document, the document itself included: the
most orjson writes (it reads deeper), so the sealer and the decoder accept the same documents."""

MAX_NAME = 128
"""Longest ``tag``, ``batch`` and ``phase`` (characters)."""

_EVENT_TYPE = re.compile(r"[a-z0-9][a-z0-9_.\-]{0,63}")
_QUALITIES = {q.value: q for q in Quality}
_READING_FIELDS = 9
_EVENT_FIELDS = 7


class RecordError(ValueError):
    """A record or the records document breaks the format; the message says where and how."""


# The validators take the record (``where``) and the field apart, and only format them into a
# message on failure: this runs for every record on both sides, so the happy path stays cheap.


def _at(where: str, field: str) -> str:
    return f"{where}.{field}" if field else where


def _int(value: object, where: str, field: str, low: int = INT_MIN, high: int = INT_MAX) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise RecordError(f"{_at(where, field)} must be an integer, not {type(value).__name__}")
    if not low <= value <= high:
        raise RecordError(f"{_at(where, field)} is out of range: {value}")
    return value


def _opt_time(value: object, where: str, field: str) -> int | None:
    return None if value is None else _int(value, where, field, INT64_MIN, INT64_MAX)


def _str(value: object, where: str, field: str, *, empty: bool = True, longest: int | None = None) -> str:
    if not isinstance(value, str):
        raise RecordError(f"{_at(where, field)} must be a string, not {type(value).__name__}")
    if not empty and not value:
        raise RecordError(f"{_at(where, field)} must not be empty")
    if longest is not None and len(value) > longest:
        raise RecordError(f"{_at(where, field)} is {len(value)} characters long, more than {longest}")
    if "\x00" in value:
        raise RecordError(f"{_at(where, field)} holds a NUL character (U+0000), which the format forbids")
    return value


def _opt_str(value: object, where: str, field: str, longest: int | None = None) -> str | None:
    return None if value is None else _str(value, where, field, longest=longest)


def _scalar(value: object, where: str, field: str) -> None:
    """Check a JSON scalar: None, bool, int in orjson's range, finite float, str."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        _str(value, where, field)
    elif isinstance(value, int):
        _int(value, where, field)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise RecordError(f"{_at(where, field)} is {value}: NaN and infinity cannot be sealed")
    else:
        raise RecordError(f"{_at(where, field)} has type {type(value).__name__}, which is not a JSON value")


def _check_data(data: object, where: str) -> dict[str, Any]:
    """Check an event's data: a dict of JSON values, walked without recursion (depth is untrusted)."""
    if not isinstance(data, dict):
        raise RecordError(f"{where}.data must be an object, not {type(data).__name__}")
    stack: list[tuple[object, str]] = [(data, f"{where}.data")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            for key, item in node.items():
                if not isinstance(key, str):
                    raise RecordError(f"{path} has a key of type {type(key).__name__}; keys must be strings")
                _str(key, path, "(a key)")
                stack.append((item, f"{path}.{key}"))
        elif isinstance(node, list):
            stack.extend((item, f"{path}[{i}]") for i, item in enumerate(node))
        else:
            _scalar(node, path, "")
    return data


def check_reading_row(row: object, where: str = "reading") -> Sequence[Any]:
    """Validate one reading row (the shared rule of sealing and decoding); return it.

    A decoded row is a JSON array (a list); the gateway's sealer makes its rows as tuples.
    """
    if not isinstance(row, list | tuple) or len(row) != _READING_FIELDS:
        raise RecordError(f"{where} must be a list of {_READING_FIELDS} fields")
    seq, tag, value, quality, reason, ts_us, source_ts_us, batch, phase = row
    _int(seq, where, "seq", 0, INT64_MAX)
    where = f"reading seq {seq}"
    _str(tag, where, "tag", empty=False, longest=MAX_NAME)
    _scalar(value, where, "value")
    if not isinstance(quality, str) or quality not in _QUALITIES:
        raise RecordError(f"{where}.quality must be one of {', '.join(_QUALITIES)}, got {quality!r}")
    _opt_str(reason, where, "reason")
    _int(ts_us, where, "ts_us", INT64_MIN, INT64_MAX)
    _opt_time(source_ts_us, where, "source_ts_us")
    _opt_str(batch, where, "batch", MAX_NAME)
    _opt_str(phase, where, "phase", MAX_NAME)
    return row


def check_event_row(row: object, where: str = "event") -> list[Any]:
    """Validate one event row (the shared rule of sealing and decoding); return it."""
    if not isinstance(row, list) or len(row) != _EVENT_FIELDS:
        raise RecordError(f"{where} must be a list of {_EVENT_FIELDS} fields")
    seq, type_, subject, data, ts_us, batch, phase = row
    _int(seq, where, "seq", 0, INT64_MAX)
    where = f"event seq {seq}"
    _str(type_, where, "type", empty=False)
    if not _EVENT_TYPE.fullmatch(type_):
        raise RecordError(f"{where}.type must be 1 to 64 characters of a-z, 0-9, '_', '.', '-' starting with a "
                          f"letter or digit, got {type_[:80]!r}")
    _opt_str(subject, where, "subject")
    _check_data(data, where)
    _int(ts_us, where, "ts_us", INT64_MIN, INT64_MAX)
    _opt_str(batch, where, "batch", MAX_NAME)
    _opt_str(phase, where, "phase", MAX_NAME)
    return row


# -- many rows at once ---------------------------------------------------------------------------
#
# Checking row by row costs about 1 µs per reading in Python, the largest part of sealing and of
# opening a batch. The same rules checked column by column with C-level builtins (map, set, min,
# all) cost a tenth of that. The column check is only a shortcut: when it does not accept the
# rows, the row-by-row check runs and decides (and names the row and field that is wrong), so the
# shortcut can never accept anything the row-by-row rules refuse.

_NONE = type(None)
_SCALARS = frozenset({_NONE, bool, int, float, str})
_OPT_STR = frozenset({_NONE, str})
_OPT_INT = frozenset({_NONE, int})
_FLOAT = frozenset({float})
_QUALITY_NAMES = frozenset(_QUALITIES)


def _ints_within(values: Sequence[int], low: int, high: int) -> bool:
    return not values or (low <= min(values) and max(values) <= high)


def _readings_pass_column_check(rows: Sequence[Any]) -> bool:
    """Whether every row certainly passes :func:`check_reading_row` (``False``: check row by row)."""
    if not set(map(type, rows)) <= {list, tuple} or set(map(len, rows)) != {_READING_FIELDS}:
        return False
    return _columns_pass(*zip(*rows, strict=True))


def reading_columns_pass(first_seq: int, last_seq: int, tags: Sequence[Any], values: Sequence[Any],
                         qualities: Sequence[Any] | None, reasons: Sequence[Any] | None, ts_us: Any,
                         source_ts_us: Sequence[Any] | None, batch: Any, phase: Any, tags_checked: bool = False,
                         ) -> bool:
    """Whether the reading rows of a block of columns certainly pass :func:`check_reading_row`.

    The rows are ``[first_seq + i, tags[i], values[i], qualities[i], reasons[i], ts_us,
    source_ts_us[i], batch, phase]`` for ``first_seq..last_seq``, ``None`` for qualities meaning all
    ``"good"`` and for reasons and source times all ``None`` (the gateway buffer's blocks). What is
    the same for every row is checked once, the seqs by their ends; the rest as
    :func:`check_reading_rows` checks its columns. ``False``: build the rows and check them.
    ``tags_checked``: every tag in ``tags`` is known to pass (the same column passed before).
    """
    n = last_seq - first_seq + 1 if type(first_seq) is int and type(last_seq) is int else -1
    if n < 1 or len(tags) != n or len(values) != n or any(
            column is not None and len(column) != n for column in (qualities, reasons, source_ts_us)):
        return False
    return _columns_pass((first_seq, last_seq), tags[:1] if tags_checked else tags, values,
                         ("good",) if qualities is None else qualities,
                         (None,) if reasons is None else reasons, (ts_us,),
                         (None,) if source_ts_us is None else source_ts_us, (batch,), (phase,))


def _columns_pass(seq: Sequence[Any], tag: Sequence[Any], value: Sequence[Any], quality: Sequence[Any],
                  reason: Sequence[Any], ts_us: Sequence[Any], source_ts_us: Sequence[Any], batch: Sequence[Any],
                  phase: Sequence[Any]) -> bool:
    """Whether rows made of these columns' values certainly pass :func:`check_reading_row`.

    A column may hold fewer values than there are rows (one, for a value every row shares; the two
    ends, for a run of seqs): every value a row holds must be among those checked.
    """
    if set(map(type, seq)) != {int} or not _ints_within(seq, 0, INT64_MAX):
        return False
    if set(map(type, tag)) != {str} or not all(tag):
        return False
    tags = set(tag)  # a few distinct names among thousands of rows: their lengths and NULs checked once
    if max(map(len, tags)) > MAX_NAME:
        return False
    value_types = set(map(type, value))
    if not value_types <= _SCALARS:
        return False
    if float in value_types:
        floats = value if value_types == _FLOAT else [v for v in value if type(v) is float]
        if not all(map(math.isfinite, floats)):
            return False
    if int in value_types and not _ints_within([v for v in value if type(v) is int], INT_MIN, INT_MAX):
        return False
    if set(map(type, quality)) != {str} or not set(quality) <= _QUALITY_NAMES:
        return False
    if set(map(type, ts_us)) != {int} or not _ints_within(ts_us, INT64_MIN, INT64_MAX):
        return False
    source_types = set(map(type, source_ts_us))
    if not source_types <= _OPT_INT:
        return False
    if int in source_types and not _ints_within([t for t in source_ts_us if t is not None], INT64_MIN, INT64_MAX):
        return False
    if not all(set(map(type, column)) <= _OPT_STR for column in (reason, batch, phase)):
        return False
    names = set(batch)
    names.update(phase)
    names.discard(None)
    if names and max(map(len, names)) > MAX_NAME:
        return False
    texts: list[str] = [*tags, *names]
    if str in value_types:
        texts.extend(v for v in value if type(v) is str)
    if reason.count(None) != len(reason):
        texts.extend(r for r in reason if r is not None)
    return "\x00" not in "".join(texts)


def check_reading_rows(rows: Sequence[Any], what: str = "reading") -> None:
    """Validate reading rows (same rules as :func:`check_reading_row`); raise :class:`RecordError`."""
    if rows and not _readings_pass_column_check(rows):
        for i, row in enumerate(rows):
            check_reading_row(row, f"{what} #{i}")


def check_event_rows(rows: Sequence[Any], what: str = "event") -> None:
    """Validate event rows (few per batch: row by row, their data is checked in depth)."""
    for i, row in enumerate(rows):
        check_event_row(row, f"{what} #{i}")


def _reading_row(r: Reading) -> list[Any]:
    quality = r.quality.value if isinstance(r.quality, Quality) else r.quality
    value = r.value
    if isinstance(value, float) and type(value) is not float:
        value = float(value)  # e.g. numpy.float64: a float orjson would refuse
    return [r.seq, r.tag, value, quality, r.reason, r.ts_us, r.source_ts_us, r.batch, r.phase]


def _event_row(e: Event) -> list[Any]:
    return [e.seq, e.type, e.subject, e.data, e.ts_us, e.batch, e.phase]


def rows_of(records: Sequence[Reading | Event]) -> tuple[list[list[Any]], list[list[Any]]]:
    """``(reading rows, event rows)`` of records, in the document's row layout (not yet checked)."""
    readings: list[list[Any]] = []
    events: list[list[Any]] = []
    for record in records:
        if isinstance(record, Reading):
            readings.append(_reading_row(record))
        elif isinstance(record, Event):
            events.append(_event_row(record))
        else:
            raise RecordError(f"cannot seal a {type(record).__name__}: only Reading and Event")
    return readings, events


def dump_document(readings: Sequence[Sequence[Any]], events: Sequence[Sequence[Any]]) -> bytes:
    """The records document of already checked rows (keys sorted, no whitespace); the rows and their
    lists are lists or tuples (what orjson writes as arrays, alike).

    Duplicate keys cannot occur (rows come from Python dicts), so the document decodes exactly.
    """
    try:
        return orjson.dumps({"e": events, "r": readings}, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as exc:  # e.g. lone surrogates, nesting deeper than orjson allows
        raise RecordError(f"records cannot be encoded as JSON: {exc}") from None


def dump_row(row: Sequence[Any]) -> bytes:
    """One row exactly as :func:`dump_document` writes it inside the document."""
    try:
        return orjson.dumps(row, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as exc:
        raise RecordError(f"records cannot be encoded as JSON: {exc}") from None


DOCUMENT_OVERHEAD = len(b'{"e":[],"r":[]}')
"""Bytes of the records document besides its rows and the commas between them."""


def parse_document(raw: bytes) -> tuple[list[Any], list[Any]]:
    """Parse a records document into checked ``(reading rows, event rows)``, as stored.

    Every value comes back exactly as written, or the document is refused: see :func:`_check_exact`.
    """
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RecordError(f"records are not valid JSON: {exc}") from None
    try:
        canonical = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:  # the only thing orjson reads but cannot write: nesting
        raise RecordError(f"records nest deeper than {MAX_DEPTH} arrays and objects") from None
    if canonical != raw:
        _check_exact(raw)
    if not isinstance(doc, dict) or set(doc) != {"e", "r"}:
        raise RecordError('records must be a JSON object with exactly the keys "e" and "r"')
    rows_r, rows_e = doc["r"], doc["e"]
    if not isinstance(rows_r, list) or not isinstance(rows_e, list):
        raise RecordError('records "r" and "e" must be lists')
    check_reading_rows(rows_r)
    check_event_rows(rows_e)
    return rows_r, rows_e


def _check_exact(raw: bytes) -> None:
    """Refuse what orjson would read inexactly: duplicate keys and integers beyond its range.

    orjson keeps the last of duplicate keys (another reader may keep the first) and decodes an
    integer outside -2**63 .. 2**64-1 as a float, silently changing a signed value. A document the
    reference sealer wrote is re-encoded to the very same bytes, which proves neither happened;
    any other is parsed again here by a parser that sees every key and integer literal.
    """

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(items)
        if len(out) != len(items):
            seen: set[str] = set()
            for key, _ in items:
                if key in seen:
                    raise RecordError(f"records hold the key {key[:80]!r} twice in one object")
                seen.add(key)
        return out

    def integer(text: str) -> int:
        value = int(text)
        if not INT_MIN <= value <= INT_MAX:
            raise RecordError(f"records hold the integer {text[:40]}, outside -2**63 .. 2**64-1")
        return value

    try:
        json.loads(raw.decode("utf-8"), object_pairs_hook=pairs, parse_int=integer)
    except (ValueError, RecursionError) as exc:  # orjson accepted it: only our own refusals are expected here
        if isinstance(exc, RecordError):
            raise
        raise RecordError(f"records are not valid JSON: {exc}") from None


def records_of_rows(rows_r: Sequence[Sequence[Any]], rows_e: list[list[Any]]) -> tuple[list[Reading], list[Event]]:
    """Readings and events of checked rows, each in the order given."""
    q = _QUALITIES
    readings = [Reading(s, t, v, q[qu], rs, ts, sts, b, p) for s, t, v, qu, rs, ts, sts, b, p in rows_r]
    events = [Event(*row) for row in rows_e]
    return readings, events
