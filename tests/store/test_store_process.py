"""``blackbox store serve`` as systemd runs it: a real process, notify socket, watchdog, /health, /metrics."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml
from services import free_port_block
from sqlalchemy import Engine
from store_key import STORE_SIGNER, write_store_key
from store_synth import GATEWAY, SITE, T0
from test_store_service import HOST, PORT, TIMEOUT, Agent, enrolled_gateway, purge_session
from waiting import wait_until

from blackbox.config import MqttConfig, StoreConfig
from blackbox.demo import DEMO_CONFIG, write_config
from blackbox.store.db import make_engine
from blackbox.store.ingest import Ingestor, IngestResult, Prepared
from blackbox.store.schema import create_schema
from blackbox.store.service import StoreService, worker_client_id, worker_metrics_port
from blackbox.topics import GatewayTopics

BLACKBOX = [sys.executable, "-m", "blackbox", "--log-level", "INFO"]


class NotifySocket:
    """A real ``NOTIFY_SOCKET`` read without an event loop: what the store tells systemd."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def count(self, line: str) -> int:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                break
        return sum(line in m.split("\n") for m in self.messages)


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=TIMEOUT) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def sample(body: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in body.splitlines() if line.split(" ")[0] == name)


def test_store_serve_worker_notifies_systemd_serves_health_and_metrics_and_stops_cleanly(tmp_path: Path) -> None:
    root = f"bbtest-{uuid.uuid4().hex[:10]}"
    client_id = f"store-{uuid.uuid4().hex[:8]}"
    url = f"sqlite:///{tmp_path}/store.sqlite"
    write_store_key(tmp_path / "store.key")  # the key the test's gateway checks receipts with
    config = write_config(DEMO_CONFIG, tmp_path, opcua_port=1, modbus_port=2, database_url=url,
                          mqtt={"host": HOST, "port": PORT, "topic_root": root, "client_id": client_id})
    first = free_port_block(2)  # outside the ephemeral range: no client connection takes it meanwhile
    base = first + 1  # worker 2 listens on metrics_port + 1
    data = yaml.safe_load(config.read_text())
    data["store"]["metrics_port"] = first
    config.write_text(yaml.safe_dump(data))
    notify = NotifySocket(tmp_path / "notify.sock")
    env = {**os.environ, "NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"}
    proc = subprocess.Popen([*BLACKBOX, "store", "serve", "-c", str(config), "--worker", "2"], env=env,
                            stderr=(tmp_path / "store.log").open("w"))
    agent = Agent(GatewayTopics(root, SITE, GATEWAY))
    try:
        wait_until(lambda: notify.count("READY=1"), 30, "READY=1 from the store")
        wait_until(lambda: notify.count("WATCHDOG=1") >= 3, 10, "the store to ping the watchdog")
        status, body = get(base, "/health")
        assert status == 200 and body.startswith("ok"), body
        engine = make_engine(url)
        gw = enrolled_gateway(engine)
        engine.dispose()
        for k in range(3):
            gw.reading("EM-01.temperature", 70.0 + k, T0 + k)
        agent.publish(gw.seal().wire)
        assert agent.ack()["status"] == "stored"
        agent.publish(b"garbage")
        assert agent.ack()["reason"] == "malformed"
        status, body = get(base, "/metrics")
        assert status == 200
        assert sample(body, 'blackbox_store_batches_total{status="stored"}') == 1
        assert sample(body, 'blackbox_store_batches_rejected_total{reason="malformed"}') == 1
        assert sample(body, 'blackbox_store_batches_rejected_total{reason="fork"}') == 0
        assert sample(body, "blackbox_store_readings_ingested_total") == 3
        assert sample(body, "blackbox_store_mqtt_connected") == 1
        assert "blackbox_store_ingest_lag_seconds " in body and "blackbox_store_ingest_seconds_bucket" in body
        assert get(base, "/nothing")[0] == 404
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 0
        assert notify.count("STOPPING=1") == 1
        log = (tmp_path / "store.log").read_text()
        assert f"as {client_id}-2" in log and f"metrics on 127.0.0.1:{base}" in log
    finally:
        agent.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        purge_session(f"{client_id}-2")


def test_worker_client_ids_and_metrics_ports() -> None:
    mqtt = MqttConfig(client_id="store-eu")
    assert worker_client_id(mqtt, None) == "store-eu"
    assert worker_client_id(mqtt, "1") == "store-eu-1"
    assert worker_client_id(mqtt, "3") == "store-eu-3"
    assert worker_client_id(MqttConfig(), "a.b_c") == f"blackbox-store-{socket.gethostname()}"[:64] + "-a.b_c"
    for bad in ("", "two words", "x/y", "#", "w" * 33):
        with pytest.raises(ValueError, match="worker name"):
            worker_client_id(mqtt, bad)
    cfg = StoreConfig(metrics_port=9200)
    assert [worker_metrics_port(cfg, w) for w in (None, "1", "2", "10")] == [9200, 9200, 9201, 9209]
    assert worker_metrics_port(StoreConfig(), "2") is None
    assert worker_metrics_port(StoreConfig(metrics_port=0), "2") == 0
    for bad in ("a", "0"):
        with pytest.raises(ValueError, match="--metrics-port"):
            worker_metrics_port(cfg, bad)


def test_a_bad_worker_name_is_a_usage_error(tmp_path: Path) -> None:
    config = write_config(DEMO_CONFIG, tmp_path, opcua_port=1, modbus_port=2, mqtt={"host": HOST, "port": PORT},
                          database_url=f"sqlite:///{tmp_path}/store.sqlite")
    proc = subprocess.run([*BLACKBOX, "store", "serve", "-c", str(config), "--worker", "a/b"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "worker name 'a/b'" in proc.stderr, proc.stderr


class StuckIngestor(Ingestor):
    """Hangs in the database until released, like a lock wait that never ends."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.entered, self.release = threading.Event(), threading.Event()

    def store(self, prepared: Prepared) -> IngestResult:
        self.entered.set()
        self.release.wait(TIMEOUT)
        return super().store(prepared)


def test_a_worker_stuck_in_one_batch_is_unhealthy_and_stops_feeding_the_watchdog(tmp_path: Path) -> None:
    root, cid = f"bbtest-{uuid.uuid4().hex[:10]}", f"store-{uuid.uuid4().hex[:8]}"
    engine = make_engine(f"sqlite:///{tmp_path}/store.sqlite")
    create_schema(engine)
    stuck = StuckIngestor(engine)
    svc = StoreService(engine, MqttConfig(host=HOST, port=PORT, client_id=cid), root, ingestor=stuck,
                       signer=STORE_SIGNER)
    svc.stuck_after_s = 3.0  # an idle worker beats every HEARTBEAT_S (1 s)
    agent = Agent(GatewayTopics(root, SITE, GATEWAY))
    svc.start()
    try:
        assert svc.wait_subscribed(TIMEOUT)
        assert svc.worker_alive() and svc.health()[0]
        gw = enrolled_gateway(engine)
        gw.reading("EM-01.temperature", 70.0, T0)
        agent.publish(gw.seal().wire)
        assert stuck.entered.wait(TIMEOUT)
        wait_until(lambda: not svc.worker_alive(), 10, "the stuck stage to miss its heartbeat")
        healthy, detail = svc.health()
        assert not healthy and "has not answered" in detail
        stuck.release.set()
        assert agent.ack()["status"] == "stored"
        wait_until(lambda: svc.worker_alive(), 5, "the worker to answer again")
    finally:
        stuck.release.set()
        agent.close()
        svc.stop()
        engine.dispose()
        purge_session(cid)
