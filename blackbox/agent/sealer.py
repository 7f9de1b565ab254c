"""Seals buffered records into signed, hash-chained batches by count, size or age."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from blackbox.aio import wait_and_clear
from blackbox.buffer import Buffer
from blackbox.config import SealConfig
from blackbox.model import Reading, Record, now_us
from blackbox.seal import GENESIS_HASH, seal_batch

log = logging.getLogger(__name__)

DbCall = Callable[..., Awaitable[Any]]
# a record's share of the uncompressed payload besides its strings; close enough for a size cap
_RECORD_OVERHEAD = 48


class Sealer:
    def __init__(self, buffer: Buffer, db: DbCall, key: Ed25519PrivateKey, cfg: SealConfig, site: str,
                 gateway: str, config_hash: str, on_sealed: Callable[[], None]) -> None:
        self._buffer = buffer
        self._db = db
        self._key = key
        self._cfg = cfg
        self._site = site
        self._gateway = gateway
        self._config_hash = config_hash
        self._on_sealed = on_sealed
        self._wake = asyncio.Event()
        self.sealed = 0

    def notify(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            last = await self._db(self._buffer.last_sealed)
            count, oldest_us = await self._db(self._buffer.unsealed_stats, last.last_seq if last else 0)
            age = (now_us() - oldest_us) / 1e6 if oldest_us is not None else 0.0
            if count >= self._cfg.max_records or (count and age >= self._cfg.max_age):
                await self.seal_once()
                continue
            await wait_and_clear(self._wake, self._cfg.max_age - age if count else self._cfg.max_age)

    async def flush(self) -> None:
        """Seal everything buffered so far (shutdown, tests)."""
        while await self.seal_once():
            pass

    async def seal_once(self) -> bool:
        made = await self._db(self._seal_in_db_thread)
        if made:
            self.sealed += 1
            self._on_sealed()
        return bool(made)

    def _seal_in_db_thread(self) -> bool:
        """Runs on the buffer's thread so that sealing and storing the batch cannot interleave."""
        last = self._buffer.last_sealed()
        after, batch_seq, prev = (last.last_seq, last.batch_seq + 1, last.hash) if last else (0, 1, GENESIS_HASH)
        records = _cap_bytes(self._buffer.unsealed(after, self._cfg.max_records), self._cfg.max_bytes)
        if not records:
            return False
        started = time.perf_counter()
        batch = seal_batch(records, site=self._site, gateway=self._gateway, key=self._key, batch_seq=batch_seq,
                           prev_hash=prev, config_hash=self._config_hash, compression=self._cfg.compression)
        self._buffer.add_sealed(batch_seq, records[0].seq, records[-1].seq, batch.hash, batch.wire)
        log.debug("sealed batch %d: %d records, %d bytes in %.1f ms", batch_seq, len(records), len(batch.wire),
                  (time.perf_counter() - started) * 1000)
        return True


def _cap_bytes(records: list[Record], max_bytes: int) -> list[Record]:
    total = 0
    for i, r in enumerate(records):
        text = r.tag if isinstance(r, Reading) else r.type
        total += _RECORD_OVERHEAD + len(text) + len(str(r.value if isinstance(r, Reading) else r.data))
        if total > max_bytes and i > 0:
            return records[:i]
    return records
