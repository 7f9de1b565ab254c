"""The transparency log's figures: entries appended per second, and proof and signing costs.

1. ``--entries`` appends, each in its own transaction (as ingest does: one entry per batch), on a
   SQLite file (synchronous FULL) and on PostgreSQL; then the same with ``--workers`` threads
   appending concurrently (they serialise on the log's lock row): entries/s, commits included;
   then appends inside one open transaction: what an entry adds to a transaction ingest commits
   anyway (entries/s and CPU per entry).
2. On the log so built: an inclusion proof and a consistency proof read from the stored nodes,
   and signing a checkpoint with the store key: milliseconds each.

Usage: python benchmarks/transparency_log.py [--entries N] [--workers N] [--db sqlite|postgresql|both]
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from scratch_db import scratch_postgres
from sqlalchemy import Engine

from blackbox.store.db import open_store
from blackbox.store.tlog import TransparencyLog, append_entry
from blackbox.tlog.note import Signer


@contextlib.contextmanager
def database(kind: str) -> Iterator[str]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as d:
            yield f"sqlite:///{Path(d) / 'store.sqlite'}"
        return
    with scratch_postgres() as url:
        yield url


def payload(i: int) -> dict[str, object]:
    return {"site": "BENCH-01", "gateway": "gw-bench", "batch_seq": i, "hash": f"{i:064x}",
            "received_at_us": 1_700_000_000_000_000 + i}


def append_serial(engine: Engine, n: int, start: int) -> float:
    t = time.perf_counter()
    for i in range(start, start + n):
        with engine.begin() as conn:
            append_entry(conn, "batch", payload(i), ref=f"{i:064x}")
    return n / (time.perf_counter() - t)


def append_one_transaction(engine: Engine, n: int, start: int) -> tuple[float, float]:
    """Entries/s and CPU µs per entry when appending inside an open transaction (ingest's marginal cost)."""
    t, cpu = time.perf_counter(), time.process_time()
    with engine.begin() as conn:
        for i in range(start, start + n):
            append_entry(conn, "batch", payload(i), ref=f"{i:064x}")
    return n / (time.perf_counter() - t), (time.process_time() - cpu) / n * 1e6


def append_concurrent(engine: Engine, n: int, workers: int, start: int) -> float:
    per = n // workers
    barrier = threading.Barrier(workers + 1)

    def work(w: int) -> None:
        barrier.wait()
        for i in range(per):
            k = start + w * per + i
            with engine.begin() as conn:
                append_entry(conn, "batch", payload(k), ref=f"{k:064x}")

    threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
    for th in threads:
        th.start()
    barrier.wait()
    t = time.perf_counter()
    for th in threads:
        th.join()
    return per * workers / (time.perf_counter() - t)


def ms(fn: object, repeat: int = 50) -> float:
    assert callable(fn)
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t) / repeat * 1000


def run(kind: str, entries: int, workers: int) -> None:
    with database(kind) as url:
        engine = open_store(url, pool_size=workers + 2) if kind == "postgresql" else open_store(url)
        try:
            serial = append_serial(engine, entries, 0)
            concurrent = append_concurrent(engine, entries, workers, entries)
            inner, cpu = append_one_transaction(engine, entries, 2 * entries)
            tlog = TransparencyLog(engine, Signer("bench.example/log", Ed25519PrivateKey.generate()))
            size, _ = tlog.head()
            incl = ms(lambda: tlog.inclusion(size // 3, size))
            cons = ms(lambda: tlog.consistency(size // 3, size))
            sign = ms(lambda: tlog.signed_checkpoint())
            print(f"{kind}: one transaction per entry: {serial:,.0f} entries/s with one writer, {concurrent:,.0f} "
                  f"entries/s with {workers}; inside a transaction: {inner:,.0f} entries/s, {cpu:.0f} µs CPU each\n"
                  f"    on a log of {size:,}: inclusion proof {incl:.2f} ms, consistency proof {cons:.2f} ms, "
                  f"signed checkpoint {sign:.2f} ms", flush=True)
        finally:
            engine.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, default=5000)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    args = ap.parse_args()
    print("target: >= 1,000 entries/s (each append its own transaction, as ingest does)")
    for kind in (["sqlite", "postgresql"] if args.db == "both" else [args.db]):
        run(kind, args.entries, args.workers)


if __name__ == "__main__":
    main()
