"""The sealer asks the buffer for what fits: batches cut by ``max_bytes`` no longer cost a read-back of
records left for the next batch and two more encodings of the records document, every batch."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, TypeVarTuple

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from blackbox.agent.sealer import RecordsPerBatch, Sealer
from blackbox.buffer import Buffer
from blackbox.config import SealConfig
from blackbox.model import Context, Sample
from blackbox.seal import open_batch
from blackbox.seal.format import records_document

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

# (offered, sealed) after each batch -> what the sealer asks for next, with max_records 1,000
STEPS = {
    "every batch fits: the most": ([(1000, 1000), (1000, 1000)], [1000, 1000]),
    "a cut: ask what fitted": ([(1000, 600)], [600]),
    "then grow by 2 % a batch": ([(1000, 600), (600, 600), (612, 612), (624, 624)], [600, 612, 624, 636]),
    "cut again while growing": ([(1000, 600), (600, 600), (612, 605)], [600, 612, 605]),
    "growth stops at max_records": ([(1000, 990), (990, 990), (1000, 1000)], [990, 1000, 1000]),
    "fewer waiting than asked: no growth": ([(1000, 600), (200, 200)], [600, 600]),
    "at least one record": ([(1000, 0)], [1]),
}


@pytest.mark.parametrize(("steps", "asks"), STEPS.values(), ids=STEPS.keys())
def test_records_per_batch_follows_what_fits(steps: list[tuple[int, int]], asks: list[int]) -> None:
    per_batch = RecordsPerBatch(1000)
    got = []
    for offered, sealed in steps:
        per_batch.sealed(offered, sealed)
        got.append(per_batch.ask)
    assert got == asks


async def test_a_byte_capped_sealer_reads_back_little_more_than_it_seals(tmp_path: Path) -> None:
    """5,000 readings, batches of at most 500 records or 20,000 bytes (about 190 of these readings):
    every batch within the cap and the records contiguous, as before; the buffer read back at most
    1.15 times what was sealed (asking for 500 every time read back about twice as much)."""
    buffer = Buffer(tmp_path / "buffer.sqlite")
    asked: list[int] = []
    real = buffer.unsealed

    def unsealed(after: int, limit: int) -> Any:
        found = real(after, limit)
        asked.append(len(found.readings) + len(found.events))
        return found

    buffer.unsealed = unsealed  # type: ignore[method-assign]  # counts what the sealer reads back

    async def db(fn: Callable[[*Ts], T], *args: *Ts) -> T:
        return fn(*args)

    cfg = SealConfig(max_records=500, max_bytes=20_000)
    sealer = Sealer(buffer, db, Ed25519PrivateKey.generate(), cfg, "S", "gw", "c" * 64, on_sealed=lambda _n: None)
    await sealer.start()
    for cycle in range(50):
        buffer.commit([Sample(f"PLC-{i:03d}.temperature", 20.0 + cycle + i / 100) for i in range(100)], [],
                      Context(batch="B-1", phase="mix"))
    async with asyncio.timeout(60):
        await sealer.flush()
    batches = buffer.undelivered(0, 10_000)
    assert [b.batch_seq for b in batches] == list(range(1, len(batches) + 1))
    assert [(b.first_seq, b.last_seq) for b in batches] == [
        (a, z) for a, z in zip([1] + [b.last_seq + 1 for b in batches[:-1]], [b.last_seq for b in batches],
                               strict=True)]
    assert batches[-1].last_seq == 5000
    assert all(len(records_document(open_batch(b.wire))) <= 20_000 for b in batches)
    assert max(len(records_document(open_batch(b.wire))) for b in batches) > 19_000  # batches stay full
    assert sum(asked) <= 1.15 * 5000, (sum(asked), len(batches))
    buffer.close()
