"""Sealing records into a signed batch, and opening a received batch without trusting it.

The signature and the chain hash always refer to the exact bytes on the wire: nothing is ever
re-serialised to be checked. The order on the receiving side is :func:`open_batch` (layout and
header), :func:`~blackbox.seal.verify.verify_batch` (signature), then :func:`decode_records`.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from operator import itemgetter
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from blackbox.model import Event, Reading, now_us
from blackbox.seal.codec import MAX_RECORDS_BYTES, CodecError, codec_names, get_codec
from blackbox.seal.document import ReadingRun, RowsRun, assemble
from blackbox.seal.errors import MalformedBatch
from blackbox.seal.header import FORMAT_VERSION, BatchHeader, decode_header, encode_header
from blackbox.seal.keys import key_id
from blackbox.seal.records import (
    RecordError,
    check_event_rows,
    records_of_rows,
    rows_of,
)
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
    max_bytes: int | None = None,
) -> SealedBatch:
    """Seal records into a signed batch.

    ``records`` must be non-empty, in ascending ``seq`` order with no gap (readings and events
    interleaved as the buffer numbered them). Raises ``ValueError`` for anything that cannot be
    sealed faithfully — NaN or infinity anywhere, a value JSON cannot carry, a gap — and
    ``TypeError`` if ``key`` is not an Ed25519 private key. ``sealed_at_us`` defaults to now.
    With ``max_bytes`` the batch holds the longest run of records whose document fits (see
    :func:`seal_rows`); ``header.last_seq`` says where it ends.
    """
    _check_key(key)
    if not records:
        raise ValueError("cannot seal an empty batch")
    _check_seqs(records)
    try:
        readings, events = rows_of(records)
    except RecordError as exc:
        raise ValueError(str(exc)) from None
    return seal_rows(readings, events, site=site, gateway=gateway, key=key, batch_seq=batch_seq,
                     prev_hash=prev_hash, config_hash=config_hash, clock=clock, compression=compression,
                     sealed_at_us=sealed_at_us, max_bytes=max_bytes)


def seal_rows(
    readings: Sequence[Sequence[Any]],
    events: Sequence[Sequence[Any]],
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
    max_bytes: int | None = None,
    readings_checked: bool = False,
) -> SealedBatch:
    """Seal rows already in the records document's layout.

    ``readings`` and ``events`` are each in ascending ``seq`` order and together must hold a
    contiguous run of seqs. With ``max_bytes``, only the longest run from the first seq whose
    records document is at most ``max_bytes`` bytes is sealed — the exact size, not an estimate —
    but never less than one record (a record larger than ``max_bytes`` is sealed alone).
    The rows are validated as the decoder validates them; ``ValueError`` names what is wrong.
    ``readings_checked``: the reading rows were made from columns that passed
    :func:`~blackbox.seal.records.reading_columns_pass`, so they are not checked again row by row.
    """
    try:
        _check_row_seqs(readings, events)
    except RecordError as exc:
        raise ValueError(str(exc)) from None
    return seal_runs(_runs_between(readings, events, readings_checked), events, site=site, gateway=gateway, key=key,
                     batch_seq=batch_seq, prev_hash=prev_hash, config_hash=config_hash, clock=clock,
                     compression=compression, sealed_at_us=sealed_at_us, max_bytes=max_bytes)


def seal_runs(
    runs: Iterable[ReadingRun],
    events: Sequence[Sequence[Any]],
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
    max_bytes: int | None = None,
) -> SealedBatch:
    """Seal runs of readings and event rows (the gateway's path): :func:`seal_rows`, with the readings
    made into rows one run at a time (:mod:`blackbox.seal.document`), so that a large batch never holds
    all its rows at once. The same rows give the same bytes as :func:`seal_rows`.
    """
    _check_key(key)
    if compression not in codec_names():
        raise ValueError(f"unknown compression {compression!r} (known: {', '.join(sorted(codec_names()))})")
    try:
        check_event_rows(events)
        document = assemble(runs, events, max_bytes)
    except RecordError as exc:
        raise ValueError(str(exc)) from None
    data = document.data
    if len(data) > MAX_RECORDS_BYTES:
        raise ValueError(f"records take {len(data)} bytes, over the {MAX_RECORDS_BYTES}-byte limit: seal fewer")
    payload = get_codec(compression).compress(data)
    header = BatchHeader(  # validates every field (ValueError)
        version=FORMAT_VERSION,
        gateway=gateway,
        site=site,
        key_id=key_id(key.public_key()),
        batch_seq=batch_seq,
        first_seq=document.first_seq,
        last_seq=document.last_seq,
        first_ts_us=document.first_ts_us,
        last_ts_us=document.last_ts_us,
        n_readings=document.n_readings,
        n_events=document.n_events,
        prev_hash=prev_hash,
        config_hash=config_hash,
        clock=clock,
        compression=compression,
        payload_sha256=hashlib.sha256(data).hexdigest(),
        sealed_at_us=now_us() if sealed_at_us is None else sealed_at_us,
    )
    signed = pack(encode_header(header), payload)
    return SealedBatch(header=header, wire=signed + key.sign(signed), hash=batch_hash(signed))


def _check_key(key: object) -> None:
    if not isinstance(key, Ed25519PrivateKey):
        raise TypeError(f"key must be an Ed25519PrivateKey, not {type(key).__name__}")


_SEQ, _READING_TS, _EVENT_TS = itemgetter(0), itemgetter(5), itemgetter(4)
"""A row's seq, a reading row's and an event row's ``ts_us``, taken at C speed (``map``)."""


def _check_row_seqs(readings: Sequence[Sequence[Any]], events: Sequence[Sequence[Any]]) -> None:
    """Each list strictly ascending, and together exactly one contiguous run of seqs."""
    n = len(readings) + len(events)
    if n == 0:
        raise RecordError("cannot seal an empty batch")
    r_seqs = list(map(_SEQ, readings))
    e_seqs = list(map(_SEQ, events))
    if not e_seqs and r_seqs == list(range(r_seqs[0], r_seqs[0] + n)):
        return  # the usual batch, checked at C speed
    for kind, seqs in (("reading", r_seqs), ("event", e_seqs)):
        if any(a >= b for a, b in pairwise(seqs)):
            raise RecordError(f"{kind} rows must be in strictly ascending seq order")
    every = r_seqs + e_seqs
    low, high = min(every), max(every)
    if high - low + 1 != n or len(set(every)) != n:
        raise RecordError(f"records must have contiguous ascending seqs: {n} records span {low}..{high}")


def _runs_between(readings: Sequence[Sequence[Any]], events: Sequence[Sequence[Any]], checked: bool,
                  ) -> list[RowsRun]:
    """The readings cut into runs of consecutive seqs where events fall between them (seqs checked)."""
    if not readings:
        return []
    if not events:
        return [RowsRun(readings, checked)]
    r_seqs = list(map(_SEQ, readings))
    cuts = sorted({0, len(readings), *(bisect_left(r_seqs, e[0]) for e in events)})
    return [RowsRun(readings[a:b], checked) for a, b in pairwise(cuts) if b > a]


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
    readings, events = records_of_rows(*decode_row_tuples(opened))
    merged: list[Reading | Event] = [*readings, *events]
    if events and readings:
        merged.sort(key=_seq)
    return merged


def decode_rows(opened: OpenedBatch) -> tuple[list[list[Any]], list[list[Any]]]:
    """Like :func:`decode_records`, but the checked rows as stored: ``(reading rows, event rows)``.

    Rows are in the records document's layout (docs/batch-format.md), each list in ``seq`` order,
    with ``quality`` as its string. For bulk consumers (the store's ingest): no objects are built.
    """
    readings, events = decode_row_tuples(opened)
    return [list(row) for row in readings], events


def decode_row_tuples(opened: OpenedBatch) -> tuple[list[tuple[Any, ...]], list[list[Any]]]:
    """Like :func:`decode_rows`, with each reading row a tuple: the cheapest form (the decoder's own)."""
    # imported here: msgspec and its typed rows hold 0.8 MiB, and a gateway that only seals
    # batches decodes one only to check a key rotation
    from blackbox.seal.fast_records import read_document

    try:
        readings, events = read_document(records_document(opened))
    except RecordError as exc:
        raise MalformedBatch(f"payload: {exc}") from None
    times = [r[5] for r in readings]
    check_against_header(opened.header, [r[0] for r in readings], min(times, default=None),
                         max(times, default=None), events)
    return readings, events


def _seq(record: Reading | Event) -> int:
    return record.seq


def records_document(opened: OpenedBatch) -> bytes:
    """The batch's records document, decompressed and checked against the header's ``payload_sha256``;
    raise :class:`MalformedBatch`. Its rows are not read (:func:`decode_row_tuples` reads them)."""
    header = opened.header
    try:
        document = get_codec(header.compression).decompress(opened.payload, MAX_RECORDS_BYTES)
    except CodecError as exc:
        raise MalformedBatch(f"payload: {exc}") from None
    if hashlib.sha256(document).hexdigest() != header.payload_sha256:
        raise MalformedBatch("payload does not match the header's payload_sha256")
    return document


def check_against_header(header: BatchHeader, r_seqs: list[int], r_first_ts: int | None, r_last_ts: int | None,
                         events: list[list[Any]]) -> None:
    """Raise :class:`MalformedBatch` unless the records are exactly the header's counts, seq range and time range.

    The readings come as columns: their seqs in document order and their earliest and latest times
    (``None`` without readings).
    """
    if len(r_seqs) != header.n_readings or len(events) != header.n_events:
        raise MalformedBatch(
            f"payload holds {len(r_seqs)} readings and {len(events)} events, "
            f"the header says {header.n_readings} and {header.n_events}"
        )
    e_seqs = [e[0] for e in events]
    # the usual batch, readings only, in order, exactly the range (which the header's counts bound): one comparison
    if e_seqs or r_seqs != list(range(header.first_seq, header.last_seq + 1)):
        _check_seqs_against_header(header, r_seqs, e_seqs)
    times = [e[4] for e in events]
    if r_first_ts is not None and r_last_ts is not None:
        times += (r_first_ts, r_last_ts)
    if min(times) != header.first_ts_us or max(times) != header.last_ts_us:
        raise MalformedBatch("payload timestamps do not match the header's first_ts_us/last_ts_us")


def _check_seqs_against_header(header: BatchHeader, r_seqs: list[int], e_seqs: list[int]) -> None:
    for kind, seqs in (("readings", r_seqs), ("events", e_seqs)):
        if any(a >= b for a, b in pairwise(seqs)):
            raise MalformedBatch(f"payload {kind} are not in strictly ascending seq order")
    every = r_seqs + e_seqs
    n = len(every)
    if (n == 0 or min(every) != header.first_seq or max(every) != header.last_seq
            or header.last_seq - header.first_seq + 1 != n or len(set(every)) != n):
        raise MalformedBatch(f"payload seqs are not exactly {header.first_seq}..{header.last_seq}")
