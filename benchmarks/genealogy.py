"""The genealogy walk at factory scale: forward and reverse, on SQLite and PostgreSQL.

A store of ``--lots`` (20,000) lots is written straight into the ``events`` table as the store
derives them from the gateway's records: every material and packaging lot received
(``lot.registered`` with its ``lot.supplied``), bulk batches of ten raw-material lots each
(``batch.started``, ``material.consumed``, ``batch.ended``; a lot is consumed by one or two
batches), two finished lots filled from each batch with three packaging lots each
(``lot.produced`` and its ``packaging.consumed``), and other events around them (the readings' alarms
and phases) so that the lookup indexes are not the whole table. Then
:func:`blackbox.store.genealogy.genealogy` walks forward from random suppliers' lots (to the
finished lots that contain them) and in reverse from random finished lots (to the suppliers' lots
that went into them), ``--walks`` times each, on a read-only engine as the pages and the API use
it. Printed: p50 and p99 per direction, this process's CPU time per walk (on SQLite all of the
work; on PostgreSQL the client's share) — the figure that compares between runs on a loaded
machine — and the size of the graphs walked.

Every figure depends on the machine: the CPU count and the load average are printed.
Needs PostgreSQL for ``--db postgresql`` (``BLACKBOX_BENCH_PG``, a scratch database is made and
dropped). Usage::

    python benchmarks/genealogy.py                     # SQLite and PostgreSQL, 20,000 lots
    python benchmarks/genealogy.py --db sqlite --lots 2000 --walks 20
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from typing import Any

from sqlalchemy import Engine, insert, text
from store_verify import database

from blackbox.store.db import open_store, open_store_readonly
from blackbox.store.genealogy import Direction, genealogy
from blackbox.store.schema import events, gateways

SITE, GATEWAY = "BENCH-01", "gw-genealogy"
T0 = 1_790_000_000_000_000
LOTS_PER_BATCH = 10
PACKAGING_SHARE = 5
"""One lot in five is packaging material."""
FINISHED_PER_BATCH = 2
PACKAGING_PER_FINISHED = 3
NOISE_PER_BATCH = 20
"""Events of other types per batch (phases, alarms): what the indexes must skip."""


class Filler:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.rows: list[dict[str, Any]] = []
        self.seq = 0
        with engine.begin() as conn:
            self.gid = conn.execute(insert(gateways).values(site=SITE, gateway=GATEWAY, created_at_us=T0)
                                    .returning(gateways.c.id)).scalar_one()

    def event(self, type_: str, data: dict[str, Any], ts: int, *, ref: str | None = None, batch: str | None = None,
              subject: str | None = None) -> None:
        self.seq += 1
        self.rows.append(dict(gateway_id=self.gid, seq=self.seq, batch_seq=self.seq // 500 + 1, type=type_,
                              subject=subject, data=data, ts_us=ts, batch=batch, phase=None, ref=ref))
        if len(self.rows) >= 5000:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            with self.engine.begin() as conn:
                conn.execute(insert(events), self.rows)
            self.rows = []


def fill(engine: Engine, n_lots: int, seed: int = 7) -> tuple[list[str], list[str]]:
    """The lot graph; returns the suppliers' lots and the finished lots (the walks' starting points)."""
    rng = random.Random(seed)
    f = Filler(engine)
    raw: list[str] = []
    packaging: list[str] = []
    suppliers: list[str] = []
    t = T0
    for i in range(n_lots):
        kind = "packaging" if i % PACKAGING_SHARE == 0 else "raw"
        lot, supplier, number = f"L-{i:06d}", f"SUP-{i % 40:02d}", f"S{i:06d}"
        data = {"lot": lot, "material": f"{'PK' if kind == 'packaging' else 'RM'}-{i % 60:03d}", "sublot": None,
                "supplier": supplier, "supplier_lot": number, "coa": f"COA-{i:06d}", "quantity": 200.0,
                "unit": "kg", "status": "released", "kind": kind}
        f.event("lot.registered", data, t, ref=lot, subject=lot)
        f.event("lot.supplied", {"supplier": supplier, "supplier_lot": number, "lot": lot, "material": data["material"],
                                 "quantity": 200.0, "unit": "kg"}, t, ref=number, subject=number)
        (packaging if kind == "packaging" else raw).append(lot)
        if kind == "raw":
            suppliers.append(f"{supplier}:{number}")
        t += 1_000_000
    finished: list[str] = []
    n_batches = max(1, len(raw) * 3 // 2 // LOTS_PER_BATCH)  # each raw lot consumed by one or two batches
    order = raw + rng.sample(raw, len(raw) // 2)
    for b in range(n_batches):
        batch = f"B-{b:05d}"
        f.event("batch.started", {"batch": batch, "product": "FC-050"}, t, ref=batch, batch=batch)
        for k, lot in enumerate(order[b * LOTS_PER_BATCH:(b + 1) * LOTS_PER_BATCH]):
            f.event("material.consumed", {"material": "RM", "lot": lot, "target": 25.0, "actual": 25.01,
                                          "eng_unit": "kg", "weighing": f"W-{b}-{k}"}, t + k, ref=lot, batch=batch,
                    subject="RM")
        for n in range(NOISE_PER_BATCH):
            f.event("batch.phase" if n % 4 == 0 else "alarm.raised", {"batch": batch, "phase": f"p{n}"}, t + 100 + n,
                    ref=batch if n % 4 == 0 else None, batch=batch)
        f.event("batch.ended", {"batch": batch}, t + 500, ref=batch, batch=batch)
        for j in range(FINISHED_PER_BATCH):
            fg = f"FG-{b:05d}-{j}"
            packs: list[dict[str, Any]] = [{"material": "PK", "lot": rng.choice(packaging), "quantity": 1000.0,
                                            "unit": "pcs"} for _ in range(PACKAGING_PER_FINISHED)]
            f.event("lot.produced", {"lot": fg, "batch": batch, "product": "FC-050", "quantity": 1000.0,
                                     "unit": "jars", "packaging": packs}, t + 600 + j, ref=fg, batch=batch, subject=fg)
            for p in packs:
                f.event("packaging.consumed", {**p, "finished_lot": fg, "batch": batch}, t + 600 + j, ref=p["lot"],
                        batch=batch, subject=p["lot"])
            finished.append(fg)
        t += 3_600_000_000
    f.flush()
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("ANALYZE events"))  # as autovacuum would after such a fill
        else:
            conn.execute(text("ANALYZE"))
    return suppliers, finished


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def walk_times(engine: Engine, starts: list[str], direction: Direction, sites: list[str] | None
               ) -> tuple[list[float], float, int]:
    """Wall time of each walk, this process's CPU time per walk, nodes per walk."""
    times, nodes = [], 0
    genealogy(engine, starts[0], direction, sites=sites)  # warm the caches
    cpu0 = time.process_time()
    for start in starts:
        t0 = time.perf_counter()
        g = genealogy(engine, start, direction, sites=sites)
        times.append(time.perf_counter() - t0)
        nodes += len(g.nodes)
        assert g.links, f"nothing found from {start}"
    return times, (time.process_time() - cpu0) / len(starts), nodes // len(starts)


def run(kind: str, n_lots: int, n_walks: int) -> None:
    with database(kind) as url:
        writer = open_store(url)
        try:
            t0 = time.perf_counter()
            suppliers, finished = fill(writer, n_lots)
            filled = time.perf_counter() - t0
            with writer.connect() as conn:
                n_events = conn.execute(text("SELECT count(*) FROM events")).scalar_one()
        finally:
            writer.dispose()
        engine = open_store_readonly(url)
        try:
            rng = random.Random(11)
            print(f"{kind}: {n_lots:,} lots, {len(finished):,} finished lots, {n_events:,} events (filled in "
                  f"{filled:.1f} s)")
            walks: list[tuple[Direction, list[str]]] = [("forward", suppliers), ("reverse", finished)]
            for direction, pool in walks:
                for sites in (None, [SITE]):
                    times, cpu, nodes = walk_times(engine, rng.sample(pool, min(n_walks, len(pool))), direction,
                                                   sites)
                    print(f"  {direction:8s} {'(one site)' if sites else '(all sites)':12s} p50 "
                          f"{statistics.median(times) * 1000:7.1f} ms  p99 {percentile(times, 0.99) * 1000:7.1f} ms  "
                          f"cpu {cpu * 1000:6.1f} ms  ({nodes} nodes a walk, {len(times)} walks)")
        finally:
            engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--lots", type=int, default=20_000)
    parser.add_argument("--walks", type=int, default=200)
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"CPUs {os.cpu_count()}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for kind in (["sqlite", "postgresql"] if args.db == "both" else [args.db]):
        run(kind, args.lots, args.walks)
    load = os.getloadavg()
    print(f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
