"""Committed readings per second into the local buffer, at synchronous FULL and NORMAL.

One commit per simulated poll cycle of 2,000 tags, as the agent does. Prints the figures.
Usage: python benchmarks/buffer.py [--cycles N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from blackbox.buffer import Buffer
from blackbox.model import Context, Sample

TAGS = 2000


def run(sync: str, cycles: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        buf = Buffer(Path(d) / "b.sqlite", sync)  # type: ignore[arg-type]
        ctx = Context(batch="FC050-2026-1125-01", product="FC-050", phase="emulsify")
        cycle = [Sample(f"PLC-{i:04d}.value", 20.0 + i * 0.01) for i in range(TAGS)]
        started = time.perf_counter()
        for _ in range(cycles):
            buf.commit(cycle, [], ctx)
        elapsed = time.perf_counter() - started
        buf.close()
    return cycles * TAGS / elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=100)
    args = ap.parse_args()
    print(f"buffer commit, {TAGS} readings per transaction, {args.cycles} transactions")
    for sync in ("FULL", "NORMAL"):
        print(f"  synchronous={sync:<6}  {run(sync, args.cycles):>10,.0f} readings/s committed")


if __name__ == "__main__":
    main()
