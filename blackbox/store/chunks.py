"""Readings stored as column chunks: one row per (sealed batch, tag, production batch, phase).

A row of ``reading_chunks`` holds the readings of one tag that one sealed batch carried within one
production batch and phase, in seq order, as packed columns: ``seqs`` and ``ts`` (int64),
``nums`` (float64), ``kinds`` and ``qualities`` (one ASCII byte per reading), and the rarely used
``texts`` (JSON list of the text of ``int`` and ``str`` values, in order), ``reasons`` (JSON list,
one per reading) and ``source_ts`` (int64, with ``source_mask`` when only some readings have one).
Integers are little-endian whatever the machine, so the bytes are the same on every store and
the re-verification compares a stored chunk with the one derived from the signed batch as bytes.

Why chunks: a row per reading cost PostgreSQL about 5 µs of backend CPU per reading in ``COPY``
(the primary key and two secondary indexes per reading), and every read of a production batch
fetched and compared its readings one row at a time in Python. A sealed batch of 5,000 readings
of 100 tags is about 100 chunk rows: the indexes are per chunk, and reads decode whole columns
with :mod:`array` at C speed.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import compress
from operator import itemgetter
from struct import Struct
from typing import Any, NamedTuple

import orjson
from sqlalchemy import ColumnElement, Connection, select

from blackbox.model import Value
from blackbox.store.schema import reading_chunks

CHUNK_COLUMNS = (
    "gateway_id", "batch_seq", "tag", "batch", "phase", "first_seq", "last_seq", "first_ts_us", "last_ts_us", "n",
    "seqs", "ts", "kinds", "nums", "texts", "qualities", "reasons", "source_ts", "source_mask",
)  # fmt: skip
"""Column order of the chunk tuples :func:`make_chunks` returns (and ingest writes)."""

KIND_CODES = {"float": "f", "int": "i", "bool": "b", "str": "s", "null": "n"}
KIND_NAMES = {ord(v): k for k, v in KIND_CODES.items()}
QUALITY_CODES = {"good": "g", "uncertain": "u", "bad": "b"}
QUALITY_NAMES = {ord(v): k for k, v in QUALITY_CODES.items()}
_SWAP = sys.byteorder != "little"

READING_COLUMNS = (
    "gateway_id", "seq", "batch_seq", "tag", "kind", "num", "text", "quality", "reason", "ts_us", "source_ts_us",
    "batch", "phase",
)  # fmt: skip
"""The per-reading view of a chunk (:func:`explode`): what a difference names."""

class ChunkError(ValueError):
    """A stored chunk's columns cannot be decoded (or do not agree with each other)."""


def _pack(typecode: str, values: Iterable[Any]) -> bytes:
    a = array(typecode, values)
    if _SWAP:
        a.byteswap()
    return a.tobytes()


def _unpack(typecode: str, data: bytes | None, n: int, name: str) -> array[Any]:
    a = array(typecode)
    if data is not None:
        try:
            a.frombytes(bytes(data))
        except ValueError as exc:
            raise ChunkError(f"{name}: {exc}") from None
        if _SWAP:
            a.byteswap()
    if len(a) != n:
        raise ChunkError(f"{name} holds {len(a)} values, the chunk says {n}")
    return a


def unpack_seqs(data: bytes, n: int) -> list[int]:
    """The ``seqs`` column of a chunk of ``n`` readings; :class:`ChunkError` if it does not hold ``n``."""
    return _unpack("q", data, n, "seqs").tolist()


def make_chunks(rows: Sequence[Sequence[Any]], gid: int, batch_seq: int) -> list[tuple[Any, ...]]:
    """Chunk tuples (:data:`CHUNK_COLUMNS`) of a sealed batch's checked reading rows (records layout, by seq).

    Chunks come out by their first seq, so a batch always yields the same tuples. The usual batch
    (one production batch and phase, the tags polled in the same order every cycle) is cut into
    columns with slices alone; any other is grouped row by row.
    """
    if not rows:
        return []
    tags = list(map(_TAG, rows))
    n = len(rows)
    batches, phases = list(map(_BATCH, rows)), list(map(_PHASE, rows))
    if batches.count(batches[0]) == n and phases.count(phases[0]) == n:
        k = len(dict.fromkeys(tags))
        if k == n:  # a batch shorter than a poll cycle (a large line): one reading per tag
            return [pack_single(row, gid, batch_seq) for row in rows]
        if tags[k:] == tags[:-k]:  # every k-th row is the same tag: tag j is rows j, j + k, ...
            # transposed per tag: zip(*rows) of the whole batch costs four times as much (5,000 iterators)
            return [pack_chunk(list(zip(*rows[j::k], strict=True)), gid, batch_seq) for j in range(k)]
    groups: dict[tuple[Any, Any, Any], list[Sequence[Any]]] = {}
    for row in rows:
        key = (row[1], row[7], row[8])
        g = groups.get(key)
        if g is None:
            groups[key] = [row]
        else:
            g.append(row)
    return [pack_single(g[0], gid, batch_seq) if len(g) == 1 else pack_chunk(list(zip(*g, strict=True)), gid, batch_seq)
            for g in groups.values()]


_TAG, _BATCH, _PHASE = itemgetter(1), itemgetter(7), itemgetter(8)


def pack_chunk(columns: list[Sequence[Any]], gid: int, batch_seq: int) -> tuple[Any, ...]:
    """The chunk of one group's columns (records layout: seq, tag, value, quality, reason, ts, source, batch, phase)."""
    seqs, tags, values, qualities, reasons, ts, source_ts, batches, phases = columns
    n = len(seqs)
    types = set(map(type, values))
    texts: bytes | None = None
    if types == {float}:
        kinds = b"f" * n
        nums = _pack("d", values)
    else:
        kind_chars: list[str] = []
        num_list: list[float] = []
        text_list: list[str] = []
        for v in values:
            k, num, text = encode_value(v)
            kind_chars.append(KIND_CODES[k])
            num_list.append(0.0 if num is None else num)
            if text is not None:
                text_list.append(text)
        kinds = "".join(kind_chars).encode("ascii")
        nums = _pack("d", num_list)
        texts = orjson.dumps(text_list) if text_list else None
    try:
        q = "".join([QUALITY_CODES[x] for x in qualities]).encode("ascii")
    except KeyError:  # not a quality of today's format (a store converted from old rows): kept as written
        q = orjson.dumps(list(qualities))
    n_no_source = source_ts.count(None)
    if n_no_source == n:
        src = mask = None
    elif n_no_source == 0:
        src, mask = _pack("q", source_ts), None
    else:
        src = _pack("q", [0 if s is None else s for s in source_ts])
        mask = bytes([s is not None for s in source_ts])
    return (gid, batch_seq, tags[0], batches[0], phases[0], seqs[0], seqs[-1], min(ts), max(ts), n,
            _pack("q", seqs), _pack("q", ts), kinds, nums, texts, q,
            None if reasons.count(None) == n else orjson.dumps(list(reasons)), src, mask)


_INT64, _FLOAT64 = Struct("<q").pack, Struct("<d").pack
_QUALITY_BYTES = {name: code.encode("ascii") for name, code in QUALITY_CODES.items()}
_KIND_BYTES = {name: code.encode("ascii") for name, code in KIND_CODES.items()}


def pack_single(row: Sequence[Any], gid: int, batch_seq: int) -> tuple[Any, ...]:
    """:func:`pack_chunk` of a group of one row, the same tuple at a third of the cost.

    A batch shorter than a poll cycle holds each tag once, so a large line's chunks are mostly
    of one reading; building columns of one value each is most of what storing them costs.
    """
    seq, tag, value, quality, reason, ts, source, batch, phase = row
    texts: bytes | None = None
    if type(value) is float:
        kinds, nums = b"f", _FLOAT64(value)
    else:
        kind, num, text = encode_value(value)
        kinds, nums = _KIND_BYTES[kind], _FLOAT64(0.0 if num is None else num)
        if text is not None:
            texts = orjson.dumps([text])
    q = _QUALITY_BYTES.get(quality)
    if q is None:  # not a quality of today's format: kept as written, as pack_chunk does
        q = orjson.dumps([quality])
    return (gid, batch_seq, tag, batch, phase, seq, seq, ts, ts, 1, _INT64(seq), _INT64(ts), kinds, nums, texts, q,
            None if reason is None else orjson.dumps([reason]), None if source is None else _INT64(source), None)


@dataclass(frozen=True, slots=True)
class Chunk:
    """A stored chunk's columns, decoded (the ``array`` columns convert to lists at C speed)."""

    gateway_id: int
    batch_seq: int
    tag: str
    batch: str | None
    phase: str | None
    n: int
    seqs: array[int]
    ts: array[int]
    kinds: bytes
    nums: array[float]
    texts: list[str]
    qualities: bytes
    """One code per reading (``?`` for a quality that has none: see ``quality_names``)."""
    reasons: list[str | None] | None
    source_ts: list[int | None] | None
    quality_names: list[str] | None = None
    """Each reading's quality as written, where some has no code (a JSON list in the column)."""

    def numeric_good(self) -> bytes:
        """A 0/1 byte per reading: a float or int value whose quality is not bad (what statistics take)."""
        if self.kinds == b"f" * self.n and b"b" not in self.qualities:
            return b"\x01" * self.n
        k = self.kinds.translate(_NUMERIC_KIND)
        q = self.qualities.translate(_NOT_BAD)
        return (int.from_bytes(k, "big") & int.from_bytes(q, "big")).to_bytes(self.n, "big")

    def values(self) -> list[Value]:
        """Every reading's value with its Python type."""
        if self.kinds == b"f" * self.n:
            return list(self.nums)
        texts = iter(self.texts)
        out: list[Value] = []
        for k, num in zip(self.kinds, self.nums, strict=True):
            kind = KIND_NAMES.get(k, "?")
            text = next(texts, None) if kind in ("int", "str") else None
            out.append(decode_value(kind, num if kind in ("float", "int", "bool") else None, text))
        return out


_NUMERIC_KIND = bytes(1 if c in b"fi" else 0 for c in range(256))
_NOT_BAD = bytes(0 if c == ord("b") else 1 for c in range(256))


def decode_chunk(row: Any) -> Chunk:
    """A stored ``reading_chunks`` row (any object with its columns as attributes) decoded; :class:`ChunkError`."""
    n = row.n
    seqs = _unpack("q", row.seqs, n, "seqs")
    ts = _unpack("q", row.ts, n, "ts")
    nums = _unpack("d", row.nums, n, "nums")
    kinds, qualities = bytes(row.kinds), bytes(row.qualities)
    names: list[str] | None = None
    if qualities[:1] == b"[":
        try:
            names = orjson.loads(qualities)
        except orjson.JSONDecodeError as exc:
            raise ChunkError(f"qualities: {exc}") from None
        if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
            raise ChunkError("qualities is not a list of strings")
        qualities = "".join(QUALITY_CODES.get(x, "?") for x in names).encode("ascii")
    if len(kinds) != n or len(qualities) != n:
        raise ChunkError(f"kinds or qualities do not hold {n} values")
    try:
        texts = orjson.loads(bytes(row.texts)) if row.texts is not None else []
        reasons = orjson.loads(bytes(row.reasons)) if row.reasons is not None else None
    except orjson.JSONDecodeError as exc:
        raise ChunkError(f"texts or reasons: {exc}") from None
    if not isinstance(texts, list) or (reasons is not None and (not isinstance(reasons, list) or len(reasons) != n)):
        raise ChunkError("texts or reasons are not lists of the chunk's size")
    source: list[int | None] | None = None
    if row.source_ts is not None:
        src = _unpack("q", row.source_ts, n, "source_ts").tolist()
        if row.source_mask is not None:
            mask = bytes(row.source_mask)
            if len(mask) != n:
                raise ChunkError(f"source_mask does not hold {n} values")
            source = [s if m else None for s, m in zip(src, mask, strict=True)]
        else:
            source = src
    return Chunk(row.gateway_id, row.batch_seq, row.tag, row.batch, row.phase, n, seqs, ts, kinds, nums, texts,
                 qualities, reasons, source, names)


class _Row:
    """A chunk tuple (:data:`CHUNK_COLUMNS`) read by column name."""

    __slots__ = ("_t",)

    def __init__(self, t: Sequence[Any]) -> None:
        self._t = t

    def __getattr__(self, name: str) -> Any:
        return self._t[_INDEX[name]]


_INDEX = {c: i for i, c in enumerate(CHUNK_COLUMNS)}


def decode_tuple(t: Sequence[Any]) -> Chunk:
    """:func:`decode_chunk` of a chunk tuple in :data:`CHUNK_COLUMNS` order."""
    return decode_chunk(_Row(t))


def explode(chunk: Chunk) -> Iterator[tuple[Any, ...]]:
    """The chunk's readings as :data:`READING_COLUMNS` tuples, in its (seq) order."""
    reasons = chunk.reasons if chunk.reasons is not None else [None] * chunk.n
    source = chunk.source_ts if chunk.source_ts is not None else [None] * chunk.n
    texts = iter(chunk.texts)
    names = chunk.quality_names
    for i in range(chunk.n):
        kind = KIND_NAMES.get(chunk.kinds[i], repr(chr(chunk.kinds[i])))
        num: float | None = chunk.nums[i] if kind in ("float", "int", "bool") else None
        text = next(texts, None) if kind in ("int", "str") else None
        yield (chunk.gateway_id, chunk.seqs[i], chunk.batch_seq, chunk.tag, kind, num, text,
               names[i] if names is not None else QUALITY_NAMES.get(chunk.qualities[i], repr(chr(chunk.qualities[i]))),
               reasons[i], chunk.ts[i],
               source[i], chunk.batch, chunk.phase)


def select_seqs(chunk: Chunk, lo: int, hi: int | None) -> bytes | None:
    """A 0/1 byte per reading inside ``lo..hi`` (``None``: every reading is)."""
    if chunk.seqs[0] >= lo and (hi is None or chunk.seqs[-1] <= hi):
        return None
    return bytes([lo <= s and (hi is None or s <= hi) for s in chunk.seqs])


def take(values: Sequence[Any], mask: bytes | None) -> list[Any]:
    """``values`` where ``mask`` is 1 (all of them if ``mask`` is ``None``), at C speed."""
    return list(values) if mask is None else list(compress(values, mask))


def and_masks(a: bytes | None, b: bytes | None) -> bytes | None:
    if a is None:
        return b
    if b is None:
        return a
    return (int.from_bytes(a, "big") & int.from_bytes(b, "big")).to_bytes(len(a), "big")


def encode_value(value: Value) -> tuple[str, float | None, str | None]:
    """``(kind, num, text)`` for a reading's value, so that its Python type round-trips."""
    if value is None:
        return "null", None, None
    if isinstance(value, bool):
        return "bool", 1.0 if value else 0.0, None
    if isinstance(value, int):
        return "int", float(value), str(value)
    if isinstance(value, float):
        return "float", value, None
    return "str", None, str(value)


def decode_value(kind: str, num: float | None, text: str | None) -> Value:
    """Inverse of :func:`encode_value`."""
    if kind == "float":
        return num
    if kind == "int":
        return int(text) if text is not None else None
    if kind == "bool":
        return bool(num)
    if kind == "str":
        return text
    return None


class ReadingRow(NamedTuple):
    """One stored reading, unpacked from its chunk (:data:`READING_COLUMNS`)."""

    gateway_id: int
    seq: int
    batch_seq: int
    tag: str
    kind: str
    num: float | None
    text: str | None
    quality: str
    reason: str | None
    ts_us: int
    source_ts_us: int | None
    batch: str | None
    phase: str | None


def stored_readings(conn: Connection, *where: ColumnElement[bool]) -> list[ReadingRow]:
    """The readings of the stored chunks matching ``where`` (every chunk without), by gateway and seq.

    The per-reading view of the store, for tools, migrations and tests; queries that read many
    readings decode the chunks' columns themselves.
    """
    out = [ReadingRow(*r) for row in conn.execute(select(reading_chunks).where(*where))
           for r in explode(decode_chunk(row))]
    out.sort(key=lambda r: (r.gateway_id, r.seq))
    return out


def check_sizes(row: Any) -> None:
    """:class:`ChunkError` unless a stored chunk's packed columns hold its ``n`` readings (what :func:`merge` needs)."""
    n = row.n
    for name in ("seqs", "ts", "nums"):
        if len(getattr(row, name)) != 8 * n:
            raise ChunkError(f"{name} does not hold {n} values")
    if len(row.kinds) != n or (len(row.qualities) != n and bytes(row.qualities[:1]) != b"["):
        raise ChunkError(f"kinds or qualities do not hold {n} values")


def merge(rows: Sequence[Any]) -> Chunk:
    """Stored chunks of one gateway and tag (checked by :func:`check_sizes`) as one: their seqs, times, kinds,
    numbers and qualities joined as bytes (the texts, reasons and source times are left out)."""
    first = rows[0]
    n = sum(r.n for r in rows)
    qualities = b"".join(bytes(r.qualities) if bytes(r.qualities[:1]) != b"[" else decode_chunk(r).qualities
                         for r in rows)
    return Chunk(first.gateway_id, first.batch_seq, first.tag, first.batch, first.phase, n,
                 _unpack("q", b"".join(bytes(r.seqs) for r in rows), n, "seqs"),
                 _unpack("q", b"".join(bytes(r.ts) for r in rows), n, "ts"),
                 b"".join(bytes(r.kinds) for r in rows),
                 _unpack("d", b"".join(bytes(r.nums) for r in rows), n, "nums"),
                 [], qualities, None, None)
