"""Re-verification of the store, measured: ``store verify`` readings/s and the trace of one large batch.

Fills a fresh store (PostgreSQL by default) with one gateway's chain of sealed batches holding
one production batch of N readings (100 tags), through the real ingest, then times

1. ``blackbox store verify`` (``verify_store`` on a read-only engine): every signature, chain link,
   and every row re-derived and compared, in readings/s;
2. the trace report of the production batch (the same check over its batches, plus the report).

Usage: python benchmarks/store_verify.py [--readings N] [--batch-size N] [--db sqlite|postgresql|URL]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
import tracemalloc
from collections.abc import Iterator

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from scratch_db import scratch_postgres

from blackbox.seal import GENESIS_HASH, public_key_pem, seal_rows
from blackbox.store.db import open_store, open_store_readonly
from blackbox.store.findings import Difference
from blackbox.store.ingest import Ingestor
from blackbox.store.trace import trace_batch
from blackbox.store.verify import verify_store

SITE, GATEWAY, BATCH = "BENCH-01", "gw-bench", "BENCH-BATCH-01"
TAGS = [f"T-{i:03d}.pv" for i in range(100)]
T0 = 1_795_000_000_000_000


@contextlib.contextmanager
def database(kind: str) -> Iterator[str]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{tmp}/store.sqlite"
        return
    if kind != "postgresql":
        yield kind
        return
    with scratch_postgres() as url:
        yield url


def fill(url: str, n_readings: int, batch_size: int) -> float:
    """Ingest the chain; returns the ingest rate in readings/s."""
    key = Ed25519PrivateKey.generate()
    engine = open_store(url)
    ingestor = Ingestor(engine)
    ingestor.enroll(GATEWAY, SITE, public_key_pem(key))
    config = {"sha256": "c" * 64, "site": {"id": SITE}, "gateway": GATEWAY,
              "tags": [{"name": t, "category": "process", "limits": [{"h": 90.0}]} for t in TAGS]}
    seq, batch_seq, prev, done, elapsed = 1, 1, GENESIS_HASH, 0, 0.0
    while done < n_readings:
        events: list[list[object]] = []
        if batch_seq == 1:
            events = [[1, "config.applied", None, config, T0, None, None],
                      [2, "batch.started", None, {"batch": BATCH, "product": "P"}, T0, BATCH, None]]
            seq = 3
        rows = []
        for _ in range(min(batch_size, n_readings - done)):
            ts = T0 + seq * 10_000
            rows.append([seq, TAGS[seq % len(TAGS)], 50.0 + (seq % 97) * 0.5, "good", None, ts, ts - 100, BATCH,
                         "run"])
            seq += 1
            done += 1
        if done == n_readings:
            events.append([seq, "batch.ended", None, {"batch": BATCH}, T0 + seq * 10_000, BATCH, None])
            seq += 1
        sealed = seal_rows(rows, events, site=SITE, gateway=GATEWAY, key=key, batch_seq=batch_seq, prev_hash=prev,
                           config_hash="c" * 64, sealed_at_us=T0 + seq * 10_000)
        started = time.perf_counter()
        result = ingestor.handle(sealed.wire, SITE, GATEWAY)
        elapsed += time.perf_counter() - started
        assert result.status == "stored", result
        prev, batch_seq = sealed.hash, batch_seq + 1
    engine.dispose()
    return n_readings / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--db", default="postgresql", help="sqlite, postgresql (a fresh database) or a URL")
    args = parser.parse_args()
    with database(args.db) as url:
        ingest_rate = fill(url, args.readings, args.batch_size)
        reader = open_store_readonly(url)
        findings: list[Difference] = []
        cpu = time.process_time()
        stats = verify_store(reader, findings.append)
        verify_cpu = time.process_time() - cpu
        assert not findings, findings[:5]
        started, cpu = time.perf_counter(), time.process_time()
        report = trace_batch(reader, BATCH)
        trace_s, trace_cpu = time.perf_counter() - started, time.process_time() - cpu
        assert report.integrity.verdict == "verified", report.integrity.findings
        tracemalloc.start()  # a second run, for its peak memory (tracemalloc slows it down)
        verify_store(reader, findings.append)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        reader.dispose()
    backend = args.db if args.db in ("sqlite", "postgresql") else url.split(":", 1)[0]
    print(f"store verify on {backend}: {args.readings:,} readings in {stats.batches} batches of {args.batch_size}")
    print(f"  ingest (reference):   {ingest_rate:12,.0f} readings/s")
    print(f"  store verify:         {stats.readings_per_s():12,.0f} readings/s ({stats.seconds:.2f} s; "
          f"{stats.readings / verify_cpu:,.0f} readings per CPU second of this process)")
    print(f"  trace of the batch:   {trace_s:12.2f} s ({trace_cpu:.2f} CPU s of this process; its "
          f"{args.readings:,} readings re-derived and the report)")
    print(f"  peak Python memory of store verify: {peak / 2**20:.1f} MiB (bounded by one batch, not the store)")
    print(f"  load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
