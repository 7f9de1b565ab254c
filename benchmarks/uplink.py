"""The delivery path, measured end to end: agent buffer -> sealed and signed -> Mosquitto -> store
verified and committed (PostgreSQL by default), with real processes. Prints its figures.

1. steady state: readings/s through the whole path, from a buffer full of unsealed readings
   (capacity: the replay rate limit is lifted for this one);
2. latency: reading committed at the gateway -> store commit (the ack's arrival; it is sent after
   the commit), p50/p99, at 2,000 tags polled every second;
3. backlog: one hour at 2,000 tags/s (7.2 million readings, sealed during the "outage") drained
   at the default replay rate while live data keeps flowing at 2,000 tags/s;
4. agent CPU per reading: ``blackbox run`` as its own process polling a simulated Modbus line of
   2,000 float32 tags every second (acquisition, buffer, seal, sign, publish), CPU from /proc;
5. payload compression: zstd against zlib on a batch of 2,000 readings.

The agent side of 1-3 is the real agent (``blackbox.agent.runtime.Agent``) without sources, fed
through its recorder; the store is ``blackbox store serve`` in its own process.

Usage: python benchmarks/uplink.py [--only steady,latency,backlog,cpu,compression] [--db sqlite]
       [--readings N] [--backlog-seconds S] [--seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import random
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, TypeVarTuple

import yaml
import zstandard
from scratch_db import scratch_postgres
from sqlalchemy import create_engine, text

from blackbox.agent.runtime import Agent
from blackbox.agent.sealer import Sealer
from blackbox.broker import EmbeddedBroker, free_port
from blackbox.buffer import Buffer
from blackbox.config import StoreConfig, load_config
from blackbox.control_client import AgentUnreachable, call
from blackbox.model import Context, Sample
from blackbox.seal import generate_key_file, load_private_key, public_key_pem
from blackbox.seal.records import dump_document, rows_of
from blackbox.store.db import open_store
from blackbox.store.ingest import Ingestor
from blackbox.tlog.note import Verifier

T = TypeVar("T")
Ts = TypeVarTuple("Ts")
TAGS = 2000
SITE, GATEWAY = "BENCH-01", "gw-bench"
BLACKBOX = [sys.executable, "-m", "blackbox", "--log-level", "WARNING"]


def say(text: str) -> None:
    print(text, flush=True)


# -- parts ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def database(kind: str, workdir: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{workdir / 'store.sqlite'}"
        return
    with scratch_postgres() as url:
        yield url


def write_config(workdir: Path, broker: EmbeddedBroker, db_url: str, *, sources: list[dict[str, Any]] | None = None,
                 uplink: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> Path:
    """A configuration for the benchmark's gateway; ``extra`` adds top-level sections (context, rules)."""
    root = f"bench-{uuid.uuid4().hex[:6]}"
    mqtt = {"host": broker.host, "port": broker.port, "topic_root": root}
    store_key = workdir / "store.key"  # signs the receipts; the gateway pins it
    private = load_private_key(store_key) if store_key.exists() else generate_key_file(store_key)
    doc = {
        "site": {"id": SITE, "name": "benchmark", "licence": "n/a"},
        "gateway": {"id": GATEWAY, "key_file": str(workdir / "gateway.key")},
        "sources": sources or [],
        "agent": {"control_socket": str(workdir / "agent.sock")},
        "buffer": {"path": str(workdir / "buffer.sqlite"), "quota_mb": 20_000},
        "uplink": {"mqtt": {**mqtt, "client_id": f"agent-{root}"},
                   "store_key": Verifier(StoreConfig().log_origin, private.public_key()).vkey, **(uplink or {})},
        "store": {"database_url": db_url, "mqtt": {**mqtt, "client_id": f"store-{root}"},
                  "key_file": str(store_key)},
        **(extra or {}),
    }
    path = workdir / "blackbox.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def enroll(config: Path) -> None:
    loaded = load_config(config)
    key = generate_key_file(loaded.config.gateway.key_file)
    engine = open_store(loaded.config.store.database_url)
    Ingestor(engine).enroll(GATEWAY, SITE, public_key_pem(key.public_key()))
    engine.dispose()


class Store:
    """``blackbox store serve`` in its own process; returns once it is subscribed."""

    def __init__(self, config: Path) -> None:
        self.log = config.parent / "store.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([*BLACKBOX, "store", "serve", "-c", str(config)], stderr=log)
        self._wait_subscribed(load_config(config).config)

    def _wait_subscribed(self, cfg: Any) -> None:
        """Publish a status for the gateway until the store has recorded it (then it gets batches too)."""
        from blackbox.mqtt import make_client
        from blackbox.topics import GatewayTopics

        probe = make_client(cfg.store.mqtt.model_copy(update={"client_id": None}), f"probe-{uuid.uuid4().hex[:6]}")
        probe.connect(cfg.store.mqtt.host, cfg.store.mqtt.port)
        probe.loop_start()
        engine = create_engine(cfg.store.database_url)
        try:
            deadline = time.monotonic() + 60
            while True:
                probe.publish(GatewayTopics(cfg.store.mqtt.topic_root, SITE, GATEWAY).status,
                              b'{"state": "offline", "reason": "benchmark probe"}', qos=1)
                with engine.connect() as conn:
                    if conn.execute(text("SELECT status FROM gateways")).scalar() == "offline":
                        return
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"the store did not come up:\n{self.log.read_text()}")
                time.sleep(0.2)
        finally:
            engine.dispose()
            probe.disconnect()
            probe.loop_stop()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def cycle(n: int, step: int) -> list[Sample]:
    """One poll of ``n`` tags; values move a little each cycle, like a real process."""
    rnd = random.Random(step)
    return [Sample(f"BM-{i:04d}.value", round(20.0 + i * 0.01 + rnd.random(), 4)) for i in range(n)]


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[min(998, max(0, int(q * 1000) - 1))] if len(values) > 1 else values[0]


async def start_agent(config: Path) -> Agent:
    agent = Agent(load_config(config))
    await agent.start()
    return agent


@contextlib.contextmanager
def enrolled_store(workdir: Path, broker: EmbeddedBroker, db_kind: str, **config: Any) -> Iterator[tuple[Path, Store]]:
    """A benchmark configuration with its gateway enrolled, and ``blackbox store serve`` running on it."""
    with database(db_kind, workdir) as url:
        path = write_config(workdir, broker, url, **config)
        enroll(path)
        store = Store(path)
        try:
            yield path, store
        finally:
            store.stop()


def ack_times(agent: Agent) -> dict[int, float]:
    """When each batch's acknowledgement arrived (``time.time()``), filled in as they arrive."""
    acks: dict[int, float] = {}
    agent.forwarder.on_delivered = lambda batch_seq, at: acks.__setitem__(batch_seq, at)
    return acks


def latencies(buffer_path: Path, acks: dict[int, float], since_seq: int = 0) -> list[float]:
    """Seconds from each reading's gateway timestamp to the arrival of its batch's ack."""
    out: list[float] = []
    with sqlite3.connect(buffer_path) as db:
        for batch_seq, first, last in db.execute("SELECT batch_seq, first_seq, last_seq FROM sealed_batches"):
            arrived = acks.get(batch_seq)
            if arrived is None or last <= since_seq:
                continue
            # readings are stored in blocks of one time each: the part of each block inside the batch
            low = max(first, since_seq + 1)
            for ts_us, n in db.execute("SELECT ts_us, min(last_seq, :last) - max(first_seq, :low) + 1 "
                                       "FROM reading_blocks WHERE first_seq <= :last AND last_seq >= :low",
                                       {"low": low, "last": last}):
                out += [arrived - ts_us / 1e6] * n
    return out


async def live_feed(agent: Agent, stop: asyncio.Event, interval: float = 1.0) -> int:
    """2,000 tags every ``interval`` seconds through the agent's recorder, until ``stop``; returns readings."""
    n, step, next_at = 0, 0, time.monotonic()
    while not stop.is_set():
        await agent.recorder.record(cycle(TAGS, step))
        n += TAGS
        step += 1
        next_at += interval
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, next_at - time.monotonic()))
    return n


# -- 1. steady state -----------------------------------------------------------------------------


async def steady(workdir: Path, broker: EmbeddedBroker, db_kind: str, readings: int) -> None:
    with enrolled_store(workdir, broker, db_kind, uplink={"replay_rate": 1e9}) as (config, store):
        buf = Buffer(workdir / "buffer.sqlite", "NORMAL")
        ctx = Context(batch="BENCH-1", phase="steady")
        for step in range(readings // TAGS):
            buf.commit(cycle(TAGS, step), [], ctx)
        last = buf.last_seq
        buf.close()
        agent = await start_agent(config)
        started = time.perf_counter()
        cpu0 = time.process_time()
        await asyncio.wait_for(agent.forwarder.wait_delivered(last), 1800)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu0
        store_cpu = proc_cpu_s(store.proc.pid)
        await agent.shutdown()
    say(f"1. steady state, {last:,} readings buffer -> sealed+signed -> broker -> store ({db_kind}) committed")
    say(f"   {last / elapsed:>12,.0f} readings/s end to end ({elapsed:.1f} s; target >= 50,000)")
    say(f"   {cpu / last * 1e6:>12.2f} us agent-side CPU per reading (seal, sign, publish, acks); "
        f"store process CPU {store_cpu / last * 1e6:.2f} us per reading")


# -- 2. latency ----------------------------------------------------------------------------------


async def latency(workdir: Path, broker: EmbeddedBroker, db_kind: str, seconds: float) -> None:
    with enrolled_store(workdir, broker, db_kind) as (config, _store):
        agent = await start_agent(config)
        acks = ack_times(agent)
        stop = asyncio.Event()
        feed = asyncio.create_task(live_feed(agent, stop))
        await asyncio.sleep(seconds)  # the measuring period
        stop.set()
        n = await feed
        await asyncio.wait_for(agent.drain(), 60)
        await agent.shutdown()
    lat = latencies(workdir / "buffer.sqlite", acks, since_seq=0)
    say(f"2. latency reading -> store commit, {TAGS:,} tags every 1 s for {seconds:.0f} s ({n:,} readings, "
        f"seal.max_age 1 s)")
    say(f"   p50 {percentile(lat, 0.50):.3f} s   p99 {percentile(lat, 0.99):.3f} s   max {max(lat):.3f} s "
        f"(target p99 <= 2 s)")


# -- 3. backlog ----------------------------------------------------------------------------------


async def backlog(workdir: Path, broker: EmbeddedBroker, db_kind: str, outage_s: int) -> None:
    with enrolled_store(workdir, broker, db_kind) as (config, store):
        loaded = load_config(config)
        made = time.perf_counter()
        buf = Buffer(workdir / "buffer.sqlite", "NORMAL")

        async def direct(fn: Callable[[*Ts], T], *args: *Ts) -> T:
            return fn(*args)

        key = load_private_key(loaded.config.gateway.key_file)
        sealer = Sealer(buf, direct, key, loaded.config.seal, SITE, GATEWAY, loaded.sha256,
                        on_sealed=lambda _batch_seq: None)
        ctx = Context(batch="BENCH-1", phase="outage")
        for step in range(outage_s):  # what the agent does during an outage: buffer every poll, seal every second
            buf.commit(cycle(TAGS, step), [], ctx)
            await sealer.seal_once()
        backlog_last = buf.last_seq
        n_batches = buf.pending_counts()[0]
        buf.close()
        say(f"3. backlog of {backlog_last:,} readings in {n_batches:,} sealed batches ({outage_s} s at "
            f"{TAGS:,} tags/s; made in {time.perf_counter() - made:.0f} s)")
        agent = await start_agent(config)
        acks = ack_times(agent)
        stop = asyncio.Event()
        started = time.perf_counter()
        feed = asyncio.create_task(live_feed(agent, stop))
        cpu0 = time.process_time()
        await asyncio.wait_for(agent.forwarder.wait_delivered(backlog_last), 3600)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu0
        store_cpu = proc_cpu_s(store.proc.pid)
        stop.set()
        live = await feed
        await asyncio.wait_for(agent.drain(), 120)
        await agent.shutdown()
    lat = latencies(workdir / "buffer.sqlite", acks, since_seq=backlog_last)
    say(f"   drained in {elapsed:.1f} s ({backlog_last / elapsed:,.0f} readings/s; replay_rate "
        f"{loaded.config.uplink.replay_rate:,.0f}/s; target <= 180 s for one hour)")
    say(f"   CPU meanwhile: agent {cpu:.0f} s, store process {store_cpu:.0f} s (of {2 * elapsed:.0f} core-seconds)")
    say(f"   live data meanwhile: {live:,} readings, latency p50 {percentile(lat, 0.5):.2f} s, "
        f"p99 {percentile(lat, 0.99):.2f} s")


# -- 4. agent CPU --------------------------------------------------------------------------------


class ModbusLine:
    """A Modbus TCP device with ``tags`` float32 holding registers whose values change every second."""

    def __init__(self, tags: int, name: str = "BM") -> None:
        self.tags = tags
        self.name = name  # of the device: its source is line-<name>, its tags <name>-0000.value...
        self.port = free_port()
        self._image = [0] * (2 * tags)
        self._step = 0
        self._served = -1  # the step whose image the server's register block holds

    def _update(self) -> None:
        rnd = random.Random(self._step)
        self._step += 1
        raw = struct.pack(f">{self.tags}f", *(20.0 + i * 0.01 + rnd.random() for i in range(self.tags)))
        self._image = list(struct.unpack(f">{2 * self.tags}H", raw))

    async def _on_request(self, _fc: int, _start: int, _address: int, _count: int, current: list[int],
                          set_values: Any) -> Any:
        if self._served != self._step:  # copy a new image once, not on every request
            current[: len(self._image)] = self._image
            self._served = self._step
        return None

    async def serve(self, stop: asyncio.Event) -> None:
        from pymodbus.server import ModbusTcpServer
        from pymodbus.simulator import DataType, SimData, SimDevice

        self._update()
        regs = [SimData(address=0, count=2 * self.tags, values=0, datatype=DataType.REGISTERS, readonly=True)]
        bits = [SimData(address=0, values=[False] * 16, datatype=DataType.BITS)]
        device = SimDevice(id=1, simdata=(bits, bits, regs, regs), action=self._on_request)
        server = ModbusTcpServer(device, address=("127.0.0.1", self.port))
        await server.serve_forever(background=True)
        try:
            while not stop.is_set():
                self._update()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
        finally:
            await server.shutdown()  # type: ignore[no-untyped-call]  # pymodbus leaves it unannotated

    def start_process(self) -> Any:
        """Serve from a process of its own, as a PLC is its own device (its CPU then is not the caller's).

        Returns the process (``multiprocessing``); terminate it to stop serving.
        """
        proc = multiprocessing.get_context("spawn").Process(target=_serve_line, args=(self.tags, self.port),
                                                            daemon=True)
        proc.start()
        return proc

    def source(self, poll_interval: float) -> dict[str, Any]:
        name = "line-modbus" if self.name == "BM" else f"line-{self.name}"
        return {"name": name, "protocol": "modbus", "host": "127.0.0.1", "port": self.port, "unit_id": 1,
                "poll_interval": poll_interval, "timeout": 2.0,
                "tags": [{"name": f"{self.name}-{i:04d}.value", "address": f"hr:{2 * i}", "type": "float32",
                          "category": "process", "unit": "BM"} for i in range(self.tags)]}


def _serve_line(tags: int, port: int) -> None:
    import logging

    logging.getLogger("pymodbus").setLevel(logging.WARNING)  # its DEBUG trace of every frame costs the PLC's CPU
    line = ModbusLine(tags)
    line.port = port
    asyncio.run(line.serve(asyncio.Event()))


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def agent_seq(sock: Path) -> int | None:
    try:
        return int(call(sock, "status", timeout=5)["buffer"]["last_seq"])
    except (AgentUnreachable, OSError, KeyError, TypeError):
        return None


async def agent_cpu(workdir: Path, broker: EmbeddedBroker, db_kind: str, seconds: float, poll: float) -> None:
    line = ModbusLine(TAGS)
    stop = asyncio.Event()
    serving = asyncio.create_task(line.serve(stop))
    try:
        with enrolled_store(workdir, broker, db_kind, sources=[line.source(poll)]) as (config, _store):
            with open(workdir / "agent.log", "wb") as log:
                agent = subprocess.Popen([*BLACKBOX, "run", "-c", str(config)], stderr=log)
            sock = workdir / "agent.sock"
            try:
                deadline = time.monotonic() + 60
                while (agent_seq(sock) or 0) < 5 * TAGS:  # warmed up: connected, a few cycles done
                    if time.monotonic() > deadline or agent.poll() is not None:
                        raise RuntimeError(f"the agent did not start polling:\n{(workdir / 'agent.log').read_text()}")
                    await asyncio.sleep(0.5)
                seq0, cpu0, t0 = agent_seq(sock), proc_cpu_s(agent.pid), time.monotonic()
                await asyncio.sleep(seconds)
                seq1, cpu1, t1 = agent_seq(sock), proc_cpu_s(agent.pid), time.monotonic()
            finally:
                agent.terminate()
                agent.wait(60)
    finally:
        stop.set()
        await serving
    assert seq0 is not None and seq1 is not None
    n = seq1 - seq0
    say(f"4. agent process CPU, simulated Modbus line of {TAGS:,} float32 tags polled every {poll:g} s, "
        f"{t1 - t0:.0f} s steady")
    say(f"   {(cpu1 - cpu0) / n * 1e6:>8.2f} us CPU per reading ({n:,} readings, {n / (t1 - t0):,.0f}/s, "
        f"CPU {100 * (cpu1 - cpu0) / (t1 - t0):.0f}% of a core; target <= 10 us)")


# -- 5. compression ------------------------------------------------------------------------------


def compression() -> None:
    from blackbox.model import Quality, Reading

    records = [Reading(i + 1, s.tag, s.value, Quality.GOOD, None, 1_795_000_000_000_000, None, "FC050-2026-1125-01",
                       "emulsify") for i, s in enumerate(cycle(TAGS, 1))]
    doc = dump_document(*rows_of(records))
    say(f"5. compression of a batch of {TAGS:,} readings ({len(doc):,} bytes of records JSON), median of 50")
    compressors: list[tuple[str, Callable[[], bytes]]] = [
        ("zstd level 3", lambda: zstandard.ZstdCompressor(level=3, write_content_size=True).compress(doc)),
        ("zlib level 6", lambda: zlib.compress(doc, 6))]
    for name, fn in compressors:
        times = []
        for _ in range(50):
            t = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t)
        say(f"   {name}: {len(out):>8,} bytes ({100 * len(out) / len(doc):.1f}%) "
            f"in {statistics.median(times) * 1e3:.2f} ms")


# -- main ----------------------------------------------------------------------------------------


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="steady,latency,backlog,cpu,compression")
    ap.add_argument("--db", choices=["postgresql", "sqlite"], default="postgresql")
    ap.add_argument("--readings", type=int, default=1_000_000, help="readings for the steady-state figure")
    ap.add_argument("--seconds", type=float, default=30.0, help="duration of the latency and CPU runs")
    ap.add_argument("--backlog-seconds", type=int, default=3600, help="length of the outage to drain")
    ap.add_argument("--poll", type=float, default=1.0, help="poll interval of the CPU run's Modbus source")
    args = ap.parse_args()
    only = set(args.only.split(","))
    say(f"uplink benchmark on {os.cpu_count()} cores, store on {args.db}, Mosquitto")
    if "compression" in only:
        compression()
    broker = EmbeddedBroker(prefer="mosquitto")
    await broker.start()
    if broker.kind != "mosquitto":
        raise SystemExit("needs mosquitto (the embedded amqtt broker is not for figures)")
    try:
        runs: list[tuple[str, Callable[[Path], Awaitable[None]]]] = [
            ("steady", lambda d: steady(d, broker, args.db, args.readings)),
            ("latency", lambda d: latency(d, broker, args.db, args.seconds)),
            ("backlog", lambda d: backlog(d, broker, args.db, args.backlog_seconds)),
            ("cpu", lambda d: agent_cpu(d, broker, args.db, args.seconds, args.poll))]
        for name, run in runs:
            if name in only:
                with tempfile.TemporaryDirectory(prefix=f"bb-bench-{name}-") as d:
                    await run(Path(d))
    finally:
        await broker.stop()


if __name__ == "__main__":
    asyncio.run(main())
