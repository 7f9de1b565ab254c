"""End to end at scale: the simulated reference line plus padding tags, PLC -> agent -> broker -> store on PostgreSQL.

For each size (default 500, 2,000 and 10,000 tags, all polled every 0.1 s):

* ``blackbox simulate --speed 600`` plays the reference cream line (OPC UA and Modbus servers, in
  their own process), and further Modbus TCP devices of up to 1,000 tags each serve the rest of the
  tags (float32 values that change every second, ``uplink.ModbusLine``, a process each);
* ``blackbox run`` (its own process) polls both with the demo configuration's production context
  (batch, phase, materials, QC) and its rules ON, buffers, seals, signs and publishes; its batches
  are as large as ``blackbox config check`` advises for the line (half a second of its readings:
  50,000 records at 10,000 tags; the shipped 5,000 where that is enough), or the shipped defaults at
  every size with ``--shipped-batches``, or ``--batch-records N``;
* ``blackbox store serve`` (its own process) verifies and commits to a fresh PostgreSQL database,
  through a Mosquitto broker started on a free port.

After a warm-up, a window of ``--seconds`` is measured; printed per size:

* readings/s produced by the agent and delivered (committed in the store), and the backlog (produced
  but not committed) at the start and the end of the window: growth means the path does not keep up;
* CPU per reading of the agent process, and of the store process plus its PostgreSQL backends
  (pids from ``pg_stat_activity``, CPU from ``/proc/<pid>/stat``; PostgreSQL's background writers
  and checkpointer are not counted), per reading each produced/committed in the window;
* RSS of the agent (sampled every 0.25 s: median, 95th percentile and peak; the peak is a batch
  being sealed, so it depends on whether a sample falls in one) and of the store process (peak);
* PLC-to-commit latency p50/p99: the reading's time (the agent's poll time; Modbus carries no
  source time) to the store's ``received_at_us`` of its batch, which is taken inside the committing
  transaction (the commit follows within milliseconds), for the batches received in the window.

``--no-store`` runs the agent side only (no store, no PostgreSQL: batches wait in the agent's buffer)
when only the agent's figures are wanted. ``--outage MINUTES`` then stops the broker for that long
after the window and prints the agent's RSS every minute and its slope (the backlog must stay on
disk, not in memory), and, with the store, how long delivery takes to catch up afterwards.

Usage: python benchmarks/end_to_end.py [--tags 500,2000,10000] [--seconds 60] [--warmup 20] [--no-store]
       [--outage 60] [--shipped-batches | --batch-records N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sqlite3
import statistics
import subprocess
import tempfile
import time
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import Engine, create_engine, select, text
from uplink import BLACKBOX, ModbusLine, Store, database, enroll, proc_cpu_s, say, write_config

from blackbox.broker import EmbeddedBroker, free_port
from blackbox.config.seal import SealConfig, advised_batch
from blackbox.control_client import AgentUnreachable, call
from blackbox.demo import DEMO_CONFIG
from blackbox.seal import generate_key_file
from blackbox.store.schema import reading_chunks, sealed_batches

POLL = 0.1
PLC_TAGS = 1000
"""Padding tags per simulated Modbus device: a plant's 10,000 tags sit on many PLCs, each its own
connection (one device answers one request at a time, so one device of 10,000 tags, 81 requests in
a row, is bounded by the round trip, not by the agent)."""


def reference_line(opcua_port: int, modbus_port: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The demo configuration's sources (pointed at the simulator's ports), and its context and rules."""
    doc = yaml.safe_load(DEMO_CONFIG.read_text())
    sources = doc["sources"]
    for source in sources:
        if source["protocol"] == "opcua":
            source["endpoint"] = f"opc.tcp://127.0.0.1:{opcua_port}"
        else:
            source["port"] = modbus_port
        source["poll_interval"] = POLL
    return sources, {"context": doc["context"], "rules": doc["rules"]}


RSS_EVERY_S = 0.25


def rss_summary(samples: list[float]) -> str:
    """Median, 95th percentile and peak of RSS samples (MiB)."""
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return f"median {statistics.median(ordered):.0f}, p95 {p95:.0f}, peak {ordered[-1]:.0f} MiB"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def produced(buffer: Path) -> int:
    """The agent's last recorded seq, read from its buffer file (readings and events share the seq)."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{buffer}?mode=ro", uri=True, timeout=10)) as db:
            return int(db.execute("SELECT coalesce(max(last_seq), 0) FROM reading_blocks").fetchone()[0])
    except sqlite3.OperationalError:  # not created yet
        return 0


def committed(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT coalesce(max(last_seq), 0) FROM sealed_batches")).scalar() or 0)


def backends(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return [int(p) for p in conn.execute(text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND backend_type = 'client backend'")).scalars()]


def overruns(sock: Path) -> int | None:
    """The pollers' overrun counter (cycles that could not start on time), or None if status did not answer."""
    try:
        return sum(int(s.get("overruns") or 0) for s in call(sock, "status", timeout=30)["sources"])
    except (AgentUnreachable, OSError, KeyError, TypeError):
        return None


def commit_latency(engine: Engine, t0_us: int, t1_us: int) -> tuple[float, float]:
    """p50 and p99 of (batch received - reading time) over the readings of the batches received in the window.

    The window's batches first, then their chunks by the primary key's (gateway, seq) range: a join on
    ``batch_seq`` has no index to use and took minutes over millions of chunks."""
    rc, sb = reading_chunks.c, sealed_batches.c
    lags: list[int] = []
    with engine.connect() as conn:
        received: dict[tuple[int, int], int] = {}
        ranges: dict[int, tuple[int, int]] = {}
        for gateway, batch_seq, first, last, at in conn.execute(
                select(sb.gateway_id, sb.batch_seq, sb.first_seq, sb.last_seq, sb.received_at_us)
                .where(sb.received_at_us.between(t0_us, t1_us))):
            received[gateway, batch_seq] = at
            low, high = ranges.get(gateway, (first, last))
            ranges[gateway] = (min(low, first), max(high, last))
        for gateway, (low, high) in ranges.items():
            for batch_seq, ts in conn.execute(
                    select(rc.batch_seq, rc.ts).where(rc.gateway_id == gateway, rc.first_seq.between(low, high))):
                at = received.get((gateway, batch_seq))
                if at is not None:
                    lags.extend(at - t for t in array("q", bytes(ts)))
    if len(lags) < 2:
        return float("nan"), float("nan")
    cuts = statistics.quantiles(lags, n=100, method="inclusive")
    return statistics.median(lags), cuts[98]


def cpu_of(pids: list[int]) -> dict[int, float]:
    out = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            out[pid] = proc_cpu_s(pid)
    return out


@contextlib.contextmanager
def no_database(workdir: Path) -> Iterator[str]:
    """A database URL that nothing opens (``--no-store``: the agent side only)."""
    yield f"sqlite:///{workdir / 'unused.sqlite'}"


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of ``(seconds, MiB)`` points, in MiB per hour."""
    n = len(points)
    if n < 2:
        return float("nan")
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    return sum((t - mt) * (v - mv) for t, v in points) / var * 3600 if var else float("nan")


async def outage(broker: EmbeddedBroker, agent: subprocess.Popen[bytes], buffer: Path, sock: Path,
                 engine: Engine | None, minutes: float) -> None:
    """Stop the broker for ``minutes``; print the agent's RSS every minute and its slope, then the catch-up."""
    say(f"   outage: broker stopped for {minutes:g} min (the agent keeps polling and buffering)")
    await broker.stop()
    t0 = time.monotonic()
    points: list[tuple[float, float]] = []
    last_t, last_p, last_cpu, last_o = t0, produced(buffer), proc_cpu_s(agent.pid), await asyncio.to_thread(
        overruns, sock)
    while (elapsed := time.monotonic() - t0) < minutes * 60:
        await asyncio.sleep(min(10.0, minutes * 60 - elapsed))
        now = time.monotonic()
        points.append((now - t0, rss_mib(agent.pid)))
        if now - last_t >= 59.5 or now - t0 >= minutes * 60:
            p, cpu, o = produced(buffer), proc_cpu_s(agent.pid), await asyncio.to_thread(overruns, sock)
            span = now - last_t
            late = "?" if o is None or last_o is None else f"{o - last_o:,}"
            say(f"   {(now - t0) / 60:5.1f} min  agent RSS {points[-1][1]:6.1f} MiB  produced "
                f"{(p - last_p) / span:>9,.0f} readings/s  agent CPU "
                f"{(cpu - last_cpu) / max(p - last_p, 1) * 1e6:5.2f} us/reading  overrun cycles {late}  "
                f"buffer {buffer_mib(buffer):,.0f} MiB")
            last_t, last_p, last_cpu, last_o = now, p, cpu, o
    rss = [v for _, v in points]
    say(f"   outage of {minutes:g} min: agent RSS first {rss[0]:.1f} MiB, last {rss[-1]:.1f} MiB, max {max(rss):.1f} "
        f"MiB; slope {slope_per_hour(points):+.1f} MiB/h (all samples), "
        f"{slope_per_hour(points[len(points) // 2:]):+.1f} MiB/h (second half)")
    at_restart = produced(buffer)
    await broker.start()
    if engine is None:
        return
    t1 = time.monotonic()
    while committed(engine) < at_restart and time.monotonic() - t1 < max(600.0, minutes * 60):
        await asyncio.sleep(2.0)
    done = committed(engine) >= at_restart
    say(f"   after the outage: {'caught up' if done else 'NOT caught up'} with the {at_restart:,} readings of the "
        f"outage in {time.monotonic() - t1:.0f} s; agent RSS {rss_mib(agent.pid):.1f} MiB")


def buffer_mib(buffer: Path) -> float:
    return sum(f.stat().st_size for f in buffer.parent.glob(buffer.name + "*") if f.is_file()
               and not f.name.endswith(".reserve")) / 2**20


async def one_size(workdir: Path, broker: EmbeddedBroker, tags: int, seconds: float, warmup: float,
                   with_store: bool = True, outage_min: float = 0.0, batch_records: int | None = None,
                   shipped_batches: bool = False) -> None:
    opcua_port, modbus_port = free_port(), free_port()
    sim = subprocess.Popen([*BLACKBOX, "simulate", "--speed", "600", "--opcua-port", str(opcua_port),
                            "--modbus-port", str(modbus_port)], stderr=open(workdir / "sim.log", "wb"))  # noqa: SIM115
    sources, extra = reference_line(opcua_port, modbus_port)
    seal, batches = seal_section(tags, batch_records, shipped_batches)
    n_ref = sum(len(s["tags"]) for s in sources)
    rest = max(0, tags - n_ref)
    padding = [ModbusLine(min(PLC_TAGS, rest - first), f"PLC{k:02d}")
               for k, first in enumerate(range(0, rest, PLC_TAGS))]
    serving = [line.start_process() for line in padding]
    agent: subprocess.Popen[bytes] | None = None
    sock = workdir / "agent.sock"
    try:
        with database("postgresql", workdir) if with_store else no_database(workdir) as url:
            config = write_config(workdir, broker, url, sources=[*sources, *(line.source(POLL) for line in padding)],
                                  extra={**extra, "seal": seal})
            store: Store | None = None
            engine: Engine | None = None
            if with_store:
                enroll(config)
                store = Store(config)
                engine = create_engine(url)
            else:
                generate_key_file(workdir / "gateway.key")
            try:
                agent = subprocess.Popen([*BLACKBOX, "run", "-c", str(config)],
                                         stderr=open(workdir / "agent.log", "wb"))  # noqa: SIM115
                buffer = workdir / "buffer.sqlite"
                deadline = time.monotonic() + 120
                while (committed(engine) if engine is not None else produced(buffer)) == 0:
                    if time.monotonic() > deadline or agent.poll() is not None:
                        raise RuntimeError(f"nothing committed:\n{(workdir / 'agent.log').read_text()[-3000:]}")
                    await asyncio.sleep(0.5)
                await asyncio.sleep(warmup)
                o0 = await asyncio.to_thread(overruns, sock)
                pg0 = backends(engine) if engine is not None else []
                t0, wall0 = time.monotonic(), time.time()
                p0, c0 = produced(buffer), committed(engine) if engine is not None else 0
                a_cpu0, a_user0 = proc_cpu_s(agent.pid), proc_user_s(agent.pid)
                s_cpu0, b_cpu0 = (proc_cpu_s(store.proc.pid) if store else 0.0), cpu_of(pg0)
                plc0 = sum(proc_cpu_s(p.pid) for p in serving) + proc_cpu_s(sim.pid)
                a_rss: list[float] = []
                s_rss = 0.0
                while time.monotonic() - t0 < seconds:
                    await asyncio.sleep(RSS_EVERY_S)
                    a_rss.append(rss_mib(agent.pid))
                    s_rss = max(s_rss, rss_mib(store.proc.pid)) if store else 0.0
                t1, wall1 = time.monotonic(), time.time()
                p1, c1 = produced(buffer), committed(engine) if engine is not None else 0
                a_cpu1, a_user1 = proc_cpu_s(agent.pid), proc_user_s(agent.pid)
                s_cpu1 = proc_cpu_s(store.proc.pid) if store else 0.0
                plc1 = sum(proc_cpu_s(p.pid) for p in serving) + proc_cpu_s(sim.pid)
                b_cpu1 = cpu_of(backends(engine)) if engine is not None else {}
                o1 = await asyncio.to_thread(overruns, sock)
                if outage_min > 0:
                    await outage(broker, agent, buffer, sock, engine, outage_min)
                agent.terminate()
                agent.wait(60)
                backend_cpu = sum(cpu - b_cpu0.get(pid, 0.0) for pid, cpu in b_cpu1.items())
                p50 = p99 = float("nan")
                if engine is not None:
                    p50, p99 = commit_latency(engine, int(wall0 * 1e6), int(wall1 * 1e6))
            finally:
                if agent is not None and agent.poll() is None:
                    agent.terminate()
                    agent.wait(60)
                if engine is not None:
                    engine.dispose()
                if store is not None:
                    store.stop()
    finally:
        for proc in serving:
            proc.terminate()
            proc.join(30)
        sim.terminate()
        sim.wait(30)
    span = t1 - t0
    made, done = p1 - p0, c1 - c0
    agent_us = (a_cpu1 - a_cpu0) / made * 1e6 if made else float("nan")
    user_us = (a_user1 - a_user0) / made * 1e6 if made else float("nan")
    say(f"{tags:,} tags ({n_ref} of the reference line + {rest:,} on {len(padding)} Modbus devices) "
        f"every {POLL} s, rules "
        f"({len(extra['rules'])}) and context on, {batches}, {span:.0f} s window, "
        f"load average {os.getloadavg()[0]:.1f}"
        f"{'' if with_store else ', agent only (no store)'}")
    late = "?" if o0 is None or o1 is None else f"{o1 - o0:,}"
    say(f"   produced {made / span:>9,.0f} readings/s (polls on time would make {tags / POLL:,.0f}; "
        f"overrun cycles {late}; the simulated PLCs used {100 * (plc1 - plc0) / span:.0f}% of a core)")
    say(f"   agent CPU {agent_us:6.2f} us/reading (user {user_us:.2f} + system {agent_us - user_us:.2f}; "
        f"{100 * (a_cpu1 - a_cpu0) / span:.0f}% of a core)   RSS {rss_summary(a_rss)}")
    if store is None:
        return
    store_us = (s_cpu1 - s_cpu0) / done * 1e6 if done else float("nan")
    pg_us = backend_cpu / done * 1e6 if done else float("nan")
    say(f"   delivered (committed) {done / span:>9,.0f} readings/s   "
        f"backlog {p0 - c0:,} -> {p1 - c1:,}")
    say(f"   store CPU {store_us + pg_us:6.2f} us/reading = process {store_us:.2f} + PostgreSQL backends {pg_us:.2f} "
        f"({100 * ((s_cpu1 - s_cpu0) + backend_cpu) / span:.0f}% of a core)   store RSS peak {s_rss:.0f} MiB")
    say(f"   PLC-to-commit latency p50 {p50 / 1e6:.2f} s   p99 {p99 / 1e6:.2f} s")


def seal_section(tags: int, batch_records: int | None, shipped: bool) -> tuple[dict[str, Any], str]:
    """The agent's ``seal:`` section and its description: batches of at most ``batch_records`` readings
    (about 110 bytes each in the records document) if given; else the shipped defaults (5,000 records,
    512,000 bytes) if ``shipped`` or if they suit the line; else what ``blackbox config check`` advises
    for the line (half a second of its readings)."""
    base = SealConfig(max_age=1.0)
    if batch_records is not None:
        return ({"max_age": 1.0, "max_records": batch_records, "max_bytes": max(512_000, batch_records * 110)},
                f"batches of at most {batch_records:,} records (--batch-records)")
    advised = None if shipped else advised_batch(base, tags / POLL)
    if advised is None:
        return {"max_age": 1.0}, f"batches of at most {base.max_records:,} records (the shipped default)"
    return ({"max_age": 1.0, "max_records": advised.max_records, "max_bytes": advised.max_bytes},
            f"batches of at most {advised.max_records:,} records (as `blackbox config check` advises for this line)")


def proc_user_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / os.sysconf("SC_CLK_TCK")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--tags", default="500,2000,10000", help="comma-separated sizes (default 500,2000,10000)")
    ap.add_argument("--seconds", type=float, default=60.0, help="measured window per size (default 60)")
    ap.add_argument("--warmup", type=float, default=20.0, help="seconds after the first commit before measuring")
    ap.add_argument("--no-store", action="store_true", help="the agent side only: no store, no PostgreSQL")
    ap.add_argument("--outage", type=float, default=0.0, metavar="MINUTES",
                    help="after the window, stop the broker this long and follow the agent's RSS (e.g. 60)")
    ap.add_argument("--batch-records", type=int, default=None, metavar="N",
                    help="the agent's seal.max_records (default: as `blackbox config check` advises for the line)")
    ap.add_argument("--shipped-batches", action="store_true",
                    help="the shipped seal defaults (5,000 records) at every size, even where larger are advised")
    args = ap.parse_args()
    say(f"end-to-end benchmark on {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
        "store on PostgreSQL, Mosquitto")
    broker = EmbeddedBroker(prefer="mosquitto")
    await broker.start()
    if broker.kind != "mosquitto":
        raise SystemExit("needs mosquitto (the embedded amqtt broker is not for figures)")
    try:
        for tags in (int(t) for t in args.tags.split(",")):
            with tempfile.TemporaryDirectory(prefix=f"bb-e2e-{tags}-") as d:
                await one_size(Path(d), broker, tags, args.seconds, args.warmup, not args.no_store, args.outage,
                                args.batch_records, args.shipped_batches)
    finally:
        await broker.stop()


if __name__ == "__main__":
    asyncio.run(main())
