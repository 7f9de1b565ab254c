"""Sealing then opening gives back exactly the records, with their exact types."""

from __future__ import annotations

import hashlib
import json
import struct
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from blackbox.model import Event, Reading
from blackbox.seal import (
    FORMAT_VERSION,
    GENESIS_HASH,
    BatchHeader,
    decode_records,
    key_id,
    link_problems,
    open_batch,
    seal_batch,
    verify_batch,
)
from blackbox.seal.codec import Codec, codec_names, get_codec, register_codec

from .helpers import make_records


def deep_types(value: Any) -> Any:
    """A structure that differs whenever types differ (1 vs 1.0 vs True, -0.0 vs 0.0)."""
    if isinstance(value, dict):
        return {k: deep_types(v) for k, v in value.items()}
    if isinstance(value, list):
        return [deep_types(v) for v in value]
    if isinstance(value, float):
        return ("float", value.hex())
    return (type(value).__name__, value)


def record_types(records: list[Reading | Event]) -> list[Any]:
    out: list[tuple[Any, ...]] = []
    for r in records:
        if isinstance(r, Reading):
            out.append(("R", r.seq, deep_types(r.value), r.quality, r.ts_us, r.source_ts_us, r.batch, r.phase))
        else:
            out.append(("E", r.seq, r.type, r.subject, deep_types(r.data), r.ts_us, r.batch, r.phase))
    return out


@pytest.mark.parametrize("compression", ["zstd", "zlib", "none"])
def test_round_trip_keeps_every_value_and_type(
    records: list[Reading | Event], seal_args: dict[str, Any], key: Ed25519PrivateKey, compression: str
) -> None:
    sealed = seal_batch(records, compression=compression, **seal_args)
    opened = open_batch(sealed.wire)
    verify_batch(opened, key.public_key())
    decoded = decode_records(opened)

    assert decoded == records
    assert record_types(decoded) == record_types(records)
    assert [type(r) for r in decoded] == [type(r) for r in records]
    assert opened.header == sealed.header
    assert opened.hash == sealed.hash


def test_header_describes_the_batch(records: list[Reading | Event], seal_args: dict[str, Any]) -> None:
    h = seal_batch(records, clock="stepped", **seal_args).header
    n_events = sum(isinstance(r, Event) for r in records)
    assert h.version == FORMAT_VERSION
    assert (h.site, h.gateway) == ("SH-PD-01", "gw-1")
    assert h.key_id == key_id(seal_args["key"].public_key())
    assert (h.first_seq, h.last_seq) == (records[0].seq, records[-1].seq)
    assert (h.n_readings, h.n_events) == (len(records) - n_events, n_events)
    # the time range is min/max, not first/last: the first event is older than the first reading
    assert h.first_ts_us == min(r.ts_us for r in records) < records[0].ts_us
    assert h.last_ts_us == max(r.ts_us for r in records)
    assert h.prev_hash == GENESIS_HASH
    assert h.clock == "stepped"
    assert h.compression == "zstd"
    assert h.sealed_at_us == seal_args["sealed_at_us"]


def test_wire_layout_matches_the_document(records: list[Reading | Event], seal_args: dict[str, Any]) -> None:
    sealed = seal_batch(records, compression="none", **seal_args)
    wire = sealed.wire
    assert wire[:4] == b"BBX1"
    (hlen,) = struct.unpack(">I", wire[4:8])
    header_bytes = wire[8 : 8 + hlen]
    header = json.loads(header_bytes)
    assert header_bytes == json.dumps(header, sort_keys=True, separators=(",", ":")).encode("ascii")
    assert all(isinstance(v, (int, str)) and not isinstance(v, bool) for v in header.values())
    assert BatchHeader(**header) == sealed.header
    (plen,) = struct.unpack(">I", wire[8 + hlen : 12 + hlen])
    document = wire[12 + hlen : 12 + hlen + plen]
    assert len(wire) == 12 + hlen + plen + 64
    assert hashlib.sha256(document).hexdigest() == header["payload_sha256"]
    assert sealed.hash == hashlib.sha256(wire[:-64]).hexdigest()
    doc = json.loads(document)
    assert set(doc) == {"e", "r"}
    assert [row[0] for row in doc["r"]] == [r.seq for r in records if isinstance(r, Reading)]


def test_sealing_is_deterministic(records: list[Reading | Event], seal_args: dict[str, Any]) -> None:
    assert seal_batch(records, **seal_args).wire == seal_batch(records, **seal_args).wire


def test_accepts_bytearray_and_memoryview(records: list[Reading | Event], seal_args: dict[str, Any]) -> None:
    wire = seal_batch(records, **seal_args).wire
    assert open_batch(bytearray(wire)).wire == wire
    assert open_batch(memoryview(wire)).wire == wire
    with pytest.raises(TypeError):
        open_batch("text")  # type: ignore[arg-type]


def test_single_record_and_events_only(seal_args: dict[str, Any]) -> None:
    only_event = [r for r in make_records() if isinstance(r, Event)][:1]
    sealed = seal_batch(only_event, **seal_args)
    assert decode_records(open_batch(sealed.wire)) == only_event
    assert (sealed.header.n_readings, sealed.header.n_events) == (0, 1)


def test_chain_links(key: Ed25519PrivateKey, seal_args: dict[str, Any]) -> None:
    first = seal_batch(make_records(1), **seal_args)
    n = first.header.last_seq + 1
    args = {**seal_args, "batch_seq": 2, "prev_hash": first.hash}
    second = seal_batch(make_records(n), **args)
    assert link_problems(first, second) == []
    assert link_problems(open_batch(first.wire), open_batch(second.wire)) == []

    replay = seal_batch(make_records(n), **{**seal_args, "batch_seq": 1})  # prev_hash = genesis
    assert any("prev_hash" in p for p in link_problems(first, replay))
    skipped = seal_batch(make_records(n + 5), **{**args, "batch_seq": 3})
    problems = link_problems(first, skipped)
    assert any("batch_seq" in p for p in problems) and any("jumps" in p for p in problems)


def test_compression_is_pluggable(records: list[Reading | Event], seal_args: dict[str, Any]) -> None:
    assert {"none", "zlib", "zstd"} <= codec_names()
    reverse = Codec("test-reversed", lambda d: bytes(d)[::-1],
                    lambda d, limit: get_codec("none").decompress(d[::-1], limit))
    register_codec(reverse)
    sealed = seal_batch(records, compression="test-reversed", **seal_args)
    assert decode_records(open_batch(sealed.wire)) == records
