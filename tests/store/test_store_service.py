"""The store service against the real Mosquitto at 127.0.0.1:1883: batch in, ack out, after commit."""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import orjson
import paho.mqtt.client as mqtt
import pytest
from alembic_head import HEAD
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import SecretStr
from services import unavailable
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import OperationalError
from store_key import STORE_SIGNER, write_store_key
from store_synth import GATEWAY, SITE, T0, Gateway
from waiting import wait_until

from blackbox.config import MqttConfig, StoreConfig
from blackbox.store.db import make_engine
from blackbox.store.ingest import Ingestor, IngestResult, Prepared
from blackbox.store.migrate import current_revision
from blackbox.store.schema import create_schema, reading_chunks
from blackbox.store.service import StoreService, run_store
from blackbox.tlog.receipt import verify_ack
from blackbox.topics import GatewayTopics

HOST = os.environ.get("BLACKBOX_TEST_MQTT_HOST", "127.0.0.1")
PORT = int(os.environ.get("BLACKBOX_TEST_MQTT_PORT", "1883"))
TIMEOUT = 10.0


@pytest.fixture(scope="module", autouse=True)
def broker() -> None:
    try:
        socket.create_connection((HOST, PORT), timeout=2).close()
    except OSError as exc:
        unavailable(f"no MQTT broker at {HOST}:{PORT}: {exc}")


@pytest.fixture
def root() -> str:
    return f"bbtest-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def store_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path}/store.sqlite")
    create_schema(engine)
    yield engine
    engine.dispose()


class Agent:
    """A gateway's MQTT side, reduced to what the test needs: publish batches, collect acks."""

    def __init__(self, topics: GatewayTopics, protocol: Literal["5", "3.1.1"] = "5") -> None:
        self.topics = topics
        self.acks: queue.Queue[dict[str, Any]] = queue.Queue()
        self.ready: queue.Queue[bool] = queue.Queue()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"agent-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311,
        )
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topics.acks, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.ready.put(not rcs[0].is_failure)
        self.client.on_message = lambda c, u, m: self.acks.put(orjson.loads(m.payload))
        self.client.connect(HOST, PORT, 30)
        self.client.loop_start()
        assert self.ready.get(timeout=TIMEOUT), "ack subscription refused"

    def publish(self, wire: bytes) -> None:
        self.client.publish(self.topics.batches, wire, qos=1)

    def ack(self) -> dict[str, Any]:
        """The next acknowledgement's plain fields, once its signed receipt (if it has one) verified."""
        doc = self.acks.get(timeout=TIMEOUT)
        if "receipt" in doc:
            verify_ack(doc, STORE_SIGNER.verifier, self.topics.site, self.topics.gateway)
        return {k: doc[k] for k in ("batch_seq", "hash", "status", "reason")}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def purge_session(client_id: str) -> None:
    """Remove the store's persistent session from the broker (connect clean, expiry 0)."""
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho leaves it unannotated
    props.SessionExpiryInterval = 0
    c.connect(HOST, PORT, 30, clean_start=True, properties=props)
    c.loop_start()
    c.disconnect()
    c.loop_stop()


@pytest.fixture
def make_service(store_engine: Engine, root: str) -> Iterator[Any]:
    started: list[StoreService] = []
    client_ids: set[str] = set()

    def make(protocol: Literal["5", "3.1.1"] = "5", client_id: str | None = None) -> StoreService:
        cid = client_id or f"store-{uuid.uuid4().hex[:8]}"
        client_ids.add(cid)
        svc = StoreService(store_engine, MqttConfig(host=HOST, port=PORT, protocol=protocol, client_id=cid), root,
                           signer=STORE_SIGNER)
        svc.start()
        started.append(svc)
        assert svc.wait_subscribed(TIMEOUT), "the store did not get its subscription"
        return svc

    yield make
    for svc in started:
        svc.stop()
    for cid in client_ids:
        purge_session(cid)


def enrolled_gateway(engine: Engine) -> Gateway:
    gw = Gateway()
    Ingestor(engine).enroll(GATEWAY, SITE, gw.public_pem)
    return gw


def n_readings(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.coalesce(func.sum(reading_chunks.c.n), 0))).scalar_one())


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_batch_round_trip_ack_after_commit(
    make_service: Any, store_engine: Engine, root: str, protocol: Literal["5", "3.1.1"]
) -> None:
    gw = enrolled_gateway(store_engine)
    agent = Agent(GatewayTopics(root, SITE, GATEWAY), protocol)
    at_ack: queue.Queue[int] = queue.Queue()
    svc = make_service(protocol)
    publish = svc.client.publish

    def publish_counting(topic: str, payload: bytes, qos: int = 0, **kw: Any) -> Any:
        """The store's own publish, noting how many readings are committed as each ack goes out."""
        if topic == agent.topics.acks:
            at_ack.put(n_readings(store_engine))
        return publish(topic, payload, qos=qos, **kw)

    svc.client.publish = publish_counting
    try:
        for i in range(3):
            gw.reading("EM-01.temperature", 70.0 + i, T0 + i)
        sealed = gw.seal()
        agent.publish(sealed.wire)
        ack = agent.ack()
        assert ack == {"batch_seq": 1, "hash": sealed.hash, "status": "stored", "reason": None}
        assert at_ack.get(timeout=TIMEOUT) == 3  # committed before the ack went out

        agent.publish(sealed.wire)
        assert agent.ack() == {"batch_seq": 1, "hash": sealed.hash, "status": "duplicate", "reason": None}

        agent.publish(b"not a batch")
        assert agent.ack() == {"batch_seq": None, "hash": None, "status": "rejected", "reason": "malformed"}
        assert (svc.stats.stored, svc.stats.duplicate, svc.stats.rejected) == (1, 1, 1)
    finally:
        agent.close()


def test_batches_published_while_the_store_is_down_are_delivered(
    make_service: Any, store_engine: Engine, root: str
) -> None:
    gw = enrolled_gateway(store_engine)
    agent = Agent(GatewayTopics(root, SITE, GATEWAY))
    client_id = f"store-{uuid.uuid4().hex[:8]}"
    try:
        first = make_service(client_id=client_id)
        first.stop()  # the session stays at the broker
        hashes = []
        for k in range(3):
            gw.reading("EM-01.temperature", 70.0 + k, T0 + k)
            sealed = gw.seal()
            hashes.append(sealed.hash)
            agent.publish(sealed.wire)
        make_service(client_id=client_id)
        acks = sorted((agent.ack() for _ in range(3)), key=lambda a: a["batch_seq"])
        assert [(a["batch_seq"], a["hash"], a["status"]) for a in acks] == [
            (1, hashes[0], "stored"),
            (2, hashes[1], "stored"),
            (3, hashes[2], "stored"),
        ]
        assert n_readings(store_engine) == 3
    finally:
        agent.close()


def test_run_store_serves_until_stopped(tmp_path: Path, root: str) -> None:
    url = f"sqlite:///{tmp_path}/var/store.sqlite"  # run_store creates var/ and migrates
    client_id = f"store-{uuid.uuid4().hex[:8]}"
    config = StoreConfig(database_url=url, mqtt=MqttConfig(host=HOST, port=PORT, client_id=client_id, topic_root=root),
                         key_file=write_store_key(tmp_path / "store.key"), log_origin=STORE_SIGNER.name)
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=run_store, args=(config, stop), kwargs={"ready": ready}, daemon=True)
    thread.start()
    agent = Agent(GatewayTopics(root, SITE, GATEWAY))
    engine = make_engine(url)
    try:
        assert ready.wait(TIMEOUT), "run_store never got its subscription"
        gw = enrolled_gateway(engine)
        gw.reading("EM-01.temperature", 70.0, T0)
        sealed = gw.seal()
        agent.publish(sealed.wire)
        assert agent.ack() == {"batch_seq": 1, "hash": sealed.hash, "status": "stored", "reason": None}
        assert current_revision(engine) == HEAD
    finally:
        agent.close()
        stop.set()
        thread.join(TIMEOUT)
        engine.dispose()
        purge_session(client_id)
    assert not thread.is_alive()


class HeldIngestor(Ingestor):
    """Holds every batch at ``stage`` until ``gate`` opens: in stage 1 (``"prepare"``), as a store far
    behind its gateways; in stage 2 (``"store"``), as a commit inside a database call that does not
    come back."""

    def __init__(self, engine: Engine, stage: Literal["prepare", "store"]) -> None:
        super().__init__(engine)
        self.stage = stage
        self.gate = threading.Event()
        self.entered = threading.Event()

    def _hold(self, stage: str) -> None:
        if stage == self.stage:
            self.entered.set()
            assert self.gate.wait(3 * TIMEOUT), "the test never opened the gate"

    def prepare(self, wire: bytes, topic_site: str, topic_gateway: str, *,
                topic: str | None = None) -> Prepared | IngestResult:
        self._hold("prepare")
        return super().prepare(wire, topic_site, topic_gateway, topic=topic)

    def store(self, prepared: Prepared) -> IngestResult:
        self._hold("store")
        return super().store(prepared)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_store_with_a_full_queue_stops(store_engine: Engine, root: str, protocol: Literal["5", "3.1.1"]) -> None:
    """Stopping while paho's thread waits for room in a full queue: the worker leaves, and the wait
    must end too (it once held ``loop_stop`` for ever). Mosquitto sends 3.1.1 clients 20 unacknowledged
    messages whatever the queue holds, so there the queue of 2 overflows."""
    gw = enrolled_gateway(store_engine)
    agent = Agent(GatewayTopics(root, SITE, GATEWAY), protocol)
    gated = HeldIngestor(store_engine, "prepare")
    cid = f"store-{uuid.uuid4().hex[:8]}"
    svc = StoreService(store_engine, MqttConfig(host=HOST, port=PORT, protocol=protocol, client_id=cid), root,
                       ingestor=gated, queue_size=2, signer=STORE_SIGNER)
    svc.start()
    stopper = threading.Thread(target=svc.stop, daemon=True)
    try:
        assert svc.wait_subscribed(TIMEOUT)
        for k in range(10):
            gw.reading("EM-01.temperature", 70.0 + k, T0 + k)
            agent.publish(gw.seal().wire)
        assert gated.entered.wait(TIMEOUT), "the first batch never reached the worker"
        # MQTT 5: the broker sends 2 (the receive maximum), one of them in the worker; 3.1.1: the queue fills
        full = {"5": 1, "3.1.1": 2}[protocol]
        wait_until(lambda: svc.backlog == full, TIMEOUT, f"{full} batches waiting in the queue")
        stopper.start()
        gated.gate.set()
        stopper.join(3 * TIMEOUT)
        assert not stopper.is_alive(), "stop() hangs while paho's thread waits for room in the queue"
    finally:
        gated.gate.set()
        agent.close()
        purge_session(cid)


def test_a_store_whose_commit_hangs_stops_within_its_timeout_and_says_so(
    store_engine: Engine, root: str, caplog: pytest.LogCaptureFixture
) -> None:
    gw = enrolled_gateway(store_engine)
    agent = Agent(GatewayTopics(root, SITE, GATEWAY))
    stuck = HeldIngestor(store_engine, "store")
    cid = f"store-{uuid.uuid4().hex[:8]}"
    svc = StoreService(store_engine, MqttConfig(host=HOST, port=PORT, client_id=cid), root, ingestor=stuck,
                       signer=STORE_SIGNER)
    svc.start()
    stopper = threading.Thread(target=svc.stop, kwargs={"timeout": 0.5}, daemon=True)
    try:
        assert svc.wait_subscribed(TIMEOUT)
        gw.reading("EM-01.temperature", 70.0, T0)
        agent.publish(gw.seal().wire)
        assert stuck.entered.wait(TIMEOUT), "the batch never reached the commit stage"
        with caplog.at_level(logging.WARNING, logger="blackbox.store.service"):
            stopper.start()
            stopper.join(TIMEOUT)
        assert not stopper.is_alive(), "stop() waited for the hung commit beyond its timeout"
        warned = [r.getMessage() for r in caplog.records if "did not stop in time" in r.getMessage()]
        assert warned == ["a store thread did not stop in time, and the store stops without it: what it holds "
                          "stays unacknowledged at the broker (blackbox-store-commit, waited 0.5 s)"]
        assert agent.acks.empty()  # nothing was acknowledged: the broker delivers the batch again
    finally:
        stuck.gate.set()
        agent.close()
        purge_session(cid)


def test_the_store_asks_the_broker_for_no_more_than_its_queue_holds(store_engine: Engine, root: str) -> None:
    """The CONNECT the store sends (MQTT 5), read off the wire by a listener posing as the broker."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)
    port = listener.getsockname()[1]
    svc = StoreService(store_engine, MqttConfig(host="127.0.0.1", port=port, protocol="5", client_id="store-rm"),
                       root, queue_size=37, signer=STORE_SIGNER)
    svc.start()
    try:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(TIMEOUT)
            kind, body = read_mqtt_packet(conn)
    finally:
        listener.close()
        svc.stop()
    assert kind == 0x10, "not a CONNECT"
    name_length = int.from_bytes(body[:2], "big")
    level = body[2 + name_length]
    assert level == 5
    properties = body[2 + name_length + 4:]  # level, flags, keep-alive
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho leaves it unannotated
    props.unpack(properties)  # type: ignore[no-untyped-call]
    sent = props.json()  # type: ignore[no-untyped-call]
    assert sent["ReceiveMaximum"] == 37
    assert sent["SessionExpiryInterval"] > 0


def read_mqtt_packet(conn: socket.socket) -> tuple[int, bytes]:
    """One MQTT control packet off ``conn``: its first byte (type and flags) and its body."""
    data = b""
    while (header := fixed_header(data)) is None or len(data) < sum(header):
        chunk = conn.recv(4096)
        assert chunk, "the client hung up before sending a whole packet"
        data += chunk
    return data[0], data[header[0]:sum(header)]


def fixed_header(data: bytes) -> tuple[int, int] | None:
    """``(header size, remaining length)``, or ``None`` while ``data`` holds no whole fixed header
    (the length is a variable-length integer of up to 4 bytes)."""
    length = 0
    for i, byte in enumerate(data[1:5]):
        length |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return 2 + i, length
    return None


class FlakyIngestor(Ingestor):
    """Fails like a database that went away, the first ``failures`` times it stores a batch."""

    def __init__(self, engine: Engine, failures: int) -> None:
        super().__init__(engine)
        self.failures = failures
        self.calls = 0

    def store(self, prepared: Prepared) -> IngestResult:
        self.calls += 1
        if self.calls <= self.failures:
            raise OperationalError("INSERT ...", {}, Exception("server closed the connection unexpectedly"))
        return super().store(prepared)


def test_database_failure_is_retried_not_rejected(store_engine: Engine, root: str) -> None:
    gw = enrolled_gateway(store_engine)
    agent = Agent(GatewayTopics(root, SITE, GATEWAY))
    flaky = FlakyIngestor(store_engine, failures=1)
    cid = f"store-{uuid.uuid4().hex[:8]}"
    svc = StoreService(store_engine, MqttConfig(host=HOST, port=PORT, client_id=cid), root, ingestor=flaky,
                       signer=STORE_SIGNER)
    svc.start()
    try:
        assert svc.wait_subscribed(TIMEOUT)
        gw.reading("EM-01.temperature", 70.0, T0)
        sealed = gw.seal()
        agent.publish(sealed.wire)
        assert agent.ack() == {"batch_seq": 1, "hash": sealed.hash, "status": "stored", "reason": None}
        assert flaky.calls == 2 and svc.stats.errors == 1
        assert agent.acks.empty()  # one ack only: the failure was not reported as a rejection
    finally:
        agent.close()
        svc.stop()
        purge_session(cid)


def test_credentials_are_used_and_never_logged(
    store_engine: Engine, root: str, caplog: pytest.LogCaptureFixture
) -> None:
    secret = f"s3cret-{uuid.uuid4().hex}"
    cid = f"store-{uuid.uuid4().hex[:8]}"
    config = MqttConfig(host=HOST, port=PORT, client_id=cid, username="store", password=SecretStr(secret))
    svc = StoreService(store_engine, config, root, signer=STORE_SIGNER)
    caplog.set_level(logging.DEBUG)
    svc.start()
    try:
        assert svc.wait_subscribed(TIMEOUT)
        assert svc.client._password == secret.encode()  # handed to paho, and only there
    finally:
        svc.stop()
        purge_session(cid)
    assert caplog.records, "the service logs its connection"
    assert secret not in caplog.text
