"""Proving a sealed batch's stored reading chunks without deriving them again: encode them, compare bytes.

The re-verification (``blackbox store verify``, the trace report) must show that the stored reading
chunks of a sealed batch are exactly those :func:`blackbox.store.derive.derive` makes of its signed
records document. Deriving them again means decoding every reading of the JSON into Python objects
and regrouping them into columns: about 1.5 µs per reading, seconds for a production batch of a
million readings. This goes the other way: the stored chunks' readings are put back into the
document's row layout and encoded as the sealer encodes them (orjson, about 0.1 µs per reading),
and the bytes are compared with the signed document's readings list.

Equal bytes prove the rows, step by step (each step is a check below; if one fails,
:func:`derive_confirmed` returns ``None`` and the caller derives the batch as before, which names
each difference):

1. Each stored chunk is the chunk :func:`blackbox.store.chunks.pack_chunk` makes of its own
   readings, so it holds no byte its readings do not determine; its seqs ascend; its gateway and
   sealed batch are the batch's; no other chunk of the batch has its (tag, production batch,
   phase). Derive's grouping of those readings therefore gives exactly these chunks.
2. The readings are what the record format accepts and JSON carries exactly: finite floats,
   known qualities, names neither empty nor longer than allowed, no NUL character.
3. All the chunks' readings in seq order, encoded, are byte for byte the document's readings list.
   JSON decoding is a function of the bytes, so the signed readings are these readings, and
   derive makes the stored chunks of them. The header's counts, seq and time ranges are then
   checked on them as the decoder checks them (:func:`blackbox.seal.format.check_against_header`).

A document another sealer wrote (other spacing, number forms or escapes) never compares equal: it
is derived as before. The events (a few per batch) are always decoded and derived.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise, repeat
from operator import itemgetter
from typing import Any

import orjson

from blackbox.seal import MalformedBatch, OpenedBatch, RotationError
from blackbox.seal.fast_records import read_events, split_document
from blackbox.seal.format import check_against_header, records_document
from blackbox.seal.records import MAX_NAME, RecordError
from blackbox.store.chunks import CHUNK_COLUMNS, QUALITY_NAMES, ChunkError, _unpack, decode_tuple, pack_chunk
from blackbox.store.derive import Derived, derive_with_chunks

_GATEWAY = CHUNK_COLUMNS.index("gateway_id")
_BATCH_SEQ = CHUNK_COLUMNS.index("batch_seq")
_FIRST_SEQ = CHUNK_COLUMNS.index("first_seq")
_KEY = slice(CHUNK_COLUMNS.index("tag"), CHUNK_COLUMNS.index("phase") + 1)
_SEQ = itemgetter(0)


@dataclass(frozen=True, slots=True)
class Confirmed:
    """What the header checks need of the confirmed readings."""

    seqs: list[int]
    """Every reading's seq, in the document's order."""
    first_ts_us: int | None
    last_ts_us: int | None


def derive_confirmed(opened: OpenedBatch, gateway_id: int, stored: Sequence[tuple[Any, ...]]) -> Derived | None:
    """:func:`blackbox.store.derive.derive`'s rows of a verified batch, with ``stored`` as its reading chunks
    if they are proven to be exactly the ones it derives (else ``None``: derive it).

    ``stored``: the stored chunk tuples (:data:`~blackbox.store.chunks.CHUNK_COLUMNS`) of the batch's
    record range, by first seq.
    """
    try:
        parts = split_document(records_document(opened))
        if parts is None:
            return None
        events_raw, readings_raw = parts
        confirmed = confirm_chunks(readings_raw, stored, gateway_id, opened.header.batch_seq)
        if confirmed is None:
            return None
        event_rows = read_events(events_raw)
        check_against_header(opened.header, confirmed.seqs, confirmed.first_ts_us, confirmed.last_ts_us, event_rows)
        return derive_with_chunks(opened, gateway_id, list(stored), len(confirmed.seqs), event_rows)
    except (MalformedBatch, RecordError, RotationError):
        return None  # derive says what is wrong


def confirm_chunks(readings_json: bytes, stored: Sequence[tuple[Any, ...]], gateway_id: int,
                   batch_seq: int) -> Confirmed | None:
    """The readings' seqs and time range if ``stored`` are exactly the chunks of the document's readings
    list ``readings_json`` (steps 1 to 3 of the module's docstring), else ``None``."""
    keys = {t[_KEY] for t in stored}
    first = [t[_FIRST_SEQ] for t in stored]
    if (len(keys) != len(stored) or any(t[_GATEWAY] != gateway_id or t[_BATCH_SEQ] != batch_seq for t in stored)
            or any(a >= b for a, b in pairwise(first))):  # derive's order: by first seq
        return None
    try:
        readings = _simple(stored) or _general(stored, gateway_id, batch_seq)
    except TypeError:  # a column of another type than the schema's (SQLite stores what it is given)
        return None
    if readings is None:
        return None
    ordered = _in_seq_order(readings)
    if ordered is None:
        return None
    rows, seqs = ordered
    try:
        encoded = orjson.dumps(rows)
    except orjson.JSONEncodeError:  # e.g. an integer beyond 64 bits: not what the sealer wrote
        return None
    if encoded != readings_json:
        return None
    return Confirmed(seqs, readings.first_ts_us, readings.last_ts_us)


@dataclass(frozen=True, slots=True)
class _Readings:
    """The readings of a batch's stored chunks as document rows, chunk after chunk."""

    rows: list[tuple[Any, ...]]
    seqs: list[int]
    bounds: list[int]
    """Where each chunk's rows start, and the end of the last."""
    first_ts_us: int | None
    last_ts_us: int | None


_COL = {name: i for i, name in enumerate(CHUNK_COLUMNS)}
_GOOD = b"g"
_QUALITY_CODES = b"gub"


def _simple(stored: Sequence[tuple[Any, ...]]) -> _Readings | None:
    """The usual batch, read column by column for all its chunks at once: every value a float, every
    quality a known one, no reasons, every reading with a source time or none (``None`` otherwise).

    For such a chunk :func:`blackbox.store.chunks.pack_chunk` writes its fixed-width columns as the
    values' bytes (``nums`` round trips exactly once every float is finite), ``kinds`` all ``f``, one
    quality code a reading and no ``texts``, ``reasons`` or ``source_mask``; the rest is its seqs'
    and times' first, last, least and greatest: checked here chunk by chunk
    (``tests/store/test_store_confirm.py`` holds this to :func:`pack_chunk`).
    """
    c = _COL
    if not stored or any(t[c["texts"]] is not None or t[c["reasons"]] is not None or t[c["source_mask"]] is not None
                         for t in stored):
        return None
    sizes = [t[c["n"]] for t in stored]
    total = sum(sizes)
    kinds = b"".join(t[c["kinds"]] for t in stored)
    qualities = b"".join(t[c["qualities"]] for t in stored)
    if (min(sizes) < 1 or kinds != b"f" * total or len(qualities) != total
            or qualities.translate(None, _QUALITY_CODES)):
        return None
    try:
        seqs = _unpack("q", b"".join(t[c["seqs"]] for t in stored), total, "seqs").tolist()
        ts = _unpack("q", b"".join(t[c["ts"]] for t in stored), total, "ts").tolist()
        nums = _unpack("d", b"".join(t[c["nums"]] for t in stored), total, "nums").tolist()
    except ChunkError:
        return None
    if not math.isfinite(sum(nums)):  # every float finite (a sum that overflows: derive decides)
        return None
    all_good = qualities == _GOOD * total
    names = None if all_good else [QUALITY_NAMES[q] for q in qualities]
    rows: list[tuple[Any, ...]] = []
    bounds = [0]
    for t, n in zip(stored, sizes, strict=True):
        start = bounds[-1]
        end = start + n
        part = ts[start:end]
        tag, batch, phase = t[c["tag"]], t[c["batch"]], t[c["phase"]]
        if ((t[c["first_seq"]], t[c["last_seq"]], t[c["first_ts_us"]], t[c["last_ts_us"]])
                != (seqs[start], seqs[end - 1], min(part), max(part))
                or len(t[c["seqs"]]) != 8 * n or len(t[c["ts"]]) != 8 * n or len(t[c["nums"]]) != 8 * n
                or len(t[c["kinds"]]) != n or len(t[c["qualities"]]) != n
                or not _name(tag, empty=False) or not _name(batch) or not _name(phase)):
            return None
        src = t[c["source_ts"]]
        try:
            source: Iterable[int | None] = repeat(None) if src is None else _unpack("q", src, n, "source_ts").tolist()
        except ChunkError:
            return None
        # the chunk's rows made at once, its constant columns repeated (no million-long lists of them)
        rows.extend(zip(seqs[start:end], repeat(tag), nums[start:end],
                        repeat("good") if names is None else names[start:end], repeat(None), part, source,
                        repeat(batch), repeat(phase)))
        bounds.append(end)
    return _Readings(rows, seqs, bounds, min(ts), max(ts))


def _general(stored: Sequence[tuple[Any, ...]], gateway_id: int, batch_seq: int) -> _Readings | None:
    """Any batch, chunk by chunk: each decoded and packed again by :func:`pack_chunk` (``None`` if one differs)."""
    rows: list[tuple[Any, ...]] = []
    seqs: list[int] = []
    bounds = [0]
    first: list[int] = []
    last: list[int] = []
    for t in stored:
        chunk = _rows(t, gateway_id, batch_seq)
        if chunk is None:
            return None
        rows.extend(chunk[0])
        seqs.extend(chunk[1])
        bounds.append(len(rows))
        first.append(chunk[2])
        last.append(chunk[3])
    return _Readings(rows, seqs, bounds, min(first, default=None), max(last, default=None))


def _rows(t: tuple[Any, ...], gateway_id: int,
          batch_seq: int) -> tuple[list[tuple[Any, ...]], list[int], int, int] | None:
    """A stored chunk's readings as document rows, with their seqs and time range, if the chunk is the one
    :func:`pack_chunk` makes of them and they are readings the format accepts (else ``None``)."""
    try:
        c = decode_tuple(t)
        values = c.values()
    except (ChunkError, ValueError):  # ValueError: an int's text that is no integer
        return None
    n = c.n
    seqs = c.seqs.tolist()
    if (not n or c.quality_names is not None
            or not math.isfinite(sum(c.nums))  # every float finite (a sum that overflows: derive decides)
            or not _name(c.tag, empty=False) or not _name(c.batch) or not _name(c.phase)
            or not _texts(c.texts) or (c.reasons is not None and not _texts(r for r in c.reasons if r is not None))):
        return None
    try:
        qualities = [QUALITY_NAMES[q] for q in c.qualities]
    except KeyError:
        return None
    ts = c.ts.tolist()
    columns: list[Sequence[Any]] = [seqs, [c.tag] * n, values, qualities, c.reasons or [None] * n, ts,
                                c.source_ts or [None] * n, [c.batch] * n, [c.phase] * n]
    if pack_chunk(columns, gateway_id, batch_seq) != tuple(t):
        return None
    return list(zip(*columns, strict=True)), seqs, min(ts), max(ts)


def _name(value: str | None, *, empty: bool = True) -> bool:
    """A tag, production batch or phase name the record format accepts (``None`` for the optional ones)."""
    if value is None:
        return empty
    return isinstance(value, str) and (empty or bool(value)) and len(value) <= MAX_NAME and "\x00" not in value


def _texts(texts: Iterable[Any]) -> bool:
    """Strings without a NUL character (the texts of int and str values, the reasons given)."""
    texts = list(texts)
    return all(isinstance(x, str) for x in texts) and "\x00" not in "".join(texts)


def _in_seq_order(readings: _Readings) -> tuple[list[tuple[Any, ...]], list[int]] | None:
    """The rows in seq order and their seqs; ``None`` if a chunk's own seqs do not ascend or one is negative.

    The usual batch (its tags polled in the same order every cycle: chunk ``i`` of ``k`` holds seqs
    ``base + i``, ``base + i + k``, ...) is interleaved with slice assignments; any other is sorted.
    """
    rows, seqs, bounds = readings.rows, readings.seqs, readings.bounds
    k, total = len(bounds) - 1, len(rows)
    if not total:
        return [], []
    base = min(seqs[start] for start in bounds[:-1])
    if base < 0:
        return None
    if all(bounds[i + 1] - bounds[i] == len(range(i, total, k)) for i in range(k)):
        in_order: list[Any] = [None] * total
        order: list[Any] = [None] * total
        for i in range(k):
            in_order[i::k] = rows[bounds[i]:bounds[i + 1]]
            order[i::k] = seqs[bounds[i]:bounds[i + 1]]
        if order == list(range(base, base + total)):  # each chunk's seqs ascend
            return in_order, order
    if any(part != sorted(part) for part in (seqs[bounds[i]:bounds[i + 1]] for i in range(k))):
        return None
    merged = sorted(rows, key=_SEQ)
    return merged, [row[0] for row in merged]
