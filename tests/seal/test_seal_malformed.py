"""Validly signed but malformed batches (a buggy or compromised gateway) give MalformedBatch.

Every wire here carries a correct signature, so only the layout, header and record checks stand
between it and the store. Each case also checks the reason, to be sure the intended check fired.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from typing import Any

import pytest
import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from blackbox.model import Event
from blackbox.seal import MAX_RECORDS_BYTES, MalformedBatch, decode_records, open_batch, verify_batch

from .helpers import canonical, craft, craft_document, header_for

GOOD_R = [1, "T", 1.5, "good", None, 10, None, None, None]
GOOD_E = [2, "qc.result", "pH", {"value": 5.5}, 11, "B1", "fill"]


def doc(r: list[Any] | None = None, e: list[Any] | None = None) -> bytes:
    return json.dumps({"e": [GOOD_E] if e is None else e, "r": [GOOD_R] if r is None else r}).encode()


def rejected(wire: bytes, key: Ed25519PrivateKey, match: str) -> None:
    with pytest.raises(MalformedBatch, match=match):
        opened = open_batch(wire)
        verify_batch(opened, key.public_key())  # passes: the forger has the key
        decode_records(opened)


def test_the_baseline_is_accepted(key: Ed25519PrivateKey) -> None:
    records = decode_records(open_batch(craft_document(doc(), key)))
    assert [r.seq for r in records] == [1, 2]


# --- layout -------------------------------------------------------------------------------------


def test_bad_magic(key: Ed25519PrivateKey) -> None:
    wire = craft_document(doc(), key)
    signed = b"BBX2" + wire[4:-64]
    rejected(signed + key.sign(signed), key, "not a blackbox batch")


@pytest.mark.parametrize(
    ("hlen", "match"), [(0xFFFFFFFF, "header length"), (70_000, "exceeds"), (1_000, "runs past the end")]
)
def test_header_length_lies(key: Ed25519PrivateKey, hlen: int, match: str) -> None:
    wire = craft_document(doc(), key)
    signed = wire[:4] + struct.pack(">I", hlen) + wire[8:-64]
    rejected(signed + key.sign(signed), key, match)


def test_payload_length_lies(key: Ed25519PrivateKey) -> None:
    hbytes = canonical(header_for(doc(), key))
    for plen, match in ((0xFFFFFFFF, "exceeds"), (5, "length mismatch")):
        signed = b"BBX1" + struct.pack(">I", len(hbytes)) + hbytes + struct.pack(">I", plen) + doc()
        rejected(signed + key.sign(signed), key, match)


def test_empty_and_tiny_inputs(key: Ed25519PrivateKey) -> None:
    for wire in (b"", b"BBX1", b"\x00" * 75):
        rejected(wire, key, "too short")


# --- header -------------------------------------------------------------------------------------


def header_case(key: Ed25519PrivateKey, **over: Any) -> bytes:
    return craft(header_for(doc(), key, **over), doc(), key)


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"version": 2}, "unsupported format version 2"),
        ({"version": True}, "must be an integer"),
        ({"batch_seq": -1}, "out of range"),
        ({"batch_seq": "0"}, "must be an integer"),
        ({"first_seq": 2**63}, "out of range"),
        ({"gateway": "gw/1"}, "gateway must be an identifier"),
        ({"site": ""}, "site must be an identifier"),
        ({"gateway": 7}, "must be a string"),
        ({"key_id": "ABCDEF0123456789"}, "key_id"),
        ({"prev_hash": "0" * 63}, "prev_hash"),
        ({"config_hash": "g" * 64}, "config_hash"),
        ({"payload_sha256": None}, "must be a string"),
        ({"clock": "Stepped badly"}, "clock"),
        ({"compression": "lzma"}, "unknown compression"),
        ({"first_seq": 3, "last_seq": 2}, "after last_seq"),
        ({"n_events": 5}, "does not hold"),
        ({"first_ts_us": 12, "last_ts_us": 10}, "after last_ts_us"),
    ],
)
def test_invalid_header_fields(key: Ed25519PrivateKey, over: dict[str, Any], match: str) -> None:
    rejected(header_case(key, **over), key, match)


def test_missing_and_unknown_header_fields(key: Ed25519PrivateKey) -> None:
    header = header_for(doc(), key)
    del header["clock"]
    header["comment"] = "hi"
    rejected(craft(header, doc(), key), key, "missing clock; unknown comment")


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda h: h.replace(b",", b", ", 1), "canonical"),
        (lambda h: b" " + h, "canonical"),
        (lambda h: h.replace(b'"clock":"ok"', b'"clock":"\\u006fk"'), "canonical"),
        (lambda h: h[:-1] + b',"clock":"ok"}', "canonical"),  # duplicate key
        (lambda h: h.replace(b'"batch_seq":1', b'"batch_seq":1.0'), "floats are not allowed"),
        (lambda h: h.replace(b'"batch_seq":1', b'"batch_seq":NaN'), "floats are not allowed"),
        (lambda h: h.replace(b'"batch_seq":1', b'"batch_seq":1e2'), "floats are not allowed"),
        (lambda h: h.replace(b'"clock":"ok"', '"clock":"ök"'.encode()), "not ASCII JSON"),
        (lambda h: h[:-1], "not ASCII JSON"),
        (lambda h: b"[" * 60_000, "not ASCII JSON"),
        (lambda h: b"[]", "not a JSON object"),
        (lambda h: b"", "not ASCII JSON"),
    ],
)
def test_non_canonical_or_invalid_header_bytes(key: Ed25519PrivateKey, mutate: Any, match: str) -> None:
    rejected(craft(mutate(canonical(header_for(doc(), key))), doc(), key), key, match)


# --- records ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "match"),
    [
        (b"not json", "not valid JSON"),
        (b'{"e":[],"r":["\xff"]}', "not valid JSON"),
        (b"[]", "exactly the keys"),
        (b'{"r":[]}', "exactly the keys"),
        (b'{"e":[],"r":[],"x":[]}', "exactly the keys"),
        (b'{"e":{},"r":[]}', "must be lists"),
        (doc(r=[GOOD_R[:8]]), "list of 9 fields"),
        (doc(r=[[*GOOD_R, None]]), "list of 9 fields"),
        (doc(r=[{"seq": 1}]), "list of 9 fields"),
        (doc(e=[GOOD_E[:6]]), "list of 7 fields"),
        (doc(r=[["1", *GOOD_R[1:]]]), r"seq must be an integer, not str"),
        (doc(r=[[True, *GOOD_R[1:]]]), r"seq must be an integer, not bool"),
        (doc(r=[[1.0, *GOOD_R[1:]]]), r"seq must be an integer, not float"),
        (doc(r=[[-1, *GOOD_R[1:]]]), r"seq is out of range"),
        (doc(r=[[2**64, *GOOD_R[1:]]]), r"integer 18446744073709551616, outside"),  # orjson: a float
        (doc(r=[[1, "", *GOOD_R[2:]]]), r"tag must not be empty"),
        (doc(r=[[1, 5, *GOOD_R[2:]]]), r"tag must be a string"),
        (doc(r=[[1, "T", [1], *GOOD_R[3:]]]), r"value has type list"),
        (doc(r=[[1, "T", {"a": 1}, *GOOD_R[3:]]]), r"value has type dict"),
        (doc(r=[[1, "T", 1, "excellent", *GOOD_R[4:]]]), r"quality must be one of"),
        (doc(r=[[1, "T", 1, None, *GOOD_R[4:]]]), r"quality must be one of"),
        (doc(r=[[1, "T", 1, "bad", 3, *GOOD_R[5:]]]), r"reason must be a string"),
        (doc(r=[[1, "T", 1, "good", None, 10.5, None, None, None]]), r"ts_us must be an integer"),
        (doc(r=[[1, "T", 1, "good", None, 10, "now", None, None]]), r"source_ts_us must be an integer"),
        (doc(r=[[1, "T", 1, "good", None, 10, None, 42, None]]), r"batch must be a string"),
        (doc(r=[[1, "T", 1, "good", None, 10, None, None, False]]), r"phase must be a string"),
        (doc(e=[[2, "", None, {}, 11, None, None]]), r"type must not be empty"),
        (doc(e=[[2, "x", 3, {}, 11, None, None]]), r"subject must be a string"),
        (doc(e=[[2, "x", None, [1], 11, None, None]]), r"data must be an object"),
        (doc(e=[[2, "x", None, None, 11, None, None]]), r"data must be an object"),
        (b'{"e":[[2,"x",null,' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b',11,null,null]],"r":[]}', "not valid"),
    ],
)
def test_malformed_records(key: Ed25519PrivateKey, document: bytes, match: str) -> None:
    rejected(craft_document(document, key), key, match)


def test_deep_but_valid_event_data_is_accepted(key: Ed25519PrivateKey) -> None:
    depth = 200
    data = b'{"a":' * depth + b"1.5" + b"}" * depth
    document = b'{"e":[[1,"x",null,' + data + b',11,null,null]],"r":[]}'
    (event,) = decode_records(open_batch(craft_document(document, key)))
    assert isinstance(event, Event)
    node: Any = event.data
    for _ in range(depth):
        node = node["a"]
    assert node == 1.5


@pytest.mark.parametrize(
    ("document", "over", "match"),
    [
        (doc(), {"n_readings": 2, "n_events": 0}, "holds 1 readings and 1 events"),
        (doc(r=[GOOD_R, [2, *GOOD_R[1:]]], e=[]), {"n_readings": 1, "n_events": 1}, "holds 2 readings"),
        (doc(e=[[1, *GOOD_E[1:]]]), {"last_seq": 2}, "not exactly 1..2"),  # duplicate seq
        (doc(), {"first_seq": 5, "last_seq": 6}, "not exactly 5..6"),
        (doc(r=[[3, *GOOD_R[1:]], GOOD_R], e=[]), {"first_seq": 1, "last_seq": 2}, "readings are not in strictly"),
        (doc(), {"first_ts_us": 9}, "timestamps do not match"),
        (doc(), {"last_ts_us": 12}, "timestamps do not match"),
        (doc(), {"payload_sha256": hashlib.sha256(b"other").hexdigest()}, "payload_sha256"),
    ],
)
def test_records_disagree_with_header(
    key: Ed25519PrivateKey, document: bytes, over: dict[str, Any], match: str
) -> None:
    rejected(craft_document(document, key, **over), key, match)


# --- compression --------------------------------------------------------------------------------


def with_payload(key: Ed25519PrivateKey, document: bytes, payload: bytes, compression: str) -> bytes:
    return craft(header_for(document, key, compression), payload, key)


@pytest.mark.parametrize(
    ("compression", "payload", "match"),
    [
        ("zstd", b"garbage", "corrupt zstd"),
        ("zstd", zstandard.ZstdCompressor().compress(doc()) + b"x", "corrupt zstd"),  # trailing junk
        ("zstd", zstandard.ZstdCompressor().compress(doc()) * 2, "corrupt zstd"),  # a second frame
        ("zstd", zstandard.ZstdCompressor().compress(doc())[:-3], "corrupt zstd"),
        ("zlib", b"garbage", "corrupt zlib"),
        ("zlib", zlib.compress(doc()) + b"x", "bytes after the end"),
        ("zlib", zlib.compress(doc())[:-3], "truncated zlib"),
        ("zlib", zlib.compress(doc(), wbits=-15), "corrupt zlib"),  # raw deflate is not the format
    ],
)
def test_corrupt_compressed_payloads(key: Ed25519PrivateKey, compression: str, payload: bytes, match: str) -> None:
    rejected(with_payload(key, doc(), payload, compression), key, match)


def test_zstd_bomb_with_declared_size(key: Ed25519PrivateKey) -> None:
    bomb = zstandard.ZstdCompressor().compress(b"\0" * (MAX_RECORDS_BYTES + 1))
    assert len(bomb) < 10_000
    rejected(with_payload(key, doc(), bomb, "zstd"), key, "more than the 67108864-byte limit")


def test_zstd_bomb_without_declared_size(key: Ed25519PrivateKey) -> None:
    bomb = zstandard.ZstdCompressor(write_content_size=False).compress(b"\0" * (MAX_RECORDS_BYTES + 1))
    assert zstandard.frame_content_size(bomb) == -1
    rejected(with_payload(key, doc(), bomb, "zstd"), key, "does not declare its content size")


@pytest.mark.parametrize("compression", ["zlib", "none"])
def test_bomb_over_a_lowered_limit(key: Ed25519PrivateKey, monkeypatch: pytest.MonkeyPatch, compression: str) -> None:
    """Same checks as above for the other codecs, with the limit lowered to keep the test fast."""
    monkeypatch.setattr("blackbox.seal.format.MAX_RECORDS_BYTES", 1 << 20)
    big = b"\0" * ((1 << 20) + 1)
    payload = zlib.compress(big) if compression == "zlib" else big
    rejected(with_payload(key, doc(), payload, compression), key, "more than the 1048576-byte limit|larger than")


def test_zlib_bomb_at_the_real_limit_is_bounded(key: Ed25519PrivateKey) -> None:
    bomb = zlib.compress(b"\0" * (MAX_RECORDS_BYTES + 1), 1)
    rejected(with_payload(key, doc(), bomb, "zlib"), key, "more than the 67108864-byte limit")
