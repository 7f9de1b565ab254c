"""Sealing records into a signed batch, and opening a received batch without trusting it.

The signature and the chain hash always refer to the exact bytes on the wire: nothing is ever
re-serialised to be checked. The order on the receiving side is :func:`open_batch` (layout and
header), :func:`~blackbox.seal.verify.verify_batch` (signature), then :func:`decode_records`.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from operator import itemgetter
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from blackbox.model import Event, Reading, now_us
from blackbox.seal.codec import MAX_RECORDS_BYTES, CodecError, codec_names, get_codec
from blackbox.seal.errors import MalformedBatch
from blackbox.seal.fast_records import read_document
from blackbox.seal.header import FORMAT_VERSION, BatchHeader, decode_header, encode_header
from blackbox.seal.keys import key_id
from blackbox.seal.records import (
    DOCUMENT_OVERHEAD,
    RecordError,
    check_event_rows,
    check_reading_rows,
    dump_document,
    dump_row,
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
    """Seal rows already in the records document's layout (the gateway's fast path).

    ``readings`` and ``events`` are each in ascending ``seq`` order and together must hold a
    contiguous run of seqs. With ``max_bytes``, only the longest run from the first seq whose
    records document is at most ``max_bytes`` bytes is sealed — the exact size, not an estimate —
    but never less than one record (a record larger than ``max_bytes`` is sealed alone).
    The rows are validated as the decoder validates them; ``ValueError`` names what is wrong.
    ``readings_checked``: the reading rows were made from columns that passed
    :func:`~blackbox.seal.records.reading_columns_pass` (the gateway buffer checks its blocks so),
    so they are not checked again row by row.
    """
    _check_key(key)
    if compression not in codec_names():
        raise ValueError(f"unknown compression {compression!r} (known: {', '.join(sorted(codec_names()))})")
    try:
        if not readings_checked:
            check_reading_rows(readings)
        check_event_rows(events)
        _check_row_seqs(readings, events)
        document = dump_document(readings, events)
        if max_bytes is not None and len(document) > max_bytes:
            readings, events = _fitting_prefix(readings, events, max_bytes, len(document))
            document = dump_document(readings, events)
    except RecordError as exc:
        raise ValueError(str(exc)) from None
    if len(document) > MAX_RECORDS_BYTES:
        raise ValueError(f"records take {len(document)} bytes, over the {MAX_RECORDS_BYTES}-byte limit: seal fewer")
    payload = get_codec(compression).compress(document)

    ends = [rows[i][0] for rows in (readings, events) if rows for i in (0, -1)]  # each list ascends (checked)
    times = [*map(_READING_TS, readings), *map(_EVENT_TS, events)]
    header = BatchHeader(  # validates every field (ValueError)
        version=FORMAT_VERSION,
        gateway=gateway,
        site=site,
        key_id=key_id(key.public_key()),
        batch_seq=batch_seq,
        first_seq=min(ends),
        last_seq=max(ends),
        first_ts_us=min(times),
        last_ts_us=max(times),
        n_readings=len(readings),
        n_events=len(events),
        prev_hash=prev_hash,
        config_hash=config_hash,
        clock=clock,
        compression=compression,
        payload_sha256=hashlib.sha256(document).hexdigest(),
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


def _fitting_prefix(
    readings: Sequence[Sequence[Any]], events: Sequence[Sequence[Any]], max_bytes: int, size: int
) -> tuple[Sequence[Sequence[Any]], Sequence[Sequence[Any]]]:
    """The rows up to the highest seq whose records document is at most ``max_bytes`` long.

    ``size`` is the length of the document of all the rows. The document is
    ``{"e":[E1,E2,...],"r":[R1,R2,...]}`` and each row serialises to the same bytes alone as inside
    the document, so a document's size changes by exactly one row's size (and a comma) per record
    added or removed. Rather than serialise every row (a third of the sealer's CPU when batches hit
    the cap), the count that fits is guessed from the mean record size, that prefix's document
    measured, and the exact end found by adding or removing records one by one from there.
    """
    r_seqs = [row[0] for row in readings]
    e_seqs = [row[0] for row in events]
    seqs = sorted(r_seqs + e_seqs)  # the records in seq order (the caller checked them)
    n = len(seqs)

    def record(k: int) -> tuple[bool, int]:
        """Whether the ``k``-th record (0-based, seq order) is a reading, and its index in its list."""
        i = bisect_left(r_seqs, seqs[k])
        return (True, i) if i < len(r_seqs) and r_seqs[i] == seqs[k] else (False, bisect_left(e_seqs, seqs[k]))

    def measured(k: int) -> tuple[int, int, int]:
        """Readings and events among the first ``k`` records, and the size of their document."""
        n_r, n_e = bisect_right(r_seqs, seqs[k - 1]), bisect_right(e_seqs, seqs[k - 1])
        return n_r, n_e, len(dump_document(readings[:n_r], events[:n_e]))

    k = max(1, min(n - 1, (n * (max_bytes - DOCUMENT_OVERHEAD)) // max(size - DOCUMENT_OVERHEAD, 1)))
    n_r, n_e, size = measured(k)
    while k < n:  # add the next record while it fits
        is_reading, i = record(k)
        grown = size + len(dump_row(readings[i] if is_reading else events[i])) + (1 if (n_r if is_reading else n_e)
                                                                                  else 0)
        if grown > max_bytes:
            break
        size, k = grown, k + 1
        n_r, n_e = (n_r + 1, n_e) if is_reading else (n_r, n_e + 1)
    while size > max_bytes and k > 1:  # remove the last record until the rest fits
        is_reading, i = record(k - 1)
        size -= len(dump_row(readings[i] if is_reading else events[i])) + (1 if (n_r if is_reading else n_e) > 1
                                                                           else 0)
        k -= 1
        n_r, n_e = (n_r - 1, n_e) if is_reading else (n_r, n_e - 1)
    return readings[:n_r], events[:n_e]


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
