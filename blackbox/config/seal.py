"""The ``seal:`` section: when records are sealed into batches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from blackbox.config.base import Strict


class SealConfig(Strict):
    max_records: int = Field(default=5000, gt=0, description="Records per batch at most.")
    max_bytes: int = Field(default=512_000, gt=1024, description="Bytes of the uncompressed records document "
                           "per batch at most (exact; a single larger record is sealed alone). The MQTT message is "
                           "smaller: compressed, plus a header of about 700 bytes.")
    max_age: float = Field(default=1.0, gt=0, description="Seconds before a partial batch is sealed.")
    compression: Literal["none", "zlib", "zstd"] = Field(default="zstd", description="Payload compression.")
    clock_sync_check: bool = Field(default=True, description="Mark batches 'unsynced' while the kernel reports "
                                   "the clock as not synchronised (no NTP). Steps of the clock are always marked "
                                   "'stepped'.")


RECORDS_DOCUMENT_BYTES_PER_READING = 110
"""About what one reading takes in a batch's records document (measured on the reference line)."""


@dataclass(frozen=True, slots=True)
class AdvisedBatch:
    """The batch size advised for a line (:func:`advised_batch`)."""

    max_records: int
    max_bytes: int
    fitting: int
    """Readings a batch holds at most with the configured caps."""


def advised_batch(seal: SealConfig, readings_per_second: float) -> AdvisedBatch | None:
    """Larger caps when a batch holds less than half a second of the line's readings (or less than
    ``max_age``); ``None`` when the configured ones are large enough.

    A batch is cut by ``max_records`` and by ``max_bytes`` (about 110 bytes per reading), whichever
    comes first. The store keeps a batch's readings as one chunk per tag, so a batch shorter than a
    poll cycle stores one reading per chunk row: at 10,000 tags every 0.1 s the store and its
    database spent 8.8-9.1 us per reading with the default 5,000 records, 3.6-3.9 us with 50,000
    (docs/operations.md).
    """
    suggested = int(readings_per_second * min(0.5, seal.max_age))
    fitting = min(seal.max_records, seal.max_bytes // RECORDS_DOCUMENT_BYTES_PER_READING)
    if suggested <= fitting:
        return None
    return AdvisedBatch(suggested, suggested * RECORDS_DOCUMENT_BYTES_PER_READING, fitting)


def batch_size_hint(seal: SealConfig, readings_per_second: float) -> str | None:
    """What ``blackbox config check`` says of :func:`advised_batch`."""
    advised = advised_batch(seal, readings_per_second)
    if advised is None:
        return None
    covered_ms = 1000 * advised.fitting / readings_per_second
    return (f"seal: a batch of at most {advised.fitting:,} readings holds {covered_ms:.0f} ms of this line's "
            f"{readings_per_second:,.0f} readings/s; a line this size is stored more cheaply with "
            f"seal.max_records: {advised.max_records} and seal.max_bytes: {advised.max_bytes} "
            "(see 'Sizing batches for a large line' in the operations guide)")
