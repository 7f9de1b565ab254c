"""The forwarder's window against a real buffer: an acknowledged batch is never published again, and
a batch the store rejected does not keep fresh batches out of the window.

The MQTT session is replaced by a recorder of what would be published (the race under test is
between the forwarder and the buffer, not the broker); buffer, sealer and forwarder are the real ones.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from store_key import SignedAcks
from uplink_support import Pipeline
from waiting import eventually

from blackbox.buffer import StoredBatch
from blackbox.config import MqttConfig


class Published:
    """Stands in for the MQTT session: connected, every publish PUBACKed at once, payloads kept."""

    connected = True

    def __init__(self) -> None:
        self.payloads: list[bytes] = []

    def publish(self, _topic: str, payload: bytes, retain: bool = False) -> Published:
        self.payloads.append(payload)
        return self

    def is_published(self) -> bool:
        return True


@pytest.fixture
async def pipeline(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    made: list[Pipeline] = []

    async def make(batches: int, max_in_flight: int) -> tuple[Pipeline, Published, list[StoredBatch]]:
        p = Pipeline(tmp_path, MqttConfig(host="127.0.0.1", topic_root="unused"), seal={"max_records": 10},
                     uplink={"max_in_flight": max_in_flight})
        made.append(p)
        await p.start(seal=False, forward=False)
        for _ in range(batches):
            await p.commit(10)
        await p.sealer.flush()
        sealed = await p.db(p.buffer.undelivered, 0, batches)
        assert [b.batch_seq for b in sealed] == list(range(1, batches + 1))
        out = Published()
        p.forwarder.session = out
        SIGNED.append(SignedAcks("SH-PD-01", "gw-01", [(b.batch_seq, b.hash) for b in sealed]))
        return p, out, sealed

    yield make
    for p in made:
        await p.stop()


SIGNED: list[SignedAcks] = []
"""The store log of the pipeline under test (its sealed batches), made by the fixture."""


def ack(batch: StoredBatch, status: str = "stored") -> bytes:
    """The store's signed receipt for ``batch`` (the gateway pins the test store key)."""
    return SIGNED[-1].ack(batch.batch_seq, batch.hash, status, "bad_signature" if status == "rejected" else None)


async def test_a_batch_acknowledged_while_the_buffer_is_being_read_is_not_published_again(
        pipeline: Callable[..., Any]) -> None:
    p, out, sealed = await pipeline(batches=3, max_in_flight=8)
    fwd = p.forwarder
    await fwd._pump()
    assert Counter(out.payloads) == Counter(b.wire for b in sealed)  # each sent once

    # the next round reads what is undelivered; the ack of batch 3 arrives (and is recorded by the
    # buffer) after that read and before the round goes on
    real_db, read, go_on = fwd._db, asyncio.Event(), asyncio.Event()

    async def db_answering_late(fn: Callable[..., Any], *args: Any) -> Any:
        result = await real_db(fn, *args)
        if fn == p.buffer.undelivered:
            read.set()
            await go_on.wait()
        return result

    fwd._db = db_answering_late
    fwd.notify(3)
    pump = asyncio.create_task(fwd._pump())
    async with asyncio.timeout(10):
        await read.wait()
    fwd.on_ack(ack(sealed[2]))
    await eventually(lambda: 3 not in fwd._in_flight, 10, "the ack of batch 3 to be recorded")
    assert (await real_db(p.buffer.first_undelivered))[0] == 1
    go_on.set()
    async with asyncio.timeout(10):
        await pump

    assert Counter(out.payloads) == Counter(b.wire for b in sealed), "a batch was published after its ack"
    assert fwd.resent == 0 and fwd.delivered == 1


async def test_a_batch_acknowledged_and_recorded_is_never_sent_again_by_either_lane(
        pipeline: Callable[..., Any]) -> None:
    p, out, sealed = await pipeline(batches=6, max_in_flight=4)
    fwd = p.forwarder
    await fwd._pump()
    first = list(out.payloads)
    for b in sealed:
        if b.wire in first:
            fwd.on_ack(ack(b))
    await eventually(lambda: fwd.delivered == len(first), 10, "the acks to be recorded")
    for _ in range(3):
        await fwd._pump()
    assert sorted(Counter(out.payloads).values()) == [1] * 6
    assert Counter(out.payloads) == Counter(b.wire for b in sealed)


async def test_rejected_batches_do_not_keep_fresh_ones_out_of_the_window(pipeline: Callable[..., Any]) -> None:
    p, out, sealed = await pipeline(batches=10, max_in_flight=4)
    fwd = p.forwarder
    await fwd._pump()
    assert len(out.payloads) == 4  # the window is full: batch 10 live, 1-3 replayed
    by_wire = {b.wire: b for b in sealed}
    for payload in list(out.payloads):
        fwd.on_ack(ack(by_wire[payload], "rejected"))
    await eventually(lambda: fwd.rejected == 4, 10, "the rejections to be verified")
    await fwd._pump()
    # the replay lane goes on with 4-6 (three places: one is kept for live batches)
    assert [by_wire[w].batch_seq for w in out.payloads[4:]] == [4, 5, 6], "rejected batches held the window"
    await p.commit(10)
    assert await p.sealer.seal_once()
    [fresh] = await p.db(p.buffer.undelivered, 10, 1)
    await fwd._pump()
    assert out.payloads[-1] == fresh.wire, "a fresh batch waited behind rejected ones"
    by_wire[fresh.wire] = fresh
    for payload in out.payloads[4:]:
        fwd.on_ack(ack(by_wire[payload], "rejected"))
    await eventually(lambda: fwd.rejected == 4 + len(out.payloads[4:]), 10, "the rejections to be verified")
    await p.commit(10)
    await p.sealer.seal_once()
    await fwd._pump()
    # everything rejected: what is out stays bounded (the window, plus as many rejected ones)
    assert len(fwd._in_flight) <= 2 * 4
    pending, _ = await p.db(p.buffer.pending_counts)
    assert pending == 12, "a rejected batch is kept in the buffer"


async def test_batches_already_out_are_not_read_back_from_the_buffer(pipeline: Callable[..., Any]) -> None:
    """A round reads the wires of the batches it sends, not of those already out and waiting for
    their acks (a large batch's wire is hundreds of kilobytes: the agent's memory, not only time)."""
    p, out, _ = await pipeline(batches=3, max_in_flight=8)
    fwd = p.forwarder
    await fwd._pump()
    assert len(out.payloads) == 3  # all out, none acknowledged
    await p.commit(10)
    assert await p.sealer.seal_once()  # batch 4: among the newest with 3, which is out
    read: list[int] = []
    real_db = fwd._db

    async def noting_wires(fn: Callable[..., Any], *args: Any) -> Any:
        result = await real_db(fn, *args)
        if fn == p.buffer.undelivered:
            read.extend(b.batch_seq for b in result)
        return result

    fwd._db = noting_wires
    fwd.notify(4)
    await fwd._pump()
    assert len(out.payloads) == 4  # batch 4 sent
    assert read == [4], f"read back {read}: only batch 4 was to be sent"
