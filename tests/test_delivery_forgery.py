"""Crafted batches published straight to a real broker: the store refuses each with the right
reason, records it, and leaves the stored data untouched; a missing batch is a gap until it arrives.

Acceptance (issue 6): "Tampered, forged, replayed and forked batches (crafted by the test and
published straight to the broker) are rejected with the right reason and leave the stored data
untouched."
"""

from __future__ import annotations

import hashlib
import queue
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import Engine, select
from store_key import STORE_SIGNER
from uplink_support import Mosquitto

from blackbox.config import MqttConfig
from blackbox.model import Quality, Reading
from blackbox.seal import decode_records, open_batch, seal_batch
from blackbox.seal.header import encode_header
from blackbox.seal.wire import pack
from blackbox.store.chunks import stored_readings
from blackbox.store.db import make_engine
from blackbox.store.gateways import gateway_overview
from blackbox.store.ingest import Ingestor
from blackbox.store.schema import create_schema, events, rejections, sealed_batches
from blackbox.store.service import StoreService
from blackbox.topics import GatewayTopics

SITE, GATEWAY = "SH-PD-01", "gw-01"
T0 = 1_795_000_000_000_000


class Attacker:
    """Anyone with access to the broker: publishes raw bytes on any batch topic, reads the acks."""

    def __init__(self, broker: Mosquitto, root: str) -> None:
        self.root = root
        self.acks: queue.Queue[dict[str, Any]] = queue.Queue()
        subscribed: queue.Queue[bool] = queue.Queue()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                                  client_id=f"attacker-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{root}/+/+/acks", qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: subscribed.put(True)
        self.client.on_message = lambda c, u, m: self.acks.put(orjson.loads(m.payload))
        self.client.connect(broker.host, broker.port, 30)
        self.client.loop_start()
        assert subscribed.get(timeout=10)

    def send(self, wire: bytes, gateway: str = GATEWAY) -> dict[str, Any]:
        """Publish one message on ``gateway``'s batch topic and return the store's answer to it."""
        self.client.publish(GatewayTopics(self.root, SITE, gateway).batches, wire, qos=1)
        return self.acks.get(timeout=10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Chain:
    """The genuine gateway's chain: contiguous seqs, linked hashes, signed with its key."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self.key = key
        self.seq, self.batch_seq, self.prev = 1, 1, "0" * 64

    def records(self, n: int = 3) -> list[Any]:
        out = [Reading(self.seq + i, "EM-01.temperature", 70.0 + i, Quality.GOOD, None, T0 + self.seq + i, None,
                       "B-1", "emulsify") for i in range(n)]
        return out

    def seal(self, records: list[Any], *, key: Ed25519PrivateKey | None = None, batch_seq: int | None = None,
             prev: str | None = None, advance: bool = True) -> Any:
        sealed = seal_batch(records, site=SITE, gateway=GATEWAY, key=key or self.key,
                            batch_seq=self.batch_seq if batch_seq is None else batch_seq,
                            prev_hash=self.prev if prev is None else prev, config_hash="c" * 64)
        if advance:
            self.seq = records[-1].seq + 1
            self.batch_seq += 1
            self.prev = sealed.hash
        return sealed


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Attacker, Chain, Engine]]:
    engine = make_engine(f"sqlite:///{tmp_path}/store.sqlite")
    create_schema(engine)
    chain = Chain(Ed25519PrivateKey.generate())
    Ingestor(engine).enroll(GATEWAY, SITE, chain.key.public_key().public_bytes_raw().hex())
    root = f"bbt-{uuid.uuid4().hex[:8]}"
    with Mosquitto(tmp_path / "mosquitto") as broker:
        service = StoreService(engine, MqttConfig(host=broker.host, port=broker.port, topic_root=root,
                                                  client_id=f"store-{uuid.uuid4().hex[:6]}"), signer=STORE_SIGNER)
        service.start()
        assert service.wait_subscribed(10)
        attacker = Attacker(broker, root)
        try:
            yield attacker, chain, engine
        finally:
            attacker.close()
            service.stop()
            engine.dispose()


def stored(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return [conn.execute(select(sealed_batches.c.batch_seq, sealed_batches.c.hash, sealed_batches.c.wire)
                             .order_by(sealed_batches.c.batch_seq)).all(),
                stored_readings(conn),
                conn.execute(select(events).order_by(events.c.seq)).all()]


def last_rejection(engine: Engine) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(rejections).order_by(rejections.c.id.desc()).limit(1)).one()


def test_crafted_batches_are_rejected_with_their_reason_and_change_nothing(
    setup: tuple[Attacker, Chain, Engine],
) -> None:
    attacker, chain, engine = setup
    genuine = [chain.seal(chain.records()) for _ in range(3)]
    for g in genuine:
        assert attacker.send(g.wire)["status"] == "stored"
    before = stored(engine)
    next_records = chain.records()
    honest_next = chain.seal(next_records, advance=False)
    stranger = Ed25519PrivateKey.generate()

    tampered = bytearray(honest_next.wire)
    tampered[-100] ^= 0x01  # one bit of the compressed records
    header_claims_our_key = pack(encode_header(honest_next.header), b"\x28\xb5\x2f\xfd" + b"\x00" * 16)
    forged_signature = header_claims_our_key + stranger.sign(header_claims_our_key)
    old_copy_other_content = chain.seal(chain.records(5)[2:], batch_seq=2, prev=genuine[0].hash, advance=False)
    fork_of_3 = chain.seal([*chain.records(2)], batch_seq=3, prev=genuine[1].hash, advance=False)
    replayed_records = chain.seal([*genuine_records(genuine[2])], batch_seq=4, prev=genuine[2].hash, advance=False)
    broken_link = chain.seal(next_records, prev=hashlib.sha256(b"not the previous batch").hexdigest(), advance=False)

    cases: list[tuple[str, bytes, str, str]] = [
        ("tampered", bytes(tampered), GATEWAY, "bad_signature"),
        ("forged: our key id, someone else's signature", forged_signature, GATEWAY, "bad_signature"),
        ("forged: signed by an unknown key", chain.seal(next_records, key=stranger, advance=False).wire, GATEWAY,
         "unknown_key"),
        ("replayed: an old batch_seq with other content", old_copy_other_content.wire, GATEWAY, "fork"),
        ("forked: a second batch 3", fork_of_3.wire, GATEWAY, "fork"),
        ("replayed: stored records in a new batch", replayed_records.wire, GATEWAY, "replay"),
        ("chain broken", broken_link.wire, GATEWAY, "chain_broken"),
        ("malformed: garbage", b"\x00garbage\xff" * 10, GATEWAY, "malformed"),
        ("malformed: truncated", honest_next.wire[:-1], GATEWAY, "malformed"),
        ("on another gateway's topic", honest_next.wire, "gw-02", "topic_mismatch"),
    ]
    for name, wire, gateway, reason in cases:
        ack = attacker.send(wire, gateway)
        assert (ack["status"], ack["reason"]) == ("rejected", reason), name
        row = last_rejection(engine)
        assert (row.reason, row.raw_sha256, row.raw_size) == (reason, hashlib.sha256(wire).hexdigest(), len(wire)), name
        assert row.topic.endswith(f"/{gateway}/batches") and row.detail, name
        assert stored(engine) == before, f"{name}: the stored data changed"

    assert attacker.send(honest_next.wire)["status"] == "stored"  # the genuine next batch still goes in


def genuine_records(sealed: Any) -> list[Any]:
    return decode_records(open_batch(sealed.wire))


def test_an_unenrolled_gateway_is_refused(setup: tuple[Attacker, Chain, Engine]) -> None:
    attacker, _, engine = setup
    intruder = Ed25519PrivateKey.generate()
    wire = seal_batch([Reading(1, "x", 1.0, Quality.GOOD, None, T0, None, None, None)], site=SITE, gateway="gw-99",
                      key=intruder, batch_seq=1, prev_hash="0" * 64, config_hash="c" * 64).wire
    assert attacker.send(wire, "gw-99")["reason"] == "unknown_gateway"
    assert [g.gateway for g in gateway_overview(engine)] == [GATEWAY]  # nothing created for the intruder


def test_a_missing_batch_is_a_gap_until_it_arrives(setup: tuple[Attacker, Chain, Engine]) -> None:
    attacker, chain, engine = setup
    batches = [chain.seal(chain.records()) for _ in range(4)]
    for b in (batches[0], batches[1], batches[3]):
        assert attacker.send(b.wire)["status"] == "stored"
    (info,) = gateway_overview(engine)
    assert (info.batches, info.highest_batch_seq, info.missing_batches) == (3, 4, 1)
    assert attacker.send(batches[2].wire)["status"] == "stored"  # links to both stored neighbours
    (info,) = gateway_overview(engine)
    assert info.missing_batches == 0
