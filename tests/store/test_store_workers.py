"""Several store workers on one PostgreSQL: real ``blackbox store serve`` processes sharing the batch
topic (MQTT 5 shared subscription) on the machine's Mosquitto, several gateways whose batches,
re-sends and out-of-order replays land on different workers; and the per-gateway lock of ingest
attacked directly by threads ingesting the same gateway at the same instant."""

from __future__ import annotations

import functools
import hashlib
import queue
import random
import signal
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from services import free_port_block, fresh_postgres_database
from sqlalchemy import text
from store_key import write_store_key
from store_synth import SITE, T0, Gateway
from stored import readings_of
from test_store_service import HOST, PORT, TIMEOUT, purge_session
from waiting import wait_until

from blackbox.model import Quality, Reading
from blackbox.store.db import make_engine
from blackbox.store.ingest import Ingestor
from blackbox.store.migrate import upgrade_schema
from blackbox.store.partitions import existing_partitions
from blackbox.store.schema import reading_chunks
from blackbox.topics import GatewayTopics

BLACKBOX = [sys.executable, "-m", "blackbox", "--log-level", "INFO"]
BATCHES = 6


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_postgres_database() as url:
        engine = make_engine(url)
        upgrade_schema(engine)  # blackbox store migrate, before the workers start
        engine.dispose()
        yield url


class Acks:
    """Every acknowledgement published under ``root``, as (gateway, ack)."""

    def __init__(self, root: str) -> None:
        self.items: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        ready: queue.Queue[bool] = queue.Queue()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                                  client_id=f"acks-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{root}/+/+/acks", qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: ready.put(not rcs[0].is_failure)
        self.client.on_message = lambda c, u, m: self.items.put((m.topic.split("/")[-2], orjson.loads(m.payload)))
        self.client.connect(HOST, PORT, 30)
        self.client.loop_start()
        assert ready.get(timeout=TIMEOUT)

    def publish(self, topic: str, wire: bytes) -> None:
        self.client.publish(topic, wire, qos=1).wait_for_publish(TIMEOUT)

    def take(self, n: int) -> list[tuple[str, dict[str, Any]]]:
        return [self.items.get(timeout=3 * TIMEOUT) for _ in range(n)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=TIMEOUT) as response:
        body = response.read().decode()
    return sum(float(line.split()[-1]) for line in body.splitlines() if line.split(" ")[0] == name)


def subscribed(port: int) -> bool:
    try:
        return metric(port, "blackbox_store_mqtt_connected") == 1
    except OSError:  # not listening yet
        return False


def rfc6962_root(leaves: list[bytes]) -> bytes:
    """RFC 6962 Merkle tree hash, written out from section 2.1 (independent of the store's code)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + rfc6962_root(leaves[:k]) + rfc6962_root(leaves[k:])).digest()


@pytest.mark.parametrize("workers", [2, 3])
def test_workers_share_the_batches_store_each_once_and_keep_every_chain(
    tmp_path: Path, pg_url: str, workers: int
) -> None:
    root, base_id = f"bbtest-{uuid.uuid4().hex[:10]}", f"store-{uuid.uuid4().hex[:8]}"
    metrics_base = free_port_block(workers)  # worker N listens on metrics_port + N - 1
    config = tmp_path / "store.yaml"
    config.write_text(yaml.safe_dump({"store": {
        "database_url": pg_url, "metrics_port": metrics_base, "key_file": str(write_store_key(tmp_path / "s.key")),
        "mqtt": {"host": HOST, "port": PORT, "topic_root": root, "client_id": base_id}}}))
    engine = make_engine(pg_url)
    gateways = {f"gw-{k}": Gateway(gateway=f"gw-{k}") for k in range(4)}
    for name, gw in gateways.items():
        Ingestor(engine).enroll(name, SITE, gw.public_pem)
    chains: dict[str, list[Any]] = {}
    for g, (name, gw) in enumerate(gateways.items()):
        chains[name] = []
        for b in range(BATCHES):
            for k in range(50):
                gw.reading(f"T-{k % 5}.pv", float(g * 1000 + b * 50 + k), T0 + (b * 50 + k) * 1000)
            chains[name].append(gw.seal())
    # what the gateways send: every batch, out of order, with re-sends (some back to back, so that
    # two workers hold the same batch at once)
    rng = random.Random(11)
    sends: list[tuple[str, bytes]] = []
    for name, chain in chains.items():
        order = [s.wire for s in chain]
        rng.shuffle(order)
        order += [chain[0].wire, chain[3].wire, chain[3].wire, chain[-1].wire]
        sends += [(name, w) for w in order]
    rng.shuffle(sends)

    procs = [subprocess.Popen([*BLACKBOX, "store", "serve", "-c", str(config), "--worker", str(i + 1)],
                              stderr=(tmp_path / f"worker-{i + 1}.log").open("w")) for i in range(workers)]
    acks = Acks(root)
    try:
        for i in range(workers):
            wait_until(functools.partial(subscribed, metrics_base + i), 30, f"worker {i + 1} to subscribe")
        for name, wire in sends:
            acks.publish(GatewayTopics(root, SITE, name).batches, wire)
        got = acks.take(len(sends))

        # every message answered once; every batch stored exactly once, the rest duplicates
        stored = [(g, a["batch_seq"]) for g, a in got if a["status"] == "stored"]
        assert sorted(stored) == sorted((g, b + 1) for g in chains for b in range(BATCHES))
        assert {a["status"] for _, a in got} == {"stored", "duplicate"}
        assert all(a["hash"] == chains[g][a["batch_seq"] - 1].hash for g, a in got)
        # the batches landed on every worker (the broker shares them out)
        per_worker = [metric(metrics_base + i, 'blackbox_store_batches_total{status="stored"}')
                      + metric(metrics_base + i, 'blackbox_store_batches_total{status="duplicate"}')
                      for i in range(workers)]
        assert sum(per_worker) == len(sends) and all(n > 0 for n in per_worker), per_worker

        with engine.connect() as conn:
            for name, chain in chains.items():
                rows = conn.execute(text(
                    "SELECT b.batch_seq, b.hash, b.prev_hash FROM sealed_batches b JOIN gateways g ON g.id = "
                    "b.gateway_id WHERE g.gateway = :g ORDER BY b.batch_seq"), {"g": name}).all()
                assert [(r[0], r[1]) for r in rows] == [(b + 1, s.hash) for b, s in enumerate(chain)]
                assert all(rows[b].prev_hash == rows[b - 1].hash for b in range(1, BATCHES))  # chain intact
                gid = conn.execute(text("SELECT id FROM gateways WHERE gateway = :g"), {"g": name}).scalar_one()
                seqs = [r.seq for r in readings_of(conn, reading_chunks.c.gateway_id == gid)]
                assert len(seqs) == len(set(seqs)) == 50 * BATCHES
            assert conn.execute(text("SELECT count(*) FROM rejections")).scalar_one() == 0
            # the transparency log: one entry per enrolment and per stored batch, and its root is the
            # RFC 6962 hash of its entries in order
            entries = conn.execute(text("SELECT kind, ref, data FROM tlog_entries ORDER BY idx")).all()
            size, root_hex = conn.execute(text("SELECT size, root FROM tlog_state")).one()
            assert len(existing_partitions(conn)) >= 5  # the workers made the months ahead
        batch_refs = sorted(r.ref for r in entries if r.kind == "batch")
        assert batch_refs == sorted(s.hash for chain in chains.values() for s in chain)
        assert [r.kind for r in entries].count("key.enrolled") == len(gateways)
        assert size == len(entries) == len(gateways) + len(gateways) * BATCHES
        assert bytes.fromhex(root_hex) == rfc6962_root([bytes(r.data) for r in entries])
        assert metric(metrics_base, "blackbox_store_log_entries") == size

        for p in procs:
            p.send_signal(signal.SIGTERM)
        assert [p.wait(TIMEOUT) for p in procs] == [0] * workers
    finally:
        acks.close()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        engine.dispose()
        for i in range(workers):
            purge_session(f"{base_id}-{i + 1}")


def race(url: str, jobs: list[tuple[bytes, str]], rounds: int = 1) -> list[str]:
    """Each job ``(wire, gateway)`` ingested by its own thread and engine, all released at once."""
    engines = [make_engine(url) for _ in jobs]
    barrier = threading.Barrier(len(jobs))
    out: list[str] = [""] * len(jobs)

    def run(i: int) -> None:
        ingestor = Ingestor(engines[i])
        with engines[i].connect() as conn:  # connection in the pool: the race is the ingest, not connecting
            conn.execute(text("SELECT 1"))
        barrier.wait(TIMEOUT)
        result = ingestor.handle(jobs[i][0], SITE, jobs[i][1])
        out[i] = result.status if result.reason is None else f"{result.status}:{result.reason}"

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT * 3)
    for e in engines:
        e.dispose()
    return out


def test_concurrent_ingest_of_one_gateway_is_serialised(pg_url: str) -> None:
    engine = make_engine(pg_url)
    gw = Gateway(gateway="gw-race")
    Ingestor(engine).enroll("gw-race", SITE, gw.public_pem)
    try:
        for b in range(8):
            for k in range(20):
                gw.reading("T-1.pv", float(k), T0 + (b * 20 + k) * 1000)
            sealed = gw.seal()
            # the same batch at the same instant on four workers: stored once
            assert sorted(race(pg_url, [(sealed.wire, "gw-race")] * 4)) == ["duplicate"] * 3 + ["stored"]
        # the next two batches of the chain at once, and a forged twin of one of them (another key
        # would be unknown_key: a twin signed by the gateway's own key, as a compromised gateway could)
        for k in range(20):
            gw.reading("T-1.pv", 1.0, T0 + (200 + k) * 1000)
        ninth = gw.seal()
        for k in range(20):
            gw.reading("T-1.pv", 2.0, T0 + (300 + k) * 1000)
        tenth = gw.seal()
        results = race(pg_url, [(tenth.wire, "gw-race"), (ninth.wire, "gw-race")])
        assert results == ["stored", "stored"]
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT batch_seq, hash, prev_hash FROM sealed_batches ORDER BY batch_seq")).all()
            assert [r[0] for r in rows] == list(range(1, 11))
            assert all(rows[i].prev_hash == rows[i - 1].hash for i in range(1, 10))
            seqs = [r.seq for r in readings_of(conn)]
            assert len(seqs) == len(set(seqs)) == 200
    finally:
        engine.dispose()


def test_two_different_batches_with_one_seq_at_once_are_never_both_stored(pg_url: str) -> None:
    engine = make_engine(pg_url)
    outcomes = []
    try:
        for round_ in range(6):
            name = f"gw-fork-{round_}"
            gw = Gateway(gateway=name)
            Ingestor(engine).enroll(name, SITE, gw.public_pem)
            for k in range(10):
                gw.reading("T-1.pv", float(k), T0 + k * 1000)
            first = gw.seal()
            assert Ingestor(engine).handle(first.wire, SITE, name).status == "stored"
            # two batches numbered 2, both linking to batch 1, both signed by the gateway's own key
            # (as a compromised gateway could): at most one may join the chain
            twins = [gw.seal_raw([Reading(11, "T-1.pv", float(v), Quality.GOOD, None, T0 + 50_000, None, None, None)],
                                 batch_seq=2, prev_hash=first.hash) for v in (1, 2)]
            outcomes.append(sorted(race(pg_url, [(twins[0].wire, name), (twins[1].wire, name)])))
        assert all(o == ["rejected:fork", "stored"] for o in outcomes), outcomes
        with engine.connect() as conn:
            per_gateway = conn.execute(text("SELECT gateway_id, count(*) FROM sealed_batches GROUP BY 1")).all()
            assert sorted(n for _, n in per_gateway) == [2] * 6
            assert sum(r.seq == 11 for r in readings_of(conn)) == 6
    finally:
        engine.dispose()
