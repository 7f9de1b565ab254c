"""Signed receipts and the store's log, attacked through a real broker.

The gateway (the agent's real buffer, sealer and forwarder: :class:`Pipeline`) pins the store's
key; an attacker publishes on its acknowledgement topic. Whatever the attacker sends, a batch is
only counted delivered (and later pruned) on a receipt the pinned store key signed for that very
batch, whose log inclusion proof verifies; and a store log that was rewritten or truncated after
the gateway saw a tree head raises an alarm.
"""

from __future__ import annotations

import logging
import queue
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt_client
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import Engine, select, text
from store_key import STORE_SIGNER, STORE_VKEY
from uplink_support import Mosquitto, Pipeline, cli
from waiting import eventually

from blackbox.config import MqttConfig
from blackbox.seal import public_key_pem
from blackbox.store.db import make_engine
from blackbox.store.ingest import Ingestor
from blackbox.store.schema import create_schema, tlog_entries
from blackbox.store.service import StoreService
from blackbox.store.tlog import TransparencyLog, append_entry
from blackbox.tlog.entries import batch_entry
from blackbox.tlog.merkle import leaf_hash
from blackbox.tlog.note import Signer, open_checkpoint, open_note
from blackbox.tlog.receipt import Receipt, make_ack
from blackbox.topics import store_checkpoint_topic
from blackbox.uplink.forwarder import BAD_RECEIPT, LOG_INCONSISTENT

SITE, GATEWAY = "SH-PD-01", "gw-01"
FAST = {"ack_timeout": 0.3, "ack_timeout_max": 0.6}


@pytest.fixture
def mqtt(broker: Mosquitto) -> MqttConfig:
    return MqttConfig(host=broker.host, port=broker.port, topic_root=f"bbr-{uuid.uuid4().hex[:8]}")


class Wire:
    """Someone else on the broker: sees the gateway's acknowledgement topic and publishes on it."""

    def __init__(self, mqtt: MqttConfig) -> None:
        self.acks_topic = f"{mqtt.topic_root}/{SITE}/{GATEWAY}/acks"
        self.seen: queue.Queue[bytes] = queue.Queue()
        ready: queue.Queue[bool] = queue.Queue()
        self.client = mqtt_client.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                                         client_id=f"attacker-{uuid.uuid4().hex[:8]}")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(self.acks_topic, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: ready.put(True)
        self.client.on_message = lambda c, u, m: self.seen.put(bytes(m.payload))
        self.client.connect(mqtt.host, mqtt.port)
        self.client.loop_start()
        assert ready.get(timeout=10)

    def publish(self, doc: dict[str, Any] | bytes) -> None:
        payload = doc if isinstance(doc, bytes) else orjson.dumps(doc)
        self.client.publish(self.acks_topic, payload, qos=1).wait_for_publish(10)

    def receipt_of(self, batch_seq: int) -> dict[str, Any]:
        """The first acknowledgement seen for ``batch_seq`` that carries a receipt."""
        while True:
            raw = self.seen.get(timeout=20)
            doc = orjson.loads(raw) if raw.startswith(b"{") else {}
            if doc.get("batch_seq") == batch_seq and "receipt" in doc:
                return dict(doc)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Store:
    def __init__(self, path: Path, mqtt: MqttConfig) -> None:
        self.engine: Engine = make_engine(f"sqlite:///{path}")
        create_schema(self.engine)
        self.mqtt = mqtt.model_copy(update={"client_id": f"store-{uuid.uuid4().hex[:8]}"})
        self.service: StoreService | None = None

    def start(self) -> Store:
        self.service = StoreService(self.engine, self.mqtt, signer=STORE_SIGNER)
        self.service.start()
        assert self.service.wait_subscribed(10)
        return self

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()
            self.service = None


@pytest.fixture
def store(tmp_path: Path, mqtt: MqttConfig) -> Iterator[Store]:
    s = Store(tmp_path / "store.sqlite", mqtt)
    yield s
    s.stop()
    s.engine.dispose()


@pytest.fixture
def wire(mqtt: MqttConfig) -> Iterator[Wire]:
    w = Wire(mqtt)
    yield w
    w.close()


@pytest.fixture
async def gateway(tmp_path: Path, mqtt: MqttConfig, store: Store) -> AsyncIterator[tuple[Pipeline, list[str]]]:
    """A gateway whose key the store has enrolled; the alarms its forwarder raised."""
    (tmp_path / "agent").mkdir()
    p = Pipeline(tmp_path / "agent", mqtt, uplink=FAST)
    Ingestor(store.engine).enroll(GATEWAY, SITE, public_key_pem(p.key.public_key()))
    alarms: list[str] = []
    p.forwarder.on_alarm = lambda rule, _reason: alarms.append(rule)
    yield p, alarms
    await p.stop()


async def sealed(p: Pipeline, n: int = 5) -> tuple[int, str]:
    """Commit and seal ``n`` readings; (batch_seq, hash) of the new batch."""
    await p.commit(n)
    await p.sealer.flush()
    last = await p.db(p.buffer.last_sealed)
    assert last is not None
    return last.batch_seq, last.hash


async def pending(p: Pipeline) -> int:
    n, _ = await p.db(p.buffer.pending_counts)
    return int(n)


def receipt_for(signer: Signer, batch_seq: int, hash_: str, *, site: str = SITE, gateway: str = GATEWAY,
                root: bytes | None = None, receipt_hash: str | None = None) -> dict[str, Any]:
    """A well-formed acknowledgement of a one-entry log holding this batch, signed by ``signer``."""
    received = 1_000
    entry = batch_entry(site, gateway, batch_seq, receipt_hash or hash_, received)
    r = Receipt(signer.name, site, gateway, batch_seq, receipt_hash or hash_, "stored", None, 0, received, 1,
                root if root is not None else leaf_hash(entry), 2_000)
    doc: dict[str, Any] = orjson.loads(make_ack(signer, r, []))
    doc["hash"] = hash_  # the plain field names the gateway's batch, whatever the receipt says
    return doc


FORGERIES: dict[str, Callable[[int, str], dict[str, Any]]] = {
    "unsigned": lambda seq, h: {"batch_seq": seq, "hash": h, "status": "stored", "reason": None},
    "wrong key, same name": lambda seq, h: receipt_for(Signer(STORE_SIGNER.name, Ed25519PrivateKey.generate()),
                                                       seq, h),
    "another store's key": lambda seq, h: receipt_for(Signer("evil-store", Ed25519PrivateKey.generate()), seq, h),
    "store key, batch not in the log": lambda seq, h: receipt_for(STORE_SIGNER, seq, h, root=bytes(32)),
    "store key, another gateway": lambda seq, h: receipt_for(STORE_SIGNER, seq, h, gateway="gw-02"),
    "store key, another batch": lambda seq, h: receipt_for(STORE_SIGNER, seq, h, receipt_hash="e" * 64),
}


@pytest.mark.parametrize("forgery", list(FORGERIES))
async def test_a_receipt_that_does_not_verify_never_marks_a_batch_delivered(
        gateway: tuple[Pipeline, list[str]], store: Store, wire: Wire, forgery: str) -> None:
    p, alarms = gateway
    await p.start()
    await p.connected()  # subscribed to its acknowledgement topic: the forgery cannot pass it by
    seq, h = await sealed(p)
    wire.publish(FORGERIES[forgery](seq, h))
    await eventually(lambda: p.forwarder.bad_receipts == 1, 10, "the forged receipt to be refused")
    assert await pending(p) == 1, "the batch is still waiting for a genuine receipt"
    assert p.forwarder.delivered == 0 and alarms == [BAD_RECEIPT]
    assert await p.db(p.buffer.receipts) == []

    store.start()  # the genuine store: delayed, never lost
    await p.delivered()
    kept = await p.db(p.buffer.receipts)
    assert [(r["batch_seq"], r["hash"], r["status"]) for r in kept] == [(seq, h, "stored")]
    receipt = Receipt.parse(open_note(kept[0]["receipt"], STORE_SIGNER.verifier))
    assert (receipt.site, receipt.gateway, receipt.batch_seq, receipt.hash) == (SITE, GATEWAY, seq, h)


async def test_replayed_receipts_are_refused_or_ignored(gateway: tuple[Pipeline, list[str]], store: Store,
                                                        wire: Wire, caplog: pytest.LogCaptureFixture) -> None:
    p, alarms = gateway
    store.start()
    await p.start()
    first_seq, _ = await sealed(p)
    await p.delivered()
    genuine = wire.receipt_of(first_seq)
    store.stop()
    seq, h = await sealed(p)

    caplog.set_level(logging.INFO)
    wire.publish(genuine)  # batch 1's receipt again: already delivered, not a problem
    await eventually(lambda: p.forwarder.ignored_acks >= 1, 10, "the replay to be ignored")
    assert p.forwarder.bad_receipts == 0 and alarms == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

    wire.publish({**genuine, "batch_seq": seq, "hash": h})  # batch 1's receipt passed off as batch 2's
    await eventually(lambda: p.forwarder.bad_receipts == 1, 10, "the replayed receipt to be refused")
    assert await pending(p) == 1 and alarms == [BAD_RECEIPT]

    store.start()
    await p.delivered()
    assert [r["batch_seq"] for r in await p.db(p.buffer.receipts)] == [first_seq, seq]


async def test_acks_about_batches_this_gateway_did_not_seal_are_only_counted(
        gateway: tuple[Pipeline, list[str]], wire: Wire, caplog: pytest.LogCaptureFixture) -> None:
    p, alarms = gateway
    await p.start()
    await p.connected()
    seq, _ = await sealed(p)
    caplog.set_level(logging.INFO)
    wire.publish({"batch_seq": 99, "hash": "f" * 64, "status": "rejected", "reason": "bad_signature"})
    wire.publish({"batch_seq": seq, "hash": "0" * 64, "status": "stored", "reason": None})  # not our batch's hash
    wire.publish(b"\x00garbage")
    await eventually(lambda: p.forwarder.ignored_acks == 3, 10, "three foreign acks to be counted")
    assert p.forwarder.bad_receipts == 0 and p.forwarder.rejected == 0 and alarms == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert await pending(p) == 1


async def adopted_head(p: Pipeline, store: Store) -> int:
    """Wait until the gateway has adopted the store's current tree head; its size."""
    size, _ = TransparencyLog(store.engine).head()
    await eventually(lambda: p.forwarder.stats().store_tree_size == size, 10, f"the gateway to adopt tree head {size}")
    return size


def rewrite_log(engine: Engine, change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> None:
    """What a database administrator could do: change the entries and rebuild the whole tree."""
    with engine.begin() as conn:
        docs = [orjson.loads(d) for d in conn.execute(select(tlog_entries.c.data).order_by(tlog_entries.c.idx))
                .scalars()]
        conn.execute(text("DELETE FROM tlog_entries"))
        conn.execute(text("DELETE FROM tlog_nodes"))
        conn.execute(text("UPDATE tlog_state SET size = 0, "
                          "root = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'"))
        for doc in change(docs):
            kind = doc.pop("kind")
            append_entry(conn, kind, doc)


REWRITES: dict[str, Callable[[list[dict[str, Any]]], list[dict[str, Any]]]] = {
    "an entry rewritten": lambda docs: [{**d, "at_us": 1} if d["kind"] == "key.enrolled" else d for d in docs],
    "the last entry deleted": lambda docs: docs[:-1],
}


@pytest.mark.parametrize("rewrite", list(REWRITES))
async def test_a_rewritten_or_truncated_store_log_raises_an_alarm(
        gateway: tuple[Pipeline, list[str]], store: Store, rewrite: str) -> None:
    p, alarms = gateway
    store.start()
    await p.start()
    await sealed(p)
    await p.delivered()
    await sealed(p)
    await p.delivered()  # the gateway has proven the tree head after batch 2 extends the one after batch 1
    kept = await adopted_head(p, store)
    assert alarms == []

    rewrite_log(store.engine, REWRITES[rewrite])
    await sealed(p)
    await p.delivered()  # the store still accepts and signs: the batch is in its (new) log
    await eventually(lambda: LOG_INCONSISTENT in alarms, 10, "the gateway to find the log inconsistent")
    assert p.forwarder.stats().log_inconsistent == 1
    assert p.forwarder.stats().store_tree_size == kept  # the inconsistent head is never adopted
    note = await p.db(p.buffer.meta_value, "store_checkpoint")
    assert note is not None and open_checkpoint(note, STORE_SIGNER.verifier).size == kept


async def test_the_store_publishes_its_signed_checkpoint_retained(gateway: tuple[Pipeline, list[str]],
                                                                   store: Store, mqtt: MqttConfig) -> None:
    p, _ = gateway
    store.start()
    await p.start()
    await sealed(p)
    await p.delivered()
    size, root = TransparencyLog(store.engine).head()
    published: queue.Queue[bytes] = queue.Queue()
    probe = mqtt_client.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                               client_id=f"probe-{uuid.uuid4().hex[:6]}")
    probe.on_connect = lambda c, u, f, rc, pr: c.subscribe(store_checkpoint_topic(mqtt.topic_root), qos=1)
    probe.on_message = lambda c, u, m: published.put(bytes(m.payload))
    probe.connect(mqtt.host, mqtt.port)
    probe.loop_start()
    try:  # the store has published a checkpoint (retained or live) before the late subscriber comes
        published.get(timeout=20)
    finally:
        probe.disconnect()
        probe.loop_stop()
    notes: queue.Queue[tuple[bytes, bool]] = queue.Queue()
    late = mqtt_client.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                              client_id=f"late-{uuid.uuid4().hex[:6]}")
    late.on_connect = lambda c, u, f, rc, pr: c.subscribe(store_checkpoint_topic(mqtt.topic_root), qos=1)
    late.on_message = lambda c, u, m: notes.put((bytes(m.payload), bool(m.retain)))
    late.connect(mqtt.host, mqtt.port)  # subscribes after the store published: the first one is the retained one
    late.loop_start()
    try:
        first, retained = notes.get(timeout=20)
        assert retained
        notes.put((first, retained))
        while True:  # the store publishes at most once a second: the head of this size comes soon
            cp = open_checkpoint(notes.get(timeout=20)[0], STORE_SIGNER.verifier)
            assert cp.root == TransparencyLog(store.engine).root(cp.size)
            if cp.size == size:
                break
        assert cp.root == root
    finally:
        late.disconnect()
        late.loop_stop()


async def test_the_kept_tree_head_survives_a_restart(gateway: tuple[Pipeline, list[str]], store: Store,
                                                     mqtt: MqttConfig) -> None:
    p, _ = gateway
    store.start()
    await p.start()
    await sealed(p)
    await p.delivered()
    kept = await adopted_head(p, store)
    again = Pipeline(p.workdir, mqtt, key=p.key)  # the same buffer, as after a restart of the agent
    try:
        await again.forwarder.refresh_delivered()
        assert again.forwarder.stats().store_tree_size == kept
    finally:
        await again.stop()


async def test_receipts_cli_lists_and_exports_them(gateway: tuple[Pipeline, list[str]], store: Store,
                                                   tmp_path: Path, mqtt: MqttConfig) -> None:
    p, _ = gateway
    store.start()
    await p.start()
    for _ in range(2):
        await sealed(p)
        await p.delivered()
    kept = await adopted_head(p, store)
    config = tmp_path / "agent.yaml"
    config.write_text(orjson.dumps({
        "site": {"id": SITE, "name": "t", "licence": "x"}, "gateway": {"id": GATEWAY, "key_file": str(p.key_file)},
        "buffer": {"path": str(p.workdir / "buffer.sqlite")}, "uplink": {"store_key": STORE_VKEY}}).decode())
    listing = cli("receipts", "-c", str(config))
    assert [line.split()[:2] for line in listing.splitlines()] == [["batch", "1"], ["batch", "2"]]
    out = tmp_path / "receipts.json"
    cli("receipts", "-c", str(config), "--export", str(out))
    doc = orjson.loads(out.read_bytes())
    assert doc["store_key"] == STORE_VKEY and [r["batch_seq"] for r in doc["receipts"]] == [1, 2]
    latest = open_checkpoint(doc["latest_checkpoint"], STORE_SIGNER.verifier)
    assert latest.size == kept
