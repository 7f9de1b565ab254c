"""The ``seal:`` section: when records are sealed into batches."""

from __future__ import annotations

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
