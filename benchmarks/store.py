"""The store on PostgreSQL, measured: verified ingest per worker, CPU per reading, trace time at scale.

1. **Ingest**: one, then two real ``blackbox store serve`` workers (processes) share the batches
   of two gateways per worker over the MQTT broker (MQTT 5 shared subscription), each batch
   (5,000 readings, 100 tags, generated and signed beforehand) going through the whole service:
   open, Ed25519 signature, chain and replay checks, derive, binary COPY of the reading chunks, the
   transparency-log append, commit, the acknowledgement. Timed from the first publish to the
   last acknowledgement (at most 200 batches outstanding, as a gateway's window). Printed:
   readings/s in total and per worker, and CPU per reading — the workers' own CPU and their
   PostgreSQL backends' CPU, read from ``/proc/<pid>/stat`` (backends found in
   ``pg_stat_activity``; the server's background writers are not counted).
   Before them, the round trips to PostgreSQL per batch and the statements they carry, counted in
   libpq's protocol trace of an in-process ingest (``Ingestor.prepare``, ``store``, the receipt).
2. **Trace at scale**: one gateway's production batch of ``--trace-readings`` (1,000,000) signed
   readings is ingested, then other gateways' batches (two workers) until the store holds
   ``--rows`` (5 M); the trace report of the batch is timed (a first run, then ``--trace-runs``
   more: their median and range); then filled to ``--rows-max`` (20 M) and timed again.
   ``blackbox store verify`` of that gateway is timed at the largest size.

Every figure depends on the machine: run it on an idle one (the CPU count and the load average
are printed). Needs an MQTT 5 broker (``--mqtt``, default 127.0.0.1:1883) and PostgreSQL
(``BLACKBOX_BENCH_PG`` or ``--db``). Usage::

    python benchmarks/store.py [--db URL] [--per-worker 500000] [--rows 5000000] [--rows-max 20000000]
    python benchmarks/store.py --quick          # 100 k per worker, 1 M / 2 M rows: a smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from scratch_db import scratch_postgres
from sqlalchemy import Engine, event, text

from blackbox.broker import free_port
from blackbox.seal import GENESIS_HASH, generate_key_file, public_key_pem, seal_rows
from blackbox.store.db import make_engine, open_store, open_store_readonly
from blackbox.store.findings import Difference
from blackbox.store.ingest import Ingestor
from blackbox.store.integrity_worker import worker_pids
from blackbox.store.notary import Notary
from blackbox.store.partitions import ensure_partitions
from blackbox.store.trace import trace_batch
from blackbox.store.verify import verify_store
from blackbox.tlog.note import Signer
from blackbox.topics import GatewayTopics

SITE = "BENCH-01"
TAGS = [f"T-{i:03d}.pv" for i in range(100)]
T0 = 1_790_000_000_000_000  # 2026-09-21
STEP_US = 2_000  # 500 readings/s per gateway: 5 M readings of one gateway span about 3 months
BATCH_SIZE = 5000
TRACE_GATEWAY, TRACE_BATCH = "gw-trace", "BENCH-1M-01"
TICK = os.sysconf("SC_CLK_TCK")
WINDOW = 200
"""Batches published and not yet acknowledged, at most (like a gateway's uplink window)."""


@contextlib.contextmanager
def fresh_database(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    with scratch_postgres() as url:
        yield url


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def chain(gateway: str, n_readings: int, *, batch: str | None, t0: int, first_events: bool = False) -> list[bytes]:
    """The sealed batches of one gateway: ``n_readings`` readings, 5,000 per batch, in a chain."""
    key = _keys.setdefault(gateway, Ed25519PrivateKey.generate())
    seq, batch_seq, prev, done, out = 1, 1, GENESIS_HASH, 0, []
    config = {"sha256": "c" * 64, "site": {"id": SITE}, "gateway": gateway,
              "tags": [{"name": t, "category": "process", "limits": [{"h": 90.0}]} for t in TAGS]}
    while done < n_readings:
        events: list[list[Any]] = []
        if batch_seq == 1 and first_events:
            events = [[1, "config.applied", None, config, t0, None, None],
                      [2, "batch.started", None, {"batch": batch, "product": "P"}, t0, batch, None]]
            seq = 3
        rows = []
        for _ in range(min(BATCH_SIZE, n_readings - done)):
            ts = t0 + seq * STEP_US
            rows.append([seq, TAGS[seq % len(TAGS)], 50.0 + (seq % 97) * 0.5, "good", None, ts, ts - 100, batch, "run"])
            seq += 1
            done += 1
        if done == n_readings and first_events:
            events.append([seq, "batch.ended", None, {"batch": batch}, t0 + seq * STEP_US, batch, None])
            seq += 1
        sealed = seal_rows(rows, events, site=SITE, gateway=gateway, key=key, batch_seq=batch_seq, prev_hash=prev,
                           config_hash="c" * 64, sealed_at_us=t0 + seq * STEP_US)
        out.append(sealed.wire)
        prev, batch_seq = sealed.hash, batch_seq + 1
    return out


_keys: dict[str, Ed25519PrivateKey] = {}


def enroll(url: str, gateways: list[str]) -> None:
    engine = make_engine(url)
    ingestor = Ingestor(engine)
    for g in gateways:
        ingestor.enroll(g, SITE, public_key_pem(_keys.setdefault(g, Ed25519PrivateKey.generate())))
    engine.dispose()


@dataclass
class IngestRun:
    readings: int
    seconds: float
    worker_cpu_s: float
    backend_cpu_s: float


def _backends(engine: Engine) -> list[int]:
    """Pids of every other connection to this database (the store workers' backends)."""
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"))]


def _metric(port: int, name: str) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            body = response.read().decode()
    except OSError:
        return -1.0
    return sum(float(line.split()[-1]) for line in body.splitlines() if line.split(" ")[0] == name)


class AckCounter:
    """Counts the acknowledgements published under ``root``; every one must say ``stored``."""

    def __init__(self, mqtt_host: str, mqtt_port: int, root: str) -> None:
        self.count = 0
        self.bad: list[dict[str, Any]] = []
        self.done = threading.Condition()
        ready = threading.Event()
        self.client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                                  client_id=f"bench-{uuid.uuid4().hex[:8]}", protocol=paho.MQTTv5)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{root}/+/+/acks", qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: ready.set()
        self.client.on_message = self._on_message
        self.client.connect(mqtt_host, mqtt_port, 30)
        self.client.loop_start()
        if not ready.wait(10):
            raise SystemExit("no subscription at the broker")

    def _on_message(self, _c: Any, _u: Any, message: Any) -> None:
        ack = orjson.loads(message.payload)
        with self.done:
            self.count += 1
            if ack["status"] != "stored":
                self.bad.append(ack)
            self.done.notify_all()

    def wait(self, n: int, timeout: float) -> None:
        with self.done:
            if not self.done.wait_for(lambda: self.count >= n, timeout):
                raise SystemExit(f"only {self.count} of {n} acknowledgements within {timeout} s")
        if self.bad:
            raise SystemExit(f"not stored: {self.bad[:3]}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def ingest(url: str, workers: int, per_worker: int, tag: str, mqtt: tuple[str, int],
           gateways_per_worker: int = 2) -> IngestRun:
    """``workers`` ``blackbox store serve`` processes share the batches of ``2 * workers`` gateways over MQTT;
    timed from the first publish to the last acknowledgement."""
    names = [f"gw-{tag}-{k}" for k in range(workers * gateways_per_worker)]
    per_gateway = per_worker * workers // len(names)
    chains = {g: chain(g, per_gateway + BATCH_SIZE, batch=f"{g}-B", t0=T0) for g in names}  # + warm-up
    enroll(url, names)
    root, metrics = f"bbbench-{uuid.uuid4().hex[:8]}", free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "store.yaml"
        generate_key_file(Path(tmp) / "store.key")  # the key that signs the receipts, where the config's default looks
        config.write_text(yaml.safe_dump({"store": {
            "database_url": url, "metrics_port": metrics,
            "mqtt": {"host": mqtt[0], "port": mqtt[1], "topic_root": root, "client_id": root}}}))
        procs = [subprocess.Popen([sys.executable, "-m", "blackbox", "store", "serve", "-c", str(config),
                                   "--worker", str(w + 1)], stderr=(Path(tmp) / f"w{w}.log").open("w"))
                 for w in range(workers)]
        acks = AckCounter(*mqtt, root)
        engine = make_engine(url)
        try:
            deadline = time.monotonic() + 60
            while any(_metric(metrics + w, "blackbox_store_mqtt_connected") != 1 for w in range(workers)):
                if time.monotonic() > deadline:
                    raise SystemExit("the store workers did not subscribe")
                time.sleep(0.2)
            for g in names:  # warm-up: connections, key cache
                acks.client.publish(GatewayTopics(root, SITE, g).batches, chains[g].pop(0), qos=1)
            acks.wait(len(names), 120)
            pids = [p.pid for p in procs]
            backends = _backends(engine)
            cpu0 = sum(cpu_s(p) for p in pids) + sum(cpu_s(p) for p in backends)
            backend0 = sum(cpu_s(p) for p in backends)
            started = time.perf_counter()
            order = [wire for batch in zip(*chains.values(), strict=True) for wire in batch]
            for i, wire in enumerate(order):
                if i >= WINDOW:  # the broker queues at most max_queued_messages (1000) per worker session
                    acks.wait(len(names) + i - WINDOW + 1, 3600)
                g = names[i % len(names)]
                acks.client.publish(GatewayTopics(root, SITE, g).batches, wire, qos=1)
            acks.wait(len(names) + len(order), 3600)
            seconds = time.perf_counter() - started
            backend1 = sum(cpu_s(p) for p in backends)
            cpu1 = sum(cpu_s(p) for p in pids) + backend1
            n = per_gateway * len(names)
            return IngestRun(n, seconds, (cpu1 - cpu0) - (backend1 - backend0), backend1 - backend0)
        finally:
            acks.close()
            engine.dispose()
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                p.wait(30)
            _purge(mqtt, [f"{root}-{w + 1}" for w in range(workers)])


def _purge(mqtt: tuple[str, int], client_ids: list[str]) -> None:
    """Drop the workers' persistent sessions at the broker."""
    for cid in client_ids:
        c = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=cid, protocol=paho.MQTTv5)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho leaves it unannotated
        props.SessionExpiryInterval = 0
        c.connect(*mqtt, 30, clean_start=True, properties=props)
        c.loop_start()
        c.disconnect()
        c.loop_stop()


@dataclass
class RoundTrips:
    batches: int
    round_trips: int
    statements: int


def round_trips(url: str, n_batches: int = 20) -> RoundTrips:
    """Ingest ``n_batches`` batches of two gateways in this process (prepare, store, the signed receipt),
    tracing the protocol of every pooled connection (libpq ``PQtrace``): a round trip is every wait for
    the server (a ``ReadyForQuery`` ends one, a ``CopyInResponse`` too), a statement every ``Query`` or
    ``Execute`` sent."""
    names = ["gw-rt-0", "gw-rt-1"]
    chains = {g: chain(g, BATCH_SIZE * (n_batches // 2 + 1), batch=f"{g}-B", t0=T0) for g in names}
    enroll(url, names)
    engine = make_engine(url)
    ingestor = Ingestor(engine)
    notary = Notary(engine, Signer("bench.example/log", Ed25519PrivateKey.generate()))

    def one(g: str) -> None:
        result = ingestor.handle(chains[g].pop(0), SITE, g)
        assert result.status == "stored", result
        notary.ack(SITE, g, result)

    for g in names:  # warm-up: connection, key cache, prepared statements
        one(g)
    with tempfile.TemporaryFile("w+") as trace:
        event.listen(engine.pool, "checkout", lambda dbapi, _r, _p: dbapi.pgconn.trace(trace.fileno()))
        event.listen(engine.pool, "checkin", lambda dbapi, _r: dbapi.pgconn.untrace())
        for i in range(n_batches):
            one(names[i % 2])
        trace.seek(0)
        # a message is "<time>\t<F or B>\t<length>\t<type> ..." (a query's own line breaks continue it)
        messages = [(f[1], f[3].split(" ")[0]) for f in (line.split("\t") for line in trace)
                    if len(f) >= 4 and f[1] in ("F", "B") and f[2].isdigit()]
    engine.dispose()
    waits = sum(1 for d, m in messages if d == "B" and m in ("ReadyForQuery", "CopyInResponse"))
    sent = sum(1 for d, m in messages if d == "F" and m in ("Query", "Execute"))
    return RoundTrips(n_batches, waits, sent)


def count_readings(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT coalesce(sum(n), 0) FROM reading_chunks")).scalar_one())


def fill_to(url: str, engine: Engine, rows: int, tag: str, mqtt: tuple[str, int]) -> None:
    """Ingest other gateways' batches (two store workers) until the store holds ``rows`` readings."""
    missing = rows - count_readings(engine)
    if missing > 0:
        ingest(url, 2, missing // 2, tag, mqtt, gateways_per_worker=max(1, missing // 2 // 2_500_000))


def timed_trace(url: str, parallel: bool | None = None) -> tuple[float, float, float]:
    """Seconds (wall, CPU of this process, CPU of its integrity worker process) for the trace report of the
    production batch (its batches re-verified), on a read-only engine. On a loaded machine the CPU seconds
    are the figure that carries over."""
    reader = open_store_readonly(url)
    try:
        started, cpu, worker = time.perf_counter(), time.process_time(), _worker_cpu()
        report = trace_batch(reader, TRACE_BATCH, parallel=parallel)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        assert report.integrity.verdict == "verified", report.integrity.findings[:3]
        return seconds, cpu, _worker_cpu() - worker
    finally:
        reader.dispose()


def _worker_cpu() -> float:
    return sum(cpu_s(pid) for pid in worker_pids())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", help="a PostgreSQL URL (default: a fresh database on the local server)")
    parser.add_argument("--mqtt", default="127.0.0.1:1883", help="MQTT 5 broker host:port")
    parser.add_argument("--per-worker", type=int, default=500_000)
    parser.add_argument("--trace-readings", type=int, default=1_000_000)
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--rows-max", type=int, default=20_000_000)
    parser.add_argument("--trace-runs", type=int, default=5, help="timed trace reports after the first (5)")
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script")
    parser.add_argument("--skip-scale", action="store_true", help="ingest figures only")
    args = parser.parse_args()
    host, _, port = args.mqtt.rpartition(":")
    mqtt = (host, int(port))
    if args.quick:
        args.per_worker, args.trace_readings, args.rows, args.rows_max = 100_000, 200_000, 1_000_000, 2_000_000
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f} at start; {platform.python_version()}")
    with fresh_database(args.db) as url:
        engine = open_store(url)
        ensure_partitions(engine, ahead=1, at_us=T0)
        with engine.connect() as conn:
            print(f"PostgreSQL {conn.execute(text('SHOW server_version')).scalar_one()}, "
                  f"reading chunks partitioned by month")
        rt = round_trips(url)
        print(f"\nin-process ingest (prepare, store, receipt), {rt.batches} batches: "
              f"{rt.round_trips / rt.batches:.1f} round trips to PostgreSQL per batch carrying "
              f"{rt.statements / rt.batches:.1f} statements")
        print(f"\nverified ingest by blackbox store serve workers over MQTT ({BATCH_SIZE:,} readings per batch; "
              "signature, chain, derive, COPY, log, commit, acknowledgement):")
        for workers in (1, 2):
            run = ingest(url, workers, args.per_worker, f"i{workers}", mqtt)
            total = run.readings / run.seconds
            print(f"  {workers} worker(s): {total:10,.0f} readings/s in total, {total / workers:,.0f} per worker; "
                  f"CPU per reading {run.worker_cpu_s / run.readings * 1e6:.1f} us in the workers + "
                  f"{run.backend_cpu_s / run.readings * 1e6:.1f} us in their PostgreSQL backends = "
                  f"{(run.worker_cpu_s + run.backend_cpu_s) / run.readings * 1e6:.1f} us")
        if args.skip_scale:
            return
        # the production batch to trace: one gateway, its readings signed and chained
        enroll(url, [TRACE_GATEWAY])
        ingestor = Ingestor(engine)
        for wire in chain(TRACE_GATEWAY, args.trace_readings, batch=TRACE_BATCH, t0=T0 + 86_400_000_000,
                          first_events=True):
            assert ingestor.handle(wire, SITE, TRACE_GATEWAY).status == "stored"
        print(f"\ntrace report of one production batch of {args.trace_readings:,} readings "
              f"({args.trace_readings // BATCH_SIZE} sealed batches, each re-verified):")
        for size, tag in ((args.rows, "f1"), (args.rows_max, "f2")):
            fill_to(url, engine, size, tag, mqtt)
            with engine.begin() as conn:
                conn.execute(text("ANALYZE reading_chunks"))
            n = count_readings(engine)
            cold = timed_trace(url)
            warm = sorted((timed_trace(url) for _ in range(args.trace_runs)), key=lambda run: run[0])
            mid = warm[len(warm) // 2]
            alone = timed_trace(url, parallel=False)
            print(f"  {n:12,} readings stored: {cold[0]:6.2f} s (first run; CPU {cold[1]:.2f} s in the tracing "
                  f"process + {cold[2]:.2f} s in its integrity workers, started by the first run of the "
                  f"benchmark), then {len(warm)} runs: median {mid[0]:.2f} s (CPU {mid[1]:.2f} + {mid[2]:.2f} s), "
                  f"{warm[0][0]:.2f}-{warm[-1][0]:.2f} s; in one process: {alone[0]:6.2f} s ({alone[1]:.2f} s CPU)")
        reader = open_store_readonly(url)
        findings: list[Difference] = []
        stats = verify_store(reader, findings.append, gateway=f"{SITE}/{TRACE_GATEWAY}")
        reader.dispose()
        assert not findings, findings[:3]
        print(f"\nstore verify --gateway {SITE}/{TRACE_GATEWAY} among {n:,} readings: "
              f"{stats.readings_per_s():,.0f} readings/s ({stats.seconds:.1f} s)")
        engine.dispose()


if __name__ == "__main__":
    main()
