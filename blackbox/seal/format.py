"""Sealing records into a signed batch, and opening a received batch without trusting it.

The signature and the chain hash always refer to the exact bytes on the wire: nothing is ever
re-serialised to be checked. The order on the receiving side is :func:`open_batch` (layout and
header), :func:`~blackbox.seal.verify.verify_batch` (signature), then :func:`decode_records`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from blackbox.model import Event, Reading, now_us
from blackbox.seal.codec import MAX_RECORDS_BYTES, CodecError, codec_names, get_codec
from blackbox.seal.errors import MalformedBatch
from blackbox.seal.header import FORMAT_VERSION, BatchHeader, decode_header, encode_header
from blackbox.seal.keys import key_id
from blackbox.seal.records import RecordError, decode_records_document, encode_records
from blackbox.seal.wire import batch_hash, pack, split


@dataclass(frozen=True, slots=True)
class SealedBatch:
    """A batch just sealed: ``wire`` is what to publish, ``hash`` the next batch's ``prev_hash``."""

    header: BatchHeader
    wire: bytes
    hash: str


@dataclass(frozen=True, slots=True)
class OpenedBatch:
    """A received batch, cut into its parts; the signature is NOT verified yet.

    ``payload`` is the compressed records as on the wire; ``hash`` is the chain hash.
    """

    header: BatchHeader
    wire: bytes
    hash: str
    signed_bytes: bytes
    signature: bytes
    payload: bytes


def seal_batch(
    records: Sequence[Reading | Event],
    *,
    site: str,
    gateway: str,
    key: Ed25519PrivateKey,
    batch_seq: int,
    prev_hash: str,
    config_hash: str,
    clock: str = "ok",
    compression: str = "zstd",
    sealed_at_us: int | None = None,
) -> SealedBatch:
    """Seal records into a signed batch.

    ``records`` must be non-empty, in ascending ``seq`` order with no gap (readings and events
    interleaved as the buffer numbered them). Raises ``ValueError`` for anything that cannot be
    sealed faithfully — NaN or infinity anywhere, a value JSON cannot carry, a gap — and
    ``TypeError`` if ``key`` is not an Ed25519 private key. ``sealed_at_us`` defaults to now.
    """
    if not isinstance(key, Ed25519PrivateKey):
        raise TypeError(f"key must be an Ed25519PrivateKey, not {type(key).__name__}")
    if not records:
        raise ValueError("cannot seal an empty batch")
    if compression not in codec_names():
        raise ValueError(f"unknown compression {compression!r} (known: {', '.join(sorted(codec_names()))})")
    _check_seqs(records)

    try:
        document = encode_records(records)
    except RecordError as exc:
        raise ValueError(str(exc)) from None
    if len(document) > MAX_RECORDS_BYTES:
        raise ValueError(f"records take {len(document)} bytes, over the {MAX_RECORDS_BYTES}-byte limit: seal fewer")
    payload = get_codec(compression).compress(document)

    n_readings = sum(1 for r in records if isinstance(r, Reading))
    times = [r.ts_us for r in records]
    header = BatchHeader(  # validates every field (ValueError)
        version=FORMAT_VERSION,
        gateway=gateway,
        site=site,
        key_id=key_id(key.public_key()),
        batch_seq=batch_seq,
        first_seq=records[0].seq,
        last_seq=records[-1].seq,
        first_ts_us=min(times),
        last_ts_us=max(times),
        n_readings=n_readings,
        n_events=len(records) - n_readings,
        prev_hash=prev_hash,
        config_hash=config_hash,
        clock=clock,
        compression=compression,
        payload_sha256=hashlib.sha256(document).hexdigest(),
        sealed_at_us=now_us() if sealed_at_us is None else sealed_at_us,
    )
    signed = pack(encode_header(header), payload)
    return SealedBatch(header=header, wire=signed + key.sign(signed), hash=batch_hash(signed))


def _check_seqs(records: Sequence[Reading | Event]) -> None:
    previous: int | None = None
    for record in records:
        seq = getattr(record, "seq", None)
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise ValueError(f"record has no integer seq: {record!r}")
        if previous is not None and seq != previous + 1:
            raise ValueError(f"records must have contiguous ascending seqs: {seq} follows {previous}")
        previous = seq


def open_batch(wire: bytes | bytearray | memoryview) -> OpenedBatch:
    """Cut a received batch into its parts and validate its header; raise :class:`MalformedBatch`.

    Does not check the signature (:func:`~blackbox.seal.verify.verify_batch`) nor decompress the
    records (:func:`decode_records`).
    """
    if not isinstance(wire, bytes):
        if not isinstance(wire, (bytearray, memoryview)):
            raise TypeError(f"a batch is bytes, not {type(wire).__name__}")
        wire = bytes(wire)
    parts = split(wire)
    header = decode_header(parts.header)
    return OpenedBatch(
        header=header,
        wire=wire,
        hash=batch_hash(parts.signed),
        signed_bytes=parts.signed,
        signature=parts.signature,
        payload=parts.payload,
    )


def decode_records(opened: OpenedBatch) -> list[Reading | Event]:
    """The batch's records in ``seq`` order, checked against the header; raise :class:`MalformedBatch`.

    Checks: the payload decompresses within the size limit, its SHA-256 is the header's
    ``payload_sha256``, every row is well-typed, and the records are exactly the header's counts,
    seq range and time range.
    """
    header = opened.header
    try:
        document = get_codec(header.compression).decompress(opened.payload, MAX_RECORDS_BYTES)
    except CodecError as exc:
        raise MalformedBatch(f"payload: {exc}") from None
    if hashlib.sha256(document).hexdigest() != header.payload_sha256:
        raise MalformedBatch("payload does not match the header's payload_sha256")
    try:
        readings, events = decode_records_document(document)
    except RecordError as exc:
        raise MalformedBatch(f"payload: {exc}") from None
    if len(readings) != header.n_readings or len(events) != header.n_events:
        raise MalformedBatch(
            f"payload holds {len(readings)} readings and {len(events)} events, "
            f"the header says {header.n_readings} and {header.n_events}"
        )
    for kind, seqs in (("readings", [r.seq for r in readings]), ("events", [e.seq for e in events])):
        if any(a >= b for a, b in pairwise(seqs)):
            raise MalformedBatch(f"payload {kind} are not in strictly ascending seq order")
    merged: list[Reading | Event] = sorted([*readings, *events], key=lambda r: r.seq)
    if [r.seq for r in merged] != list(range(header.first_seq, header.last_seq + 1)):
        raise MalformedBatch(f"payload seqs are not exactly {header.first_seq}..{header.last_seq}")
    times = [r.ts_us for r in merged]
    if min(times) != header.first_ts_us or max(times) != header.last_ts_us:
        raise MalformedBatch("payload timestamps do not match the header's first_ts_us/last_ts_us")
    return merged
