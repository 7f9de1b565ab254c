"""The store's web window, measured: batch page, chart data, comparison and search (p50/p99).

Fills a fresh store with

* one production batch of N readings (default 1,000,000; 10 tags, three phases) through the real
  ingest (signed, verified, chained), and
* a history of H batches (default 10,000) of the same product on a second gateway of the same
  site, with enough readings to bring the store to T readings in all (default 10,000,000),
  written straight into the tables as the reading chunks ingest would write (their signatures play
  no part in what is measured here),

then times, in-process through the ASGI application (FastAPI's TestClient, no network):

1. the batch page: its first view (the trace report is computed, with every sealed batch of the
   production batch re-verified; timed with the web process's report cache emptied before each
   run) and later views (cached until a new sealed batch of its gateways arrives);
2. the chart data of one tag (100,000 readings) reduced to 1,200 min/max buckets;
3. the comparison of that tag with the last 10 batches of the product, and with a golden batch;
4. a search over the H batches (one page of 50, with and without the alarm filter).

Usage: python benchmarks/web.py [--quick] [--readings N] [--total T] [--history H] [--runs R]
                                [--db sqlite|postgresql|URL]

``--quick`` measures a tenth of each size (100,000 readings in a store of 1,000,000, 1,000
batches, 10 runs): a few minutes instead of ~15 on PostgreSQL, for a check that the script and
the queries still work, not for the figures in docs/store.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, insert, select

sys.path.insert(0, str(Path(__file__).parent))
from store_verify import database

from blackbox.seal import GENESIS_HASH, public_key_pem, seal_rows
from blackbox.store.chunks import CHUNK_COLUMNS, make_chunks
from blackbox.store.db import make_engine, open_store, open_store_readonly
from blackbox.store.ingest import Ingestor
from blackbox.store.integrity_worker import worker_pids
from blackbox.store.schema import events, gateways, reading_chunks, tag_configs
from blackbox.web import golden
from blackbox.web.app import create_app
from blackbox.web.auth import AuthError, create_token, create_user
from blackbox.web.queries import find_occurrence

SITE, GATEWAY, HISTORY_GATEWAY, BATCH, PRODUCT = "BENCH-01", "gw-bench", "gw-history", "BENCH-BIG-01", "P-100"
TAGS = [f"T-{i:02d}.pv" for i in range(10)]
PHASES = ("heat", "emulsify", "cool")
T0 = 1_795_000_000_000_000
STEP_US = 10_000


def config(gateway: str) -> dict[str, object]:
    return {"sha256": "c" * 64, "site": {"id": SITE, "timezone": "Asia/Shanghai"}, "gateway": gateway,
            "tags": [{"name": t, "category": "process", "eng_unit": "degC",
                      "limits": [{"l": 40.0, "h": 80.0, "hh": 90.0}]} for t in TAGS]}


def fill_big_batch(engine: Engine, n_readings: int, batch_size: int = 5000) -> float:
    """The measured batch, through the real ingest; returns its start time (µs)."""
    key = Ed25519PrivateKey.generate()
    ingestor = Ingestor(engine)
    ingestor.enroll(GATEWAY, SITE, public_key_pem(key))
    start = T0 + 10**12  # after the whole history
    seq, batch_seq, prev, done = 1, 1, GENESIS_HASH, 0
    per_phase = n_readings // len(PHASES) + 1
    while done < n_readings:
        evs: list[list[object]] = []
        if batch_seq == 1:
            evs = [[1, "config.applied", None, config(GATEWAY), start, None, None],
                   [2, "batch.started", None, {"batch": BATCH, "product": PRODUCT}, start, BATCH, None]]
            seq = 3
        rows = []
        for _ in range(min(batch_size, n_readings - done)):
            phase = PHASES[min(done // per_phase, len(PHASES) - 1)]
            if done % per_phase == 0:
                evs.append([seq, "batch.phase", None, {"batch": BATCH, "phase": phase}, start + seq * STEP_US,
                            BATCH, phase])
                seq += 1
            ts = start + seq * STEP_US
            rows.append([seq, TAGS[seq % len(TAGS)], 60.0 + (seq % 97) * 0.3, "good", None, ts, ts - 100, BATCH,
                         phase])
            seq += 1
            done += 1
        if done == n_readings:
            evs.append([seq, "batch.ended", None, {"batch": BATCH}, start + seq * STEP_US, BATCH, None])
            seq += 1
        evs.sort(key=lambda e: e[0])  # type: ignore[arg-type, return-value]
        sealed = seal_rows(rows, evs, site=SITE, gateway=GATEWAY, key=key, batch_seq=batch_seq, prev_hash=prev,
                           config_hash="c" * 64, sealed_at_us=start + seq * STEP_US)
        result = ingestor.handle(sealed.wire, SITE, GATEWAY)
        assert result.status == "stored", result
        prev, batch_seq = sealed.hash, batch_seq + 1
    return start


def fill_history(engine: Engine, n_batches: int, n_readings: int) -> None:
    """Past batches of the product, written straight into the tables, oldest first."""
    with engine.begin() as conn:
        gid = conn.execute(insert(gateways).values(site=SITE, gateway=HISTORY_GATEWAY, created_at_us=T0)
                           .returning(gateways.c.id)).scalar_one()
        conn.execute(insert(tag_configs).values(gateway_id=gid, seq=0, config_sha256="c" * 64, effective_from_us=T0,
                                                data=config(HISTORY_GATEWAY)))
    per_batch = max(len(PHASES), n_readings // max(1, n_batches))
    seq = 1
    span = 90 * 60 * 1_000_000  # 90 minutes a batch
    for first in range(0, n_batches, 200):
        ev_rows: list[dict[str, object]] = []
        rd_rows: dict[int, list[list[object]]] = {}  # by sealed batch (one per production batch)
        for b in range(first, min(n_batches, first + 200)):
            name, t = f"H-{b:06d}", T0 + b * span
            ev_rows.append(dict(gateway_id=gid, seq=seq, batch_seq=b + 1, type="batch.started", subject=None,
                                data={"batch": name, "product": PRODUCT}, ts_us=t, batch=name, phase=None, ref=name))
            seq += 1
            for p, phase in enumerate(PHASES):
                pt = t + p * span // 4
                ev_rows.append(dict(gateway_id=gid, seq=seq, batch_seq=b + 1, type="batch.phase", subject=None,
                                    data={"batch": name, "phase": phase}, ts_us=pt, batch=name, phase=phase,
                                    ref=name))
                seq += 1
                n = per_batch // len(PHASES)
                for i in range(n):
                    rd_rows.setdefault(b + 1, []).append([seq, TAGS[i % len(TAGS)], 58.0 + (b % 7) + i % 11, "good",
                                                          None, pt + i * (span // 4 // max(1, n)), None, name, phase])
                    seq += 1
            if b % 10 == 0:
                ev_rows.append(dict(gateway_id=gid, seq=seq, batch_seq=b + 1, type="alarm.raised", subject=TAGS[0],
                                    data={"tag": TAGS[0], "level": "H"}, ts_us=t + span // 2, batch=name,
                                    phase="emulsify", ref=None))
                seq += 1
            ev_rows.append(dict(gateway_id=gid, seq=seq, batch_seq=b + 1, type="batch.ended", subject=None,
                                data={"batch": name}, ts_us=t + 3 * span // 4, batch=name, phase=None, ref=name))
            seq += 1
        with engine.begin() as conn:
            conn.execute(insert(events), ev_rows)
            # the chunks ingest would write
            chunks = [c for batch_seq, rows in rd_rows.items() for c in make_chunks(rows, gid, batch_seq)]
            marker = "?" if conn.dialect.paramstyle == "qmark" else "%s"
            conn.exec_driver_sql(f"INSERT INTO reading_chunks ({', '.join(CHUNK_COLUMNS)}) "
                                 f"VALUES ({', '.join([marker] * len(CHUNK_COLUMNS))})", chunks)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(monitor: Engine | None) -> float:
    """CPU time used so far by this process (the application runs in it) and, on PostgreSQL, by the
    server processes of the benchmark's database (read from /proc: the server runs on this machine).

    On a shared, loaded machine wall times measure the queue for the cores as much as the work;
    CPU time per request is the figure that compares between runs.
    """
    total = time.process_time()
    if monitor is None:
        return total
    with monitor.connect() as conn:
        pids = conn.exec_driver_sql("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                    "AND pid <> pg_backend_pid()").scalars().all()
    pids = [*pids, *worker_pids()]  # the trace report's integrity worker process (a large batch's)
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the server process ended meanwhile, or runs elsewhere
            continue
        total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
    return total


def timed(fn: Callable[[], object], runs: int, monitor: Engine | None = None) -> tuple[float, float, float, float]:
    """(first, p50, p99, CPU per run) in milliseconds; the others are over the runs after the first."""
    times = []
    cpu_start = 0.0
    for i in range(runs + 1):
        if i == 1:
            cpu_start = cpu_seconds(monitor)
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    cpu = (cpu_seconds(monitor) - cpu_start) * 1000 / max(1, runs)
    ordered = sorted(times[1:])
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return times[0], statistics.median(ordered), p99, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tenth of each size and 10 runs (defaults only)")
    parser.add_argument("--readings", type=int, default=None, help="readings of the measured batch (1,000,000)")
    parser.add_argument("--total", type=int, default=None, help="readings in the store in all (10,000,000)")
    parser.add_argument("--history", type=int, default=None, help="past batches of the product (10,000)")
    parser.add_argument("--runs", type=int, default=None, help="timed runs of each request (20)")
    parser.add_argument("--db", default="sqlite", help="sqlite, postgresql (a fresh database) or a URL")
    parser.add_argument("--filled", action="store_true", help="--db is a URL of a store this script filled "
                        "before: measure only")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    args.readings = args.readings or 1_000_000 // scale
    args.total = args.total or 10_000_000 // scale
    args.history = args.history or 10_000 // scale
    args.runs = args.runs or 20 // (2 if args.quick else 1)
    with database(args.db) as url:
        engine = open_store(url)
        history_s = ingest_s = 0.0
        if not args.filled:
            t = time.perf_counter()
            fill_history(engine, args.history, max(0, args.total - args.readings))
            history_s = time.perf_counter() - t
            t = time.perf_counter()
            fill_big_batch(engine, args.readings)
            ingest_s = time.perf_counter() - t
        if engine.dialect.name == "postgresql":
            # planner statistics, as autovacuum keeps them on a store in service: right after a bulk
            # fill they are missing, and the alarm search's plan is then minutes-long on a quick run
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("ANALYZE")
        token = create_token(engine, "bench", "regulator")
        with engine.connect() as conn:
            n_readings = conn.execute(select(func.sum(reading_chunks.c.n))).scalar_one()
        engine.dispose()
        read = open_store_readonly(url)
        write = make_engine(url)
        client = TestClient(create_app(read, write))
        monitor = make_engine(url) if url.startswith("postgresql") else None
        headers = {"Authorization": f"Bearer {token}"}

        def get(path: str) -> bytes:
            r: httpx.Response = client.get(path, headers=headers)  # TestClient's own type is lost (Any)
            assert r.status_code == 200, (path, r.status_code, r.text[:300])
            return r.content

        # the page needs a session: log in through a user made for the benchmark
        with contextlib.suppress(AuthError):  # a store filled before has the user
            create_user(write, "bench", "benchmark-password", "regulator")
        form = client.get("/login").text
        csrf = form.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        r = client.post("/login", data={"csrf": csrf, "username": "bench", "password": "benchmark-password"},
                        follow_redirects=False)
        assert r.status_code == 303, r.text
        page_url = f"/sites/{SITE}/batches/{BATCH}"

        def page() -> None:
            r = client.get(page_url)
            assert r.status_code == 200, r.text[:300]

        def first_view() -> None:
            """The page with the web process's report cache emptied: the trace report (and its re-verification)
            computed again, as on a batch's first view."""
            client.app.state.ctx._reports.clear()  # type: ignore[attr-defined]
            page()

        api = f"/api/v1/sites/{SITE}/batches/{BATCH}"
        tag = TAGS[3]
        first = timed(first_view, args.runs, monitor)
        _, page_p50, page_p99, page_cpu = timed(page, args.runs, monitor)
        series = orjson.loads(get(f"{api}/series?tag={tag}"))
        chart = timed(lambda: get(f"{api}/series?tag={tag}"), args.runs, monitor)
        comparison = orjson.loads(get(f"{api}/compare?tag={tag}&reference=last&last=10"))
        compare = timed(lambda: get(f"{api}/compare?tag={tag}&reference=last&last=10"), args.runs, monitor)
        # the first batch of the history as the product's golden batch, as QA would choose it
        golden.choose(write, find_occurrence(read, SITE, "H-000000", None), by="bench", role="admin")
        comparison_golden = orjson.loads(get(f"{api}/compare?tag={tag}&reference=golden"))
        assert comparison_golden["reference_kind"] == "golden"
        compare_golden = timed(lambda: get(f"{api}/compare?tag={tag}&reference=golden"), args.runs, monitor)
        search = timed(lambda: get(f"/api/v1/batches?product={PRODUCT}&per_page=50"), args.runs, monitor)
        search_alarms = timed(lambda: get(f"/api/v1/batches?product={PRODUCT}&with_alarms=true&per_page=50"),
                              args.runs, monitor)
        found = orjson.loads(get(f"/api/v1/batches?product={PRODUCT}&per_page=1"))["total"]
        client.close()
        if monitor is not None:
            monitor.dispose()
        read.dispose()
        write.dispose()
    backend = args.db if args.db in ("sqlite", "postgresql") else url.split(":", 1)[0]
    print(f"store web on {backend}: {n_readings:,} readings in the store, measured batch {args.readings:,} "
          f"readings ({len(TAGS)} tags), {found:,} batch numbers; {args.runs} runs each, in-process (no network)")
    if not args.filled:
        print(f"  filled: history {history_s:.1f} s, measured batch through ingest {ingest_s:.1f} s")
    print(f"  {'batch page, first view (trace computed):':<48} p50 {first[1]:9.1f} ms   p99 {first[2]:9.1f} ms   "
          f"cpu {first[3]:7.1f} ms   (the very first: {first[0]:.0f} ms)")
    print(f"  {'batch page, later views (cached):':<48} p50 {page_p50:9.1f} ms   p99 {page_p99:9.1f} ms   "
          f"cpu {page_cpu:7.1f} ms")
    rows = [(f"chart data ({series['n_readings']:,} readings -> {len(series['t'])} buckets)", chart),
            (f"comparison (last {len(comparison['reference'])} batches)", compare),
            ("comparison (the golden batch)", compare_golden),
            (f"search, {found:,} batches (page of 50)", search),
            ("search with alarms only", search_alarms)]
    for label, (_first, p50, p99, cpu) in rows:
        print(f"  {label + ':':<48} p50 {p50:9.1f} ms   p99 {p99:9.1f} ms   cpu {cpu:7.1f} ms")
    print("  (cpu: CPU time per request of this process, its integrity worker and, on PostgreSQL, "
          "the database's server processes)")

if __name__ == "__main__":
    main()
