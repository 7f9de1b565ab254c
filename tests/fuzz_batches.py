"""Malformed or mutated sealed batches for the fuzz tests of the decoder (tests/seal) and of the
store (tests/store), made from a seed that Hypothesis draws.

A generated batch starts from something close to valid — a records document with rows of the
documented shape and a header that agrees with it — and breaks it somewhere: a row field of the
wrong type or range, a row too short, a key twice, an integer beyond the range, a NUL, a header
field off by one or of another type, a payload that is not what the header says, a compression
stream cut short, lengths that lie, bytes flipped after signing. Every wire is built here from the
documented layout (not with ``blackbox.seal``), and signed with a fixed key so that the checks
behind the signature are reached.

:func:`exact_json` is an independent reader of a records document (the standard library's, which
reads every integer exactly and sees every key): whatever the decoder accepts must read the same.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import struct
import zlib
from typing import Any

import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"blackbox fuzz key").digest())
"""Fixed, so that a failing example replays exactly."""
KEY_ID = hashlib.sha256(KEY.public_key().public_bytes_raw()).hexdigest()[:16]
SITE, GATEWAY = "SH-PD-01", "gw-fuzz"
T0 = 1_767_225_600_000_000
GENESIS = "0" * 64

_NEAR_INTS = [0, 1, -1, 2**53 + 1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64 - 1, 2**64, 10**30, -(10**30)]
_TEXTS = ["", "T", "EM-01.temperature", "\x00", "a\x00b", "é", "🧴", "\ud7ff", "x" * 129, "Alarm.Raised", "qc.result"]
_FLOATS = [0.0, -0.0, 1.5, 1e16, 5e-324, 1.7976931348623157e308, -2.5e-7, 9.2e18, 1.8446744073709552e19]

# Generation uses a random.Random seeded by one Hypothesis draw per example: a hundred Hypothesis
# draws per batch would cost milliseconds each, and the value of this fuzzing is in the number of
# batches. Derandomized Hypothesis settings make the seeds, hence the batches, the same every run.


def scalar(rng: random.Random) -> Any:
    kind = rng.randrange(9)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.randint(-(2**70), 2**70) if rng.random() < 0.3 else rng.randint(-1000, 1000)
    if kind == 3:
        return rng.choice(_NEAR_INTS)
    if kind == 4:
        return rng.choice(_FLOATS)
    if kind == 5:
        return struct.unpack("<d", rng.randbytes(8))[0] if rng.random() < 0.2 else rng.uniform(-1e6, 1e6)
    if kind == 6:
        return rng.choice(_TEXTS)
    return "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0, 0xD7FF)])) for _ in range(rng.randrange(6)))


def json_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(6) if depth < 3 else 0
    if kind == 4:
        return [json_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 5:
        return {str(scalar(rng)) if rng.random() < 0.3 else rng.choice("abcxyz"): json_value(rng, depth + 1)
                for _ in range(rng.randrange(4))}
    value = scalar(rng)
    return 0.0 if isinstance(value, float) and not math.isfinite(value) and rng.random() < 0.5 else value


def reading_row(rng: random.Random, seq: int) -> list[Any]:
    value = rng.choice([rng.uniform(-1e3, 1e3), rng.randint(-(2**63), 2**64 - 1), True, None, "txt",
                        rng.choice(_FLOATS)])
    return [seq, rng.choice(["T", "EM-01.temperature", "WS-01.actual"]), value,
            rng.choice(["good", "uncertain", "bad"]), rng.choice([None, "open circuit"]), T0 + rng.randrange(10**6),
            rng.choice([None, T0]), rng.choice([None, "B-001"]), rng.choice([None, "emulsify"])]


def event_row(rng: random.Random, seq: int) -> list[Any]:
    data = {rng.choice(["lot", "value", "x", "n"]): json_value(rng, 1) for _ in range(rng.randrange(4))}
    return [seq, rng.choice(["alarm.raised", "qc.result", "config.applied"]), rng.choice([None, "EM-01"]), data,
            T0 + rng.randrange(10**6), rng.choice([None, "B-001"]), rng.choice([None, "fill"])]


def rows(rng: random.Random) -> tuple[list[list[Any]], list[list[Any]], int]:
    """(reading rows, event rows, first seq): a valid set of rows, maybe with one thing broken."""
    first = rng.choice([1, 1000, 2**63 - 10])
    readings: list[list[Any]] = []
    events: list[list[Any]] = []
    for i in range(rng.randrange(1, 7)):
        if rng.random() < 0.6:
            readings.append(reading_row(rng, first + i))
        else:
            events.append(event_row(rng, first + i))
    table = readings if readings and (not events or rng.random() < 0.5) else events
    how = rng.choice(["none", "field", "field", "short", "long", "swap", "dup-seq"] * 4 + ["deep"])
    row = rng.choice(table)
    if how == "deep":  # nesting around the deepest the format allows (254 levels, the document included)
        data: Any = 1
        for _ in range(rng.choice([200, 251, 252, 300])):
            data = {"a": data} if rng.random() < 0.5 else [data]
        row[rng.randrange(len(row))] = data
    elif how == "field":
        row[rng.randrange(len(row))] = json_value(rng)
    elif how == "short":
        row.pop()
    elif how == "long":
        row.append(json_value(rng))
    elif how == "swap" and len(table) > 1:
        table[0], table[-1] = table[-1], table[0]
    elif how == "dup-seq" and len(table) > 1:
        table[-1][0] = table[0][0]
    return readings, events, first


def dumps(doc: Any, style: str) -> bytes:
    """A JSON text of ``doc`` in one of several legitimate spellings (integers written exactly)."""
    if style == "canonical":
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    if style == "spaced":
        return json.dumps(doc, indent=1).encode()
    return json.dumps(doc, ensure_ascii=True).encode()


def documents(rng: random.Random) -> tuple[bytes, list[list[Any]], list[list[Any]], int]:
    readings, events, first = rows(rng)
    doc: Any = {"e": events, "r": readings}
    shape = rng.choice(["ok"] * 6 + ["extra-key", "missing-key", "not-object", "not-lists", "dup-key"])
    if shape == "extra-key":
        doc["x"] = []
    elif shape == "missing-key":
        del doc["e"]
    elif shape == "not-object":
        doc = [events, readings]
    elif shape == "not-lists":
        doc["r"] = {"0": readings}
    raw = dumps(doc, rng.choice(["canonical", "canonical", "spaced", "ascii"]))  # NaN comes out as NaN
    if shape == "dup-key":
        raw = raw.replace(b'{"e"', b'{"r":[],"e"', 1) if raw.startswith(b'{"e"') else raw[:-1] + b',"e":[]}'
    if rng.random() < 0.1:  # a few raw byte edits: broken JSON, UTF-8, literals
        for _ in range(rng.randrange(1, 4)):
            at = rng.randrange(len(raw))
            edit = rng.choice([b"", b"\xff", b"NaN", b"1e999", b"\\u0000", b",", b"]", b"\x00", b"-"])
            raw = raw[:at] + edit + raw[at + rng.randrange(3):]
    return raw, readings, events, first


def _summary(readings: list[list[Any]], events: list[list[Any]], first: int) -> dict[str, Any]:
    seqs = [r[0] for r in readings + events if r and type(r[0]) is int]
    times = [r[5] for r in readings if len(r) > 5 and type(r[5]) is int] + \
            [e[4] for e in events if len(e) > 4 and type(e[4]) is int]
    n = len(readings) + len(events)
    return {"first_seq": min(seqs, default=first), "last_seq": min(seqs, default=first) + max(n, 1) - 1,
            "first_ts_us": min(times, default=T0), "last_ts_us": max(times, default=T0),
            "n_readings": len(readings), "n_events": len(events) if n else 1}


_HEADER_NUDGES: dict[str, list[Any]] = {
    "version": [0, 2, "1", 1.0, True], "batch_seq": [0, -1, 2**63, "1", None], "first_seq": [-1, 2**63],
    "last_seq": [0, 10**20], "first_ts_us": [-(2**63) - 1, 2**63], "n_readings": [-1, 10**6, "1"],
    "n_events": [7, -1], "key_id": ["ABCDEF0123456789", "", "0" * 17], "prev_hash": ["g" * 64, "0" * 63, 0],
    "site": ["", "a/b", "x" * 129, "\x00"], "gateway": ["gw fuzz", 5], "clock": ["OK", "", "x" * 40],
    "compression": ["lzma", "ZSTD", None], "payload_sha256": ["0" * 64, "A" * 64],
    "config_hash": ["c" * 63], "sealed_at_us": [1.5, "now", 2**63],
}


def compress(document: bytes, compression: str) -> bytes:
    if compression == "zlib":
        return zlib.compress(document)
    if compression in ("zstd", "zstd-no-size"):
        return zstandard.ZstdCompressor(write_content_size=compression == "zstd").compress(document)
    return document


def frame(header: bytes, payload: bytes) -> bytes:
    """Signed bytes + signature, as docs/batch-format.md lays them out."""
    signed = b"BBX1" + struct.pack(">I", len(header)) + header + struct.pack(">I", len(payload)) + payload
    return signed + KEY.sign(signed)


def make_wire(rng: random.Random, batch_seq: int = 1, prev_hash: str = GENESIS) -> bytes:
    """A signed batch that is malformed somewhere (or, now and then, valid after all)."""
    document, readings, events, first = documents(rng)
    compression = rng.choice(["none", "zlib", "zstd", "zstd", "zstd-no-size"])
    payload = compress(document, compression)
    header: dict[str, Any] = {
        "version": 1, "site": SITE, "gateway": GATEWAY, "key_id": KEY_ID, "batch_seq": batch_seq,
        "prev_hash": prev_hash, "config_hash": "c" * 64, "clock": "ok",
        "compression": "zstd" if compression == "zstd-no-size" else compression,
        "payload_sha256": hashlib.sha256(document).hexdigest(), "sealed_at_us": T0 + 10**7,
        **_summary(readings, events, first),
    }
    if rng.random() < 0.25:
        name = rng.choice(sorted(_HEADER_NUDGES))
        header[name] = rng.choice(_HEADER_NUDGES[name])
    if rng.random() < 0.1:
        header.pop(rng.choice(sorted(header)))
    header_bytes = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    if rng.random() < 0.05:
        header_bytes = json.dumps(header, sort_keys=False).encode()  # not canonical
    if rng.random() < 0.1:  # the payload is not what the header describes
        payload = rng.choice([payload[:-1], payload + b"\x00", payload[: len(payload) // 2], b""])
    wire = frame(header_bytes, payload)
    layout = rng.randrange(15)
    if layout == 0:  # bytes flipped after signing
        at = rng.randrange(len(wire))
        wire = wire[:at] + bytes([wire[at] ^ rng.randrange(1, 256)]) + wire[at + 1:]
    elif layout == 1:
        wire = wire[: rng.randrange(len(wire))]
    elif layout == 2:
        wire += rng.randbytes(rng.randrange(1, 9))
    elif layout == 3:  # a length field that lies
        at = rng.choice([4, 8 + len(header_bytes)])
        wire = wire[:at] + struct.pack(">I", rng.choice([0, 1, 2**32 - 1, 65_537, len(wire)])) + \
            wire[at + 4:]
    elif layout == 4:
        wire = rng.randbytes(rng.randrange(121))
    return wire


def tagged(value: Any) -> Any:
    """``value`` with every scalar's type made explicit, so that 1, 1.0 and True compare unequal."""
    if isinstance(value, dict):
        return {k: tagged(v) for k, v in value.items()}
    if isinstance(value, list):
        return [tagged(v) for v in value]
    if isinstance(value, float):
        return ("float", repr(value))
    return (type(value).__name__, value)


def exact_json(document: bytes) -> Any:
    """The document as the standard library reads it: integers exact, NaN refused."""

    def refuse(text: str) -> Any:
        raise ValueError(text)

    value = json.loads(document.decode("utf-8"), parse_constant=refuse)
    assert not _has_non_finite(value)
    return value


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_non_finite(v) for v in value)
    return False


def payload_document(wire: bytes) -> bytes:
    """The records document of a wire that opened, decompressed without blackbox."""
    (hlen,) = struct.unpack(">I", wire[4:8])
    header = json.loads(wire[8:8 + hlen])
    (plen,) = struct.unpack(">I", wire[8 + hlen:12 + hlen])
    payload = wire[12 + hlen:12 + hlen + plen]
    if header["compression"] == "zlib":
        return zlib.decompress(payload)
    if header["compression"] == "zstd":
        return zstandard.ZstdDecompressor().decompress(payload)
    return payload
