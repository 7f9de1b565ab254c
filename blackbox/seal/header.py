"""The batch header: its fields, their rules, and its one canonical byte encoding.

The header is canonical JSON — keys sorted, no whitespace, ASCII only, integers and strings only —
so that exactly one byte string encodes a given header. :func:`decode_header` insists on that: it
re-encodes what it parsed and rejects the bytes unless they are identical, which rules out
duplicate keys, floats, escapes spelled differently and every other ambiguity.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields
from typing import Any

from blackbox.seal.codec import codec_names
from blackbox.seal.errors import MalformedBatch

FORMAT_VERSION = 1
GENESIS_HASH = "0" * 64
"""``prev_hash`` of the first batch of a gateway's chain."""

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# Same rule as config.Identifier: site and gateway ids end up in MQTT topics and file names.
_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX16 = re.compile(r"[0-9a-f]{16}")
_CLOCK = re.compile(r"[a-z0-9][a-z0-9_.\-]{0,31}")

_COUNTERS = ("batch_seq", "first_seq", "last_seq", "n_readings", "n_events")
_TIMES = ("first_ts_us", "last_ts_us", "sealed_at_us")


@dataclass(frozen=True, slots=True)
class BatchHeader:
    """What a batch says about itself; every field is covered by the signature.

    ``first_ts_us``/``last_ts_us`` are the smallest and largest gateway timestamp (``ts_us``) in
    the batch — not the timestamps of the first and last record, which differ if the clock stepped
    back. ``payload_sha256`` is the SHA-256 of the *uncompressed* records JSON.
    Construction validates every field and raises ``ValueError``.
    """

    version: int
    gateway: str
    site: str
    key_id: str
    batch_seq: int
    first_seq: int
    last_seq: int
    first_ts_us: int
    last_ts_us: int
    n_readings: int
    n_events: int
    prev_hash: str
    config_hash: str
    clock: str
    compression: str
    payload_sha256: str
    sealed_at_us: int

    def __post_init__(self) -> None:
        problem = _problem(self)
        if problem is not None:
            raise ValueError(problem)

    def to_dict(self) -> dict[str, Any]:
        """The fields by name. Every field is a str or an int, so a shallow copy is a whole one
        (``dataclasses.asdict`` deep-copies each value: 77 µs a header, read three times per batch
        by the store's re-verification)."""
        return {name: getattr(self, name) for name in FIELD_ORDER}


FIELD_ORDER: tuple[str, ...] = tuple(f.name for f in fields(BatchHeader))
FIELD_NAMES: frozenset[str] = frozenset(FIELD_ORDER)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _problem(h: BatchHeader) -> str | None:
    """The first thing wrong with a header, or ``None``."""
    for name in FIELD_ORDER:
        value = getattr(h, name)
        if name == "version" or name in _COUNTERS or name in _TIMES:
            if not _is_int(value):
                return f"header field {name} must be an integer, not {type(value).__name__}"
            low = INT64_MIN if name in _TIMES else 1 if name == "batch_seq" else 0
            if not low <= value <= INT64_MAX:
                return f"header field {name} is out of range: {value}"
        elif type(value) is not str:
            return f"header field {name} must be a string, not {type(value).__name__}"
    if h.version != FORMAT_VERSION:
        return f"unsupported format version {h.version} (this code reads version {FORMAT_VERSION})"
    checks: list[tuple[str, re.Pattern[str], str]] = [
        ("gateway", _IDENTIFIER, "an identifier"),
        ("site", _IDENTIFIER, "an identifier"),
        ("key_id", _HEX16, "16 lowercase hex digits"),
        ("prev_hash", _HEX64, "64 lowercase hex digits"),
        ("config_hash", _HEX64, "64 lowercase hex digits"),
        ("payload_sha256", _HEX64, "64 lowercase hex digits"),
        ("clock", _CLOCK, "a short lowercase status such as 'ok' or 'stepped'"),
    ]
    for name, pattern, what in checks:
        if not pattern.fullmatch(getattr(h, name)):
            return f"header field {name} must be {what}, got {getattr(h, name)!r}"
    if h.compression not in codec_names():
        return f"unknown compression {h.compression!r} (known: {', '.join(sorted(codec_names()))})"
    if h.first_seq > h.last_seq:
        return f"first_seq {h.first_seq} is after last_seq {h.last_seq}"
    if h.last_seq - h.first_seq + 1 != h.n_readings + h.n_events:
        return f"seq range {h.first_seq}..{h.last_seq} does not hold {h.n_readings} readings + {h.n_events} events"
    if h.first_ts_us > h.last_ts_us:
        return f"first_ts_us {h.first_ts_us} is after last_ts_us {h.last_ts_us}"
    return None


def encode_header(header: BatchHeader) -> bytes:
    """The canonical bytes of a header."""
    return json.dumps(header.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _no_float(text: str) -> Any:
    raise ValueError(f"floats are not allowed in the header: {text}")


def decode_header(raw: bytes) -> BatchHeader:
    """Parse and validate header bytes; raise :class:`MalformedBatch` unless they are canonical."""
    try:
        data = json.loads(raw.decode("ascii"), parse_float=_no_float, parse_constant=_no_float)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise MalformedBatch(f"header is not ASCII JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MalformedBatch("header is not a JSON object")
    missing = FIELD_NAMES - data.keys()
    extra = data.keys() - FIELD_NAMES
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(sorted(missing))}")
        if extra:
            parts.append(f"unknown {', '.join(sorted(extra))}")
        raise MalformedBatch(f"header fields: {'; '.join(parts)}")
    try:
        header = BatchHeader(**data)
    except ValueError as exc:
        raise MalformedBatch(str(exc)) from None
    if encode_header(header) != raw:
        raise MalformedBatch("header is not in canonical form (sorted keys, no spaces, ASCII escapes)")
    return header
