"""Fuzzing a store (the Ingestor on a real SQLite file and on PostgreSQL) with malformed or mutated
batches (fuzz_batches.py) signed by an enrolled gateway key, and with the gateway's genuine batches
damaged in transit.

For every message: no exception, an acknowledgement, and for a rejection a documented reason with
a detail, recorded in ``rejections``. Afterwards the genuine chain's rows are exactly as before,
and every batch the fuzz got stored holds exactly its document's values (read by an independent
JSON reader). ``BLACKBOX_FUZZ_STORE_EXAMPLES`` sets the count per database (default 400: each
rejection is a committed transaction, fsync included).
"""

from __future__ import annotations

import os
import random
from collections import Counter
from typing import Any

from fuzz_batches import GATEWAY, GENESIS, KEY, SITE, exact_json, make_wire, payload_document, tagged
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select
from store_synth import T0, Gateway
from stored import readings_of
from test_store_service import Agent, broker, make_service, root, store_engine  # noqa: F401 - fixtures

from blackbox.seal import open_batch
from blackbox.store.derive import decode_value
from blackbox.store.ingest import REASONS, Ingestor
from blackbox.store.schema import events, reading_chunks, rejections, sealed_batches
from blackbox.topics import GatewayTopics

EXAMPLES = int(os.environ.get("BLACKBOX_FUZZ_STORE_EXAMPLES", "400"))


def snapshot(engine: Engine, batch_seqs: list[int]) -> list[Any]:
    with engine.connect() as conn:
        sb = sealed_batches.c
        return [
            conn.execute(select(sb.batch_seq, sb.hash, sb.wire).where(sb.batch_seq.in_(batch_seqs))
                         .order_by(sb.batch_seq)).all(),
            readings_of(conn, reading_chunks.c.batch_seq.in_(batch_seqs)),
            conn.execute(select(events).where(events.c.batch_seq.in_(batch_seqs)).order_by(events.c.seq)).all(),
        ]


def damaged(rng: random.Random, wire: bytes) -> bytes:
    """A genuine batch as a hostile broker might pass it on."""
    how = rng.randrange(4)
    if how == 0:
        at = rng.randrange(len(wire))
        return wire[:at] + bytes([wire[at] ^ rng.randrange(1, 256)]) + wire[at + 1:]
    if how == 1:
        return wire[: rng.randrange(len(wire))]
    if how == 2:
        return wire + rng.randbytes(rng.randrange(1, 9))
    return wire  # a replay of the genuine batch: a duplicate


def test_a_store_answers_every_fuzzed_batch_and_keeps_its_data(engine: Engine) -> None:
    gw = Gateway(key=KEY, gateway=GATEWAY, site=SITE)
    ing = Ingestor(engine)
    ing.enroll(GATEWAY, SITE, gw.public_pem)
    genuine = []
    for b in range(3):
        for i in range(4):
            gw.reading("EM-01.temperature", 70.0 + b + i / 4, T0 + 10 * b + i)
        gw.event("qc.result", {"test": "pH", "value": 6.1 + b}, T0 + 10 * b + 5)
        genuine.append(gw.seal())
    assert [ing.handle(g.wire, SITE, GATEWAY).status for g in genuine] == ["stored"] * 3
    before = snapshot(engine, [1, 2, 3])
    prevs = [GENESIS, *(g.hash for g in genuine), "ab" * 32]
    outcomes: Counter[str] = Counter()
    stored: list[bytes] = []

    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(st.integers(0, 2**63))
    def check(seed: int) -> None:
        rng = random.Random(seed)
        if rng.random() < 0.25:
            wire = damaged(rng, rng.choice(genuine).wire)
        else:
            wire = make_wire(rng, rng.randrange(1, 6), rng.choice(prevs))
        result = ing.handle(wire, SITE, GATEWAY, topic=f"bb/{SITE}/{GATEWAY}/batches")
        outcomes[result.status if result.status != "rejected" else str(result.reason)] += 1
        if result.status == "rejected":
            assert result.reason in REASONS and result.detail, result
        elif result.status == "stored":
            stored.append(wire)
        else:
            assert result.status == "duplicate", result

    check()
    print(f"store fuzz on {engine.dialect.name}: {dict(outcomes)}")
    assert sum(outcomes.values()) == EXAMPLES
    assert snapshot(engine, [1, 2, 3]) == before, "the genuine chain's rows changed"
    rejected = sum(n for k, n in outcomes.items() if k not in ("stored", "duplicate"))
    with engine.connect() as conn:
        findings = conn.execute(select(func.count()).select_from(rejections)).scalar_one()
        moved = conn.execute(select(func.count()).select_from(rejections)
                             .where(rejections.c.detail.like("moved aside%"))).scalar_one()
        present = set(conn.execute(select(sealed_batches.c.hash)).scalars())
    assert findings == rejected + moved
    for wire in stored:  # what the fuzz got stored (and is still there) holds exactly its document
        opened = open_batch(wire)
        if opened.hash not in present:
            continue
        doc = exact_json(payload_document(wire))
        with engine.connect() as conn:
            rows = readings_of(conn, reading_chunks.c.batch_seq == opened.header.batch_seq)
        back = [[r.seq, r.tag, decode_value(r.kind, r.num, r.text), r.quality, r.reason, r.ts_us, r.source_ts_us,
                 r.batch, r.phase] for r in rows]
        assert tagged(back) == tagged(doc["r"])


MQTT_EXAMPLES = 100


def test_a_running_store_acknowledges_every_fuzzed_message_through_mqtt(
        make_service: Any, store_engine: Engine, root: str) -> None:  # noqa: F811 - fixtures imported above
    """The store service behind a real broker: one acknowledgement per message, never a crash."""
    gw = Gateway(key=KEY, gateway=GATEWAY, site=SITE)
    Ingestor(store_engine).enroll(GATEWAY, SITE, gw.public_pem)
    gw.reading("EM-01.temperature", 70.0, T0)
    genuine = gw.seal()
    agent = Agent(GatewayTopics(root, SITE, GATEWAY))
    svc = make_service()
    try:
        agent.publish(genuine.wire)
        assert agent.ack()["status"] == "stored"
        before = snapshot(store_engine, [1])
        rng = random.Random(20261204)
        for _ in range(MQTT_EXAMPLES):
            agent.publish(damaged(rng, genuine.wire) if rng.random() < 0.25
                          else make_wire(rng, rng.randrange(1, 4), rng.choice([GENESIS, genuine.hash])))
        acks = [agent.ack() for _ in range(MQTT_EXAMPLES)]
        for ack in acks:
            assert set(ack) == {"batch_seq", "hash", "status", "reason"}, ack
            assert ack["status"] in ("stored", "duplicate", "rejected"), ack
            assert (ack["reason"] in REASONS) == (ack["status"] == "rejected"), ack
        stats = svc.stats
        assert stats.stored + stats.duplicate + stats.rejected == MQTT_EXAMPLES + 1
        assert snapshot(store_engine, [1]) == before
        print(f"store fuzz through MQTT: {Counter(a['reason'] or a['status'] for a in acks)}")
    finally:
        agent.close()
