"""The buffer's figures: committed readings/s at synchronous FULL and NORMAL, the sealer's cost of
reading them back, and the agent's memory through a long uplink outage.

1. One commit per simulated poll cycle of 2,000 tags (as columns, as the agent does); readings/s
   committed and CPU per reading. Then the sealer's read of those readings (``unsealed_rows``, in
   batches of 5,000 records, its default): CPU per reading.
2. An agent (recorder, sealer, uplink) with its broker unreachable records 2,000 tags/s for one
   simulated hour as fast as it can (compressed time); its resident memory is sampled every
   simulated five minutes. Everything must stay in the buffer (none of it is dropped) and the
   memory must stay flat: the backlog lives in SQLite, not in RAM.

Usage: python benchmarks/buffer.py [--cycles N] [--hours H] [--tags N]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from blackbox.buffer import Buffer
from blackbox.buffer.database import Synchronous
from blackbox.columns import SampleColumns
from blackbox.model import Context

TAGS = 2000
SAMPLE_EVERY_S = 300
SEAL_RECORDS = 5000
"""Records per sealed batch (``seal.max_records``'s default)."""


def commit_and_read(sync: Synchronous, cycles: int, tags: int) -> None:
    """Commit ``cycles`` cycles of ``tags`` columns, then read them all back as the sealer does; print both."""
    with tempfile.TemporaryDirectory() as d:
        buf = Buffer(Path(d) / "b.sqlite", sync)
        ctx = Context(batch="FC050-2026-1125-01", product="FC-050", phase="emulsify")
        names = tuple(f"PLC-{i:04d}.value" for i in range(tags))
        values = [[round(20.0 + i * 0.01 + math.sin(c + i), 4) for i in range(tags)] for c in range(10)]
        wall, cpu = time.perf_counter(), time.process_time()
        for c in range(cycles):
            buf.commit(SampleColumns.good(names, values[c % len(values)]), [], ctx)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        n = cycles * tags
        print(f"  synchronous={sync:<6}  {n / wall:>10,.0f} readings/s committed, "
              f"{cpu / n * 1e6:.2f} us CPU per reading")
        after, read = 0, 0
        started = time.process_time()
        while after < buf.last_seq:
            rows, _events = buf.unsealed_rows(after, SEAL_RECORDS)
            read += len(rows)
            after = rows[-1][0]
        cpu = time.process_time() - started
        print(f"  {'':<19}  unsealed_rows: {cpu / read * 1e6:.2f} us CPU per reading "
              f"({read:,} readings in batches of {SEAL_RECORDS:,})")
        buf.close()


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def closed_port() -> int:
    """A local port nobody listens on: the broker of the outage."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def outage(hours: float, tags: int, workdir: Path) -> None:
    from blackbox.agent.runtime import Agent
    from blackbox.config import load_config
    from blackbox.seal import generate_key_file

    cfg = {"site": {"id": "BENCH", "name": "bench", "licence": "x"},
           "gateway": {"id": "gw-bench", "key_file": str(workdir / "gw.key")},
           "agent": {"control_socket": str(workdir / "agent.sock")},
           "buffer": {"path": str(workdir / "buffer.sqlite"), "synchronous": "NORMAL", "quota_mb": 8192},
           "uplink": {"mqtt": {"port": closed_port(), "client_id": "bench"}, "shutdown_grace": 0}}
    path = workdir / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg))
    loaded = load_config(path)
    agent = Agent(loaded, generate_key_file(workdir / "gw.key"))
    await agent.start()
    names = tuple(f"PLC-{i:04d}.value" for i in range(tags))
    seconds = int(hours * 3600)
    samples: list[tuple[int, float]] = []
    started = time.perf_counter()
    for t in range(seconds):
        await agent.recorder.record(SampleColumns.good(names, [round(20.0 + math.sin(t / 60 + i), 3)
                                                               for i in range(tags)]))
        if t % SAMPLE_EVERY_S == 0 or t == seconds - 1:
            samples.append((t, rss_mb()))
    elapsed = time.perf_counter() - started
    await agent.sealer.flush()
    backlog = await agent.db(agent.buffer.backlog)
    usage = await agent.db(agent.buffer.usage)
    await agent.shutdown()
    warm = samples[min(2, len(samples) - 1)][1]  # after ten simulated minutes: caches filled
    peak, end = max(m for _, m in samples), samples[-1][1]
    print(f"outage: {seconds} s simulated at {tags} tags/s in {elapsed:.0f} s wall "
          f"({seconds * tags / elapsed:,.0f} readings/s recorded and sealed)")
    print(f"  buffered {backlog.undelivered_records:,} records undelivered, {backlog.pending_batches} sealed "
          f"batches pending, {agent.recorder.dropped_records} dropped, file {usage.file_bytes / 2**20:.0f} MB")
    print("  resident memory (MB) by simulated minute: "
          + ", ".join(f"{t // 60}: {m:.0f}" for t, m in samples[:: max(1, len(samples) // 12)]))
    print(f"  resident memory after warm-up {warm:.1f} MB, peak {peak:.1f} MB, at the end {end:.1f} MB: "
          f"{(peak - warm) / warm * 100:+.1f}% peak over warm-up")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=200, help="Commits per durability setting.")
    ap.add_argument("--hours", type=float, default=1.0, help="Simulated outage length.")
    ap.add_argument("--tags", type=int, default=TAGS, help="Readings per poll cycle (and per simulated second).")
    ap.add_argument("--outage-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.outage_only:
        logging.basicConfig(level=logging.ERROR)  # the outage's own warnings are expected
        with tempfile.TemporaryDirectory() as d:
            asyncio.run(outage(args.hours, args.tags, Path(d)))
        return
    print(f"buffer commit, {args.tags} readings per transaction, {args.cycles} transactions")
    syncs: tuple[Synchronous, ...] = ("FULL", "NORMAL")
    for sync in syncs:
        commit_and_read(sync, args.cycles, args.tags)
    # a fresh process, so that the first part's memory does not blur the second's
    subprocess.run([sys.executable, __file__, "--outage-only", "--hours", str(args.hours), "--tags", str(args.tags)],
                   check=True)


if __name__ == "__main__":
    main()
