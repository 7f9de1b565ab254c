"""The rules of docs/batch-format.md that test_seal_malformed.py did not cover yet, one row each:
a validly signed batch breaking exactly that rule, and the reason the decoder must give.

Also: integers are read exactly at the documented boundaries, whatever the document's spelling
(orjson alone reads an integer beyond 2**64-1 as a float, which would change a signed value).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from blackbox.model import Event, Reading
from blackbox.seal import GENESIS_HASH, MalformedBatch, decode_records, decode_rows, open_batch, seal_batch

from .helpers import CONFIG_HASH, T0, canonical, craft, craft_document, header_for

R = [1, "T", 1.5, "good", None, 10, None, None, None]
E = [2, "qc.result", "pH", {"value": 5.5}, 11, "B1", "fill"]


def compact(r: list[Any] | None = None, e: list[Any] | None = None) -> bytes:
    """The document as the reference sealer writes it (sorted keys, no whitespace)."""
    return json.dumps({"e": [E] if e is None else e, "r": [R] if r is None else r},
                      separators=(",", ":"), sort_keys=True).encode()


def spaced(r: list[Any] | None = None, e: list[Any] | None = None) -> bytes:
    """The same document as another writer might (whitespace, keys in another order)."""
    return json.dumps({"r": [R] if r is None else r, "e": [E] if e is None else e}, indent=1).encode()


def r_with(**fields: Any) -> list[Any]:
    names = ["seq", "tag", "value", "quality", "reason", "ts_us", "source_ts_us", "batch", "phase"]
    return [fields.get(n, R[i]) for i, n in enumerate(names)]


def e_with(**fields: Any) -> list[Any]:
    names = ["seq", "type", "subject", "data", "ts_us", "batch", "phase"]
    return [fields.get(n, E[i]) for i, n in enumerate(names)]


def decode(wire: bytes) -> None:
    decode_records(open_batch(wire))


def deep(n: int) -> dict[str, Any]:
    """Event data ``n`` objects deep."""
    data: Any = 1
    for _ in range(n):
        data = {"a": data}
    return data  # type: ignore[no-any-return]


BIG = 2**64  # one past orjson's largest integer
SMALL = -(2**63) - 1  # one below its smallest

# (rule of docs/batch-format.md, document, header overrides, compression, expected reason)
CASES: list[tuple[str, bytes, dict[str, Any], str, str]] = [
    ("header: batch_seq >= 1", compact(), {"batch_seq": 0}, "none", "batch_seq is out of range: 0"),
    ("zstd: the frame header carries the content size", compact(), {}, "zstd-no-size",
     "does not declare its content size"),
    ("zstd: one frame, nothing before it", compact(), {}, "zstd-skippable-first", "corrupt zstd"),
    ("zstd: one frame, nothing after it", compact(), {}, "zstd-skippable-after", "corrupt zstd"),
    ("integers within -2**63 .. 2**64-1: value", compact(r=[r_with(value=BIG)]), {}, "none",
     "integer 18446744073709551616, outside"),
    ("integers within -2**63 .. 2**64-1: negative value", compact(r=[r_with(value=SMALL)]), {}, "none",
     "integer -9223372036854775809, outside"),
    ("integers within -2**63 .. 2**64-1: event data", compact(e=[e_with(data={"n": [1, {"m": BIG}]})]), {},
     "none", "integer 18446744073709551616, outside"),
    ("integers within -2**63 .. 2**64-1: whitespace document", spaced(r=[r_with(value=10**30)]), {}, "none",
     "integer 1000000000000000000000000000000, outside"),
    ("integers within -2**63 .. 2**64-1: compressed", compact(r=[r_with(value=BIG)]), {}, "zstd",
     "integer 18446744073709551616, outside"),
    ("seq within the signed 64-bit range", compact(r=[r_with(seq=2**63)]), {}, "none", "seq is out of range"),
    ("ts_us within the signed 64-bit range", compact(r=[r_with(ts_us=2**63)]), {}, "none",
     "ts_us is out of range"),
    ("no duplicate keys: top level", b'{"e":[],"r":[],"r":' + json.dumps([R]).encode() + b"}", {}, "none",
     "key 'r' twice"),
    ("no duplicate keys: event data", compact(e=[e_with(data={"a": 1})]).replace(b'{"a":1}', b'{"a":1,"a":2}'),
     {}, "none", "key 'a' twice"),
    ("no NaN or infinity", compact().replace(b"1.5", b"NaN"), {}, "none", "not valid JSON"),
    ("no NaN or infinity: overflowing float", compact().replace(b"1.5", b"1e999"), {}, "none", "not valid JSON"),
    ("no NUL in strings: tag", compact(r=[r_with(tag="T\x00")]), {}, "none", r"tag holds a NUL"),
    ("no NUL in strings: value", compact(r=[r_with(value="a\x00b")]), {}, "none", r"value holds a NUL"),
    ("no NUL in strings: reason", compact(r=[r_with(reason="\x00")]), {}, "none", r"reason holds a NUL"),
    ("no NUL in strings: batch", compact(r=[r_with(batch="B\x00")]), {}, "none", r"batch holds a NUL"),
    ("no NUL in strings: phase", compact(r=[r_with(phase="\x00")]), {}, "none", r"phase holds a NUL"),
    ("no NUL in strings: subject", compact(e=[e_with(subject="s\x00")]), {}, "none", r"subject holds a NUL"),
    ("no NUL in strings: data value", compact(e=[e_with(data={"x": ["\x00"]})]), {}, "none",
     r"data\.x\[0\] holds a NUL"),
    ("no NUL in strings: data key", compact(e=[e_with(data={"k\x00": 1})]), {}, "none", r"data\.\(a key\) holds a NUL"),
    ("tag at most 128 characters", compact(r=[r_with(tag="T" * 129)]), {}, "none", "tag is 129 characters long"),
    ("batch at most 128 characters", compact(r=[r_with(batch="B" * 129)]), {}, "none",
     "batch is 129 characters long"),
    ("phase at most 128 characters", compact(e=[e_with(phase="p" * 129)]), {}, "none",
     "phase is 129 characters long"),
    ("event type: lowercase dotted name", compact(e=[e_with(type="Alarm.Raised")]), {}, "none",
     "type must be 1 to 64 characters"),
    ("event type: at most 64 characters", compact(e=[e_with(type="a" * 65)]), {}, "none",
     "type must be 1 to 64 characters"),
    ("event type: no spaces", compact(e=[e_with(type="qc result")]), {}, "none", "type must be 1 to 64"),
    ("bytes after the signature", compact(), {}, "trailing", "length mismatch"),
    ("nesting at most 254 arrays and objects", compact(e=[e_with(data=deep(252))]), {}, "none",
     "nest deeper than 254"),  # orjson reads it but cannot write it: was a TypeError
    ("nesting at most 254: whitespace document", spaced(e=[e_with(data=deep(252))]), {}, "zstd",
     "nest deeper than 254"),
    ("source_ts_us within the signed 64-bit range", compact(r=[r_with(source_ts_us=2**63)]), {}, "none",
     "source_ts_us is out of range"),
    ("event seq within the signed 64-bit range", compact(e=[e_with(seq=2**63)]), {}, "none", "seq is out of range"),
    ("event ts_us within the signed 64-bit range", compact(e=[e_with(ts_us=2**63)]), {}, "none",
     "ts_us is out of range"),
    ("reading phase at most 128 characters", compact(r=[r_with(phase="p" * 129)]), {}, "none",
     "phase is 129 characters long"),
    ("event batch at most 128 characters", compact(e=[e_with(batch="B" * 129)]), {}, "none",
     "batch is 129 characters long"),
    ("valid UTF-8: no lone surrogate escaped in a reading", compact(r=[r_with(tag="T")]).replace(b'"T"', b'"\\ud800"'),
     {}, "none", "not valid JSON"),
    ("valid UTF-8: no lone surrogate escaped in event data", compact().replace(b'"value"', b'"\\udfff"'), {}, "none",
     "not valid JSON"),
    ("header: site at most 128 characters", compact(), {"site": "S" * 129}, "none", "site must be an identifier"),
]


def _wire(document: bytes, over: dict[str, Any], compression: str, key: Ed25519PrivateKey) -> bytes:
    if compression in ("none", "zstd"):
        return craft_document(document, key, compression, **over)
    if compression == "trailing":
        return craft_document(document, key, **over) + b"\x00"
    frame = zstandard.ZstdCompressor(write_content_size=compression != "zstd-no-size").compress(document)
    skippable = b"\x50\x2a\x4d\x18" + (3).to_bytes(4, "little") + b"abc"
    payload = {"zstd-no-size": frame, "zstd-skippable-first": skippable + frame,
               "zstd-skippable-after": frame + skippable}[compression]
    return craft(header_for(document, key, "zstd", **over), payload, key)


@pytest.mark.parametrize(("rule", "document", "over", "compression", "reason"), CASES, ids=[c[0] for c in CASES])
def test_each_rule_is_enforced_by_the_decoder(key: Ed25519PrivateKey, rule: str, document: bytes,
                                              over: dict[str, Any], compression: str, reason: str) -> None:
    wire = _wire(document, over, compression, key)
    with pytest.raises(MalformedBatch, match=reason):
        opened = open_batch(wire)
        decode_records(opened)
    with pytest.raises(MalformedBatch, match=reason):  # the store's bulk path says the same
        decode_rows(open_batch(wire))


BOUNDARIES = [2**64 - 1, 2**63, 2**63 - 1, 2**53 + 1, -(2**63), -(2**53) - 1, 0, -1]


@pytest.mark.parametrize("document", [compact, spaced], ids=["compact", "spaced"])
def test_integers_at_the_boundaries_are_read_exactly(key: Ed25519PrivateKey, document: Any) -> None:
    rows = [r_with(seq=i + 1, tag=f"T{i}", value=v) for i, v in enumerate(BOUNDARIES)]
    events = [e_with(seq=len(rows) + 1, data={"big": 2**64 - 1, "small": -(2**63), "list": [2**63]})]
    records = decode_records(open_batch(craft_document(document(rows, events), key)))
    values = [r.value for r in records if isinstance(r, Reading)]
    assert values == BOUNDARIES and all(type(v) is int for v in values)
    (event,) = [r for r in records if isinstance(r, Event)]
    assert event.data == {"big": 18446744073709551615, "small": -9223372036854775808, "list": [9223372036854775808]}


def test_the_sealer_refuses_what_the_decoder_refuses(key: Ed25519PrivateKey) -> None:
    """Nothing unreadable is ever signed: the same rules run at seal time."""
    args: dict[str, Any] = {"site": "S", "gateway": "g", "key": key, "batch_seq": 1, "prev_hash": GENESIS_HASH,
                            "config_hash": CONFIG_HASH}
    bad: list[Reading | Event] = [
        Reading(1, "T", "a\x00", "good", None, T0, None, None, None),  # type: ignore[arg-type]
        Reading(1, "T" * 129, 1.0, "good", None, T0, None, None, None),  # type: ignore[arg-type]
        Reading(1, "T", 2**64, "good", None, T0, None, None, None),  # type: ignore[arg-type]
        Event(1, "Qc", None, {}, T0, None, None),
        Event(1, "qc.result", None, {"k": "\x00"}, T0, None, None),
    ]
    for record in bad:
        with pytest.raises(ValueError):
            seal_batch([record], **args)
    fine = Reading(1, "T", "ok", "good", None, T0, None, None, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_seq is out of range"):
        seal_batch([fine], **{**args, "batch_seq": 0})


def test_a_canonical_header_is_still_required(key: Ed25519PrivateKey) -> None:
    header = canonical(header_for(compact(), key)).replace(b'"batch_seq":1', b'"batch_seq":01')
    with pytest.raises(MalformedBatch, match="not ASCII JSON"):
        open_batch(craft(header, compact(), key))


def test_the_deepest_nesting_the_sealer_writes_is_read(key: Ed25519PrivateKey) -> None:
    (event, _reading) = sorted(decode_records(open_batch(craft_document(compact(e=[e_with(data=deep(251))]), key))),
                               key=lambda r: r.seq, reverse=True)
    assert isinstance(event, Event) and str(event.data).count("{") == 251
