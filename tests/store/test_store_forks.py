"""Forks at the store, on SQLite and PostgreSQL, in every arrival order: a batch that names a
predecessor another batch already names is a fork wherever it sits, and a batch stored ahead of the
chain never locks the genuine chain out. Every conflict is recorded naming both batches.

The forged batches are signed with the gateway's own key (a stolen key, or a gateway restored from
an old backup): the signature cannot tell them apart, only the chain can.
"""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, select
from store_synth import GATEWAY, SITE, T0, Gateway
from stored import readings_of
from test_store_ingest import handle

from blackbox.model import Event, Quality, Reading
from blackbox.seal import KEY_ROTATED, SealedBatch, key_id, rotation_data
from blackbox.store.ingest import Ingestor
from blackbox.store.schema import rejections, sealed_batches

N_BATCHES = 6


def genuine_chain(gw: Gateway) -> list[SealedBatch]:
    """Batches 1..6 of the gateway, two readings each (record seqs 1..12)."""
    for b in range(N_BATCHES):
        for i in range(2):
            gw.reading("EM-01.temperature", 70.0 + b + i / 10, T0 + 10 * b + i)
    # seal one batch per pair of readings
    pending, gw.pending = gw.pending, []
    out = []
    for b in range(N_BATCHES):
        gw.pending = pending[2 * b: 2 * b + 2]
        out.append(gw.seal())
    return out


def forged(gw: Gateway, batch_seq: int, prev_hash: str, first_seq: int = 1000, n: int = 2) -> SealedBatch:
    """A batch signed with the gateway's key that is not part of its chain (values 666.0)."""
    records: list[Any] = [Reading(first_seq + i, "EM-01.temperature", 666.0, Quality.GOOD, None, T0 + 500 + i,
                                  None, None, None) for i in range(n)]
    return gw.seal_raw(records, batch_seq=batch_seq, prev_hash=prev_hash)


@pytest.fixture
def gw() -> Gateway:
    return Gateway()


@pytest.fixture
def ing(engine: Engine, gw: Gateway) -> Ingestor:
    ingestor = Ingestor(engine)
    ingestor.enroll(GATEWAY, SITE, gw.public_pem)
    return ingestor


def store(ing: Ingestor, *batches: SealedBatch) -> None:
    for b in batches:
        result = handle(ing, b.wire)
        assert (result.status, result.batch_seq, result.hash) == ("stored", b.header.batch_seq, b.hash), result


def stored_chain(engine: Engine) -> list[tuple[int, str]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(sealed_batches.c.batch_seq, sealed_batches.c.hash)
                                               .order_by(sealed_batches.c.batch_seq))]


def stored_readings(engine: Engine) -> list[tuple[int, float | None]]:
    with engine.connect() as conn:
        return [(r.seq, r.num) for r in readings_of(conn)]


def findings(engine: Engine) -> list[tuple[Any, ...]]:
    """``(reason, batch_seq, hash, conflict_batch_seq, conflict_hash)`` of every rejection, in order."""
    r = rejections.c
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(
            select(r.reason, r.batch_seq, r.hash, r.conflict_batch_seq, r.conflict_hash).order_by(r.id))]


def assert_exactly_the_genuine_chain(engine: Engine, chain: list[SealedBatch]) -> None:
    assert stored_chain(engine) == [(b.header.batch_seq, b.hash) for b in chain]
    expected = [(2 * b + i + 1, 70.0 + b + i / 10) for b in range(N_BATCHES) for i in range(2)]
    assert stored_readings(engine) == expected


def test_a_non_adjacent_fork_arriving_after_the_chain_is_refused_naming_both(engine: Engine, ing: Ingestor,
                                                                              gw: Gateway) -> None:
    """The reported bug: batch 6 naming batch 2 while batch 3 names it too, then batch 5 refused forever."""
    chain = genuine_chain(gw)
    store(ing, *chain[:4])
    fork = forged(gw, 6, chain[1].hash)
    result = handle(ing, fork.wire)
    assert (result.status, result.reason) == ("rejected", "fork")
    assert findings(engine) == [("fork", 6, fork.hash, 3, chain[2].hash)]
    store(ing, chain[4], chain[5])
    assert_exactly_the_genuine_chain(engine, chain)


def test_a_non_adjacent_fork_arriving_first_is_moved_aside_by_the_genuine_chain(engine: Engine, ing: Ingestor,
                                                                                 gw: Gateway) -> None:
    chain = genuine_chain(gw)
    store(ing, chain[0])
    fork = forged(gw, 6, chain[1].hash)
    store(ing, fork)  # its predecessor is not stored yet: nothing to hold it against
    store(ing, chain[1])  # names nothing wrong; fork 6 names it at the wrong distance and goes
    assert findings(engine) == [("fork", 6, fork.hash, 2, chain[1].hash)]
    with engine.connect() as conn:
        raw = conn.execute(select(rejections.c.raw, rejections.c.raw_truncated)).one()
    assert bytes(raw.raw) == fork.wire and not raw.raw_truncated  # the evidence, whole
    store(ing, *chain[2:])
    assert_exactly_the_genuine_chain(engine, chain)


def test_a_sibling_stored_ahead_refuses_the_genuine_batch_until_the_chain_below_arrives(
        engine: Engine, ing: Ingestor, gw: Gateway) -> None:
    chain = genuine_chain(gw)
    store(ing, chain[0])
    fork = forged(gw, 6, chain[1].hash)
    store(ing, fork)
    early = handle(ing, chain[2].wire)  # batch 3 before batch 2: neither links, the stored one stays
    assert (early.status, early.reason) == ("rejected", "fork")
    assert findings(engine) == [("fork", 3, chain[2].hash, 6, fork.hash)]
    store(ing, chain[1])  # links: the fork goes
    assert findings(engine)[-1] == ("fork", 6, fork.hash, 2, chain[1].hash)
    store(ing, *chain[2:])  # the gateway's re-send of batch 3 now fits
    assert_exactly_the_genuine_chain(engine, chain)


@pytest.mark.parametrize(("fork_seq", "fork_first_seq", "winner"), [
    (2, 1000, 1),  # batch 2 stored before batch 1: batch 1's successor does not link to it
    (3, 1000, 2),  # batch 3 stored before batch 2, naming something else
    (5, 5, 3),  # batch 5 claiming the records of batch 3
], ids=["successor of batch 1", "successor of batch 2", "overlapping records"])
def test_a_batch_stored_ahead_of_the_chain_never_locks_it_out(engine: Engine, ing: Ingestor, gw: Gateway,
                                                              fork_seq: int, fork_first_seq: int, winner: int) -> None:
    chain = genuine_chain(gw)
    if winner > 1:
        store(ing, chain[0])
    fork = forged(gw, fork_seq, "ab" * 32, first_seq=fork_first_seq)
    store(ing, fork)
    store(ing, *chain[1 if winner > 1 else 0:])
    assert findings(engine) == [("fork", fork_seq, fork.hash, winner, chain[winner - 1].hash)]
    assert_exactly_the_genuine_chain(engine, chain)


def test_of_two_batches_that_both_link_the_first_stored_stays(engine: Engine, ing: Ingestor, gw: Gateway) -> None:
    """Indistinguishable by the chain: the stored one continues, and the finding names both."""
    chain = genuine_chain(gw)
    store(ing, chain[0], chain[1])
    fork = forged(gw, 3, chain[1].hash)
    store(ing, fork)
    result = handle(ing, chain[2].wire)
    assert (result.status, result.reason) == ("rejected", "fork")
    assert findings(engine) == [("fork", 3, chain[2].hash, 3, fork.hash)]
    assert stored_chain(engine) == [(1, chain[0].hash), (2, chain[1].hash), (3, fork.hash)]


def test_a_linked_batch_moves_aside_a_stored_successor_that_does_not_link_to_it(
        engine: Engine, ing: Ingestor, gw: Gateway) -> None:
    """The chain that continues is the one linking to what is stored: here the forged batch 2."""
    chain = genuine_chain(gw)
    store(ing, chain[0], chain[2])
    fork = forged(gw, 2, chain[0].hash)
    store(ing, fork)
    assert stored_chain(engine) == [(1, chain[0].hash), (2, fork.hash)]
    assert findings(engine) == [("fork", 3, chain[2].hash, 2, fork.hash)]
    result = handle(ing, chain[1].wire)
    assert (result.status, result.reason) == ("rejected", "fork")
    assert findings(engine)[-1] == ("fork", 2, chain[1].hash, 2, fork.hash)


def test_batch_1_and_only_batch_1_names_genesis(engine: Engine, ing: Ingestor, gw: Gateway) -> None:
    chain = genuine_chain(gw)
    store(ing, chain[0])
    late_genesis = forged(gw, 4, "0" * 64)
    result = handle(ing, late_genesis.wire)
    assert (result.status, result.reason) == ("rejected", "chain_broken")
    assert stored_chain(engine) == [(1, chain[0].hash)]


def test_a_stored_batch_that_rotated_the_key_is_never_moved_aside(engine: Engine, ing: Ingestor,
                                                                  gw: Gateway) -> None:
    """Its rotation may already have been used; the genuine batch is refused, naming it."""
    chain = genuine_chain(gw)
    store(ing, chain[0])
    new_key = Ed25519PrivateKey.generate()
    rotation = Event(1000, KEY_ROTATED, key_id(new_key), rotation_data(gw.key, new_key, "thief"), T0 + 500,
                     None, None)
    fork = gw.seal_raw([rotation], batch_seq=3, prev_hash="ab" * 32)
    store(ing, fork)
    result = handle(ing, chain[1].wire)
    assert (result.status, result.reason) == ("rejected", "chain_broken")
    assert findings(engine) == [("chain_broken", 2, chain[1].hash, 3, fork.hash)]
    assert stored_chain(engine) == [(1, chain[0].hash), (3, fork.hash)]
