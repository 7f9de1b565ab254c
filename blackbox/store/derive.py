"""Everything the store derives from a sealed batch, in one function that ingest and verify share.

The signed wire bytes kept in ``sealed_batches.wire`` are the record. Every other row the store
holds about a batch (its ``sealed_batches`` columns, its ``reading_chunks``, ``events`` with their
lookup references, the ``tag_configs`` holding the limits in force, the key rotation it carries)
is computed from those bytes by :func:`derive`. Ingest inserts what :func:`derive` returns;
``blackbox store verify`` and the trace report call the same function on the stored bytes and
compare, so any row edited, deleted or added after ingest shows as a difference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from blackbox.model import Event
from blackbox.seal import OpenedBatch, Rotation, batch_rotation, decode_row_tuples
from blackbox.store.chunks import CHUNK_COLUMNS, READING_COLUMNS, decode_value, encode_value, make_chunks

EVENT_COLUMNS = ("gateway_id", "seq", "batch_seq", "type", "subject", "data", "ts_us", "batch", "phase", "ref")
TAG_CONFIG_COLUMNS = ("gateway_id", "seq", "config_sha256", "effective_from_us", "data")
BATCH_COLUMNS = (
    "batch_seq", "hash", "prev_hash", "key_id", "version", "header", "first_seq", "last_seq", "first_ts_us",
    "last_ts_us", "n_readings", "n_events", "config_hash", "clock", "sealed_at_us",
)  # fmt: skip
"""The ``sealed_batches`` columns read from the header (the others: id, gateway, received time, bytes)."""

REF_FIELDS = {"material.consumed": "lot", "batch.started": "batch", "batch.phase": "batch", "batch.ended": "batch",
              "lot.registered": "lot", "lot.produced": "lot", "batch.released": "batch", "lot.supplied": "supplier_lot",
              "packaging.consumed": "lot", "operator.added": "accounts_sha256", "operator.unlocked": "accounts_sha256",
              "operator.accounts": "accounts_sha256"}
"""Event types whose ``data`` field is copied to the indexed ``events.ref`` column."""


@dataclass(frozen=True, slots=True)
class Derived:
    """The rows one sealed batch yields, ready to insert (and to compare with what is stored)."""

    batch: dict[str, Any]
    """``sealed_batches`` columns of :data:`BATCH_COLUMNS`."""
    readings: list[tuple[Any, ...]]
    """``reading_chunks`` rows in :data:`~blackbox.store.chunks.CHUNK_COLUMNS` order, by first seq."""
    n_readings: int
    events: list[dict[str, Any]]
    """``events`` rows (:data:`EVENT_COLUMNS`), by seq."""
    tag_configs: list[dict[str, Any]]
    """``tag_configs`` rows (:data:`TAG_CONFIG_COLUMNS`): one per ``config.applied`` event."""
    event_records: list[Event]
    rotation: Rotation | None
    """The key rotation the batch carries (its ``key.rotated`` event), checked against the batch."""


def derive(opened: OpenedBatch, gateway_id: int) -> Derived:
    """The rows of a sealed batch whose signature has been verified.

    Raises :class:`~blackbox.seal.MalformedBatch` if the records cannot be decoded or do not match
    the header, :class:`~blackbox.seal.RotationError` if a ``key.rotated`` event breaks the rules.
    """
    reading_rows, event_rows = decode_row_tuples(opened)
    chunks = make_chunks(reading_rows, gateway_id, opened.header.batch_seq)
    return derive_with_chunks(opened, gateway_id, chunks, len(reading_rows), event_rows)


def derive_with_chunks(opened: OpenedBatch, gateway_id: int, chunks: list[tuple[Any, ...]], n_readings: int,
                       event_rows: list[list[Any]]) -> Derived:
    """:func:`derive`'s rows, given the batch's checked event rows and the reading chunks its readings make.

    For the re-verification, which proves stored chunks equal to those without deriving them again
    (:mod:`blackbox.store.confirm`). Raises :class:`~blackbox.seal.RotationError` like :func:`derive`.
    """
    event_records = [Event(*row) for row in event_rows]
    rotation = batch_rotation(opened, event_records)
    events, configs = _event_rows(event_records, gateway_id, opened.header.batch_seq)
    return Derived(
        batch=batch_columns(opened),
        readings=chunks,
        n_readings=n_readings,
        events=events,
        tag_configs=configs,
        event_records=event_records,
        rotation=rotation,
    )


def batch_columns(opened: OpenedBatch) -> dict[str, Any]:
    """The ``sealed_batches`` columns that come from the batch's header and hash."""
    h = opened.header
    return {
        "batch_seq": h.batch_seq,
        "hash": opened.hash,
        "prev_hash": h.prev_hash,
        "key_id": h.key_id,
        "version": h.version,
        "header": h.to_dict(),
        "first_seq": h.first_seq,
        "last_seq": h.last_seq,
        "first_ts_us": h.first_ts_us,
        "last_ts_us": h.last_ts_us,
        "n_readings": h.n_readings,
        "n_events": h.n_events,
        "config_hash": h.config_hash,
        "clock": h.clock,
        "sealed_at_us": h.sealed_at_us,
    }


def event_ref(event_type: str, data: dict[str, Any]) -> str | None:
    """The value of ``events.ref`` for an event: a supplier lot or a production batch number."""
    name = REF_FIELDS.get(event_type)
    value = data.get(name) if name is not None else None
    if value is None or isinstance(value, (dict, list)):
        return None
    return str(value)[:128]


def _event_rows(
    events_list: list[Event], gid: int, batch_seq: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    event_rows: list[dict[str, Any]] = []
    config_rows: list[dict[str, Any]] = []
    for e in events_list:
        event_rows.append({"gateway_id": gid, "seq": e.seq, "batch_seq": batch_seq, "type": e.type,
                           "subject": e.subject, "data": e.data, "ts_us": e.ts_us, "batch": e.batch,
                           "phase": e.phase, "ref": event_ref(e.type, e.data)})
        if e.type == "config.applied":
            config_rows.append({"gateway_id": gid, "seq": e.seq, "config_sha256": str(e.data.get("sha256", ""))[:128],
                                "effective_from_us": e.ts_us, "data": e.data})
    return event_rows, config_rows


__all__ = ["BATCH_COLUMNS", "CHUNK_COLUMNS", "EVENT_COLUMNS", "READING_COLUMNS", "TAG_CONFIG_COLUMNS", "Derived",
           "batch_columns", "decode_value", "derive", "derive_with_chunks", "encode_value", "event_ref"]
