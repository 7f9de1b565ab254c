"""The agent's start-up cost of opening its buffer: CPU of ``Buffer(path)`` on a buffer at the head
revision (every start), on a new file (the first start) and on a buffer of schema version 1 (once,
after an upgrade of blackbox).

Each open runs in a fresh interpreter, as an agent start does, so that no import is already done;
the figure is the median over ``--runs`` of the process CPU time spent in ``Buffer(path)`` (its
imports done before), and whether Alembic and SQLAlchemy were imported (they then stay in the
agent's memory for as long as it runs).

Usage: python benchmarks/buffer_open.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

OPEN = """
import sys, time
from pathlib import Path
from blackbox.buffer import Buffer
started = time.process_time()
Buffer(Path(sys.argv[1])).close()
print(time.process_time() - started, "alembic" in sys.modules, "sqlalchemy" in sys.modules)
"""

V1 = """
CREATE TABLE readings (seq INTEGER NOT NULL, ts_us BIGINT NOT NULL, tag VARCHAR NOT NULL, value TEXT,
    quality VARCHAR(9) NOT NULL, reason TEXT, source_ts_us BIGINT, batch VARCHAR, phase VARCHAR, PRIMARY KEY (seq));
CREATE TABLE events (seq INTEGER NOT NULL, ts_us BIGINT NOT NULL, type VARCHAR NOT NULL, subject VARCHAR,
    data TEXT NOT NULL, batch VARCHAR, phase VARCHAR, PRIMARY KEY (seq));
CREATE TABLE sealed_batches (batch_seq INTEGER NOT NULL, first_seq BIGINT NOT NULL, last_seq BIGINT NOT NULL,
    hash VARCHAR(64) NOT NULL, wire BLOB NOT NULL, sealed_at_us BIGINT NOT NULL, delivered_at_us BIGINT,
    PRIMARY KEY (batch_seq));
CREATE TABLE meta ("key" VARCHAR NOT NULL, value TEXT NOT NULL, PRIMARY KEY ("key"));
INSERT INTO meta VALUES ('schema_version', '1');
"""
"""A buffer as agent version 1 made it (empty)."""


def open_once(path: Path) -> tuple[float, str]:
    """CPU seconds of the open, and the libraries it imported."""
    out = subprocess.run([sys.executable, "-c", OPEN, str(path)], check=True, capture_output=True, text=True,
                         timeout=60).stdout.split()
    imported = [name for name, flag in zip(("Alembic", "SQLAlchemy"), out[1:], strict=True) if flag == "True"]
    return float(out[0]), " and ".join(imported) or "neither Alembic nor SQLAlchemy"


def report(what: str, opens: list[tuple[float, str]]) -> None:
    cpu = statistics.median(c for c, _ in opens) * 1e3
    print(f"{what}: {cpu:.1f} ms CPU (median of {len(opens)}), imported: {', '.join(sorted({i for _, i in opens}))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as d:
        new = [open_once(Path(d) / f"new-{i}.sqlite") for i in range(min(args.runs, 5))]
        head = Path(d) / "new-0.sqlite"
        at_head = [open_once(head) for _ in range(args.runs)]
        upgrades = []
        for i in range(min(args.runs, 5)):
            old = Path(d) / f"v1-{i}.sqlite"
            with sqlite3.connect(old) as db:
                db.executescript(V1)
            upgrades.append(open_once(old))
    report("open at head", at_head)
    report("open a new file", new)
    report("open and upgrade from version 1", upgrades)
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
