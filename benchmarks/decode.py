"""The decoder's CPU per reading: opening, decompressing and checking a sealed batch as the store does.

A realistic batch: 5,000 readings of 100 tags (70 floats, 15 counters, 10 booleans, 5 state
strings), about 2 % bad and 1 % uncertain with a reason, a PLC timestamp on half the tags, a
production batch and phase on every reading; zstd, as the gateway seals it. A second batch has
three events among its readings (read by the full reader). Printed: CPU microseconds per reading
(``time.process_time``, the garbage collector on, as in the store's worker) of each step:

- ``open_batch``: the layout and the canonical header;
- decompress and SHA-256 of the records document;
- ``decode_row_tuples``: everything above plus reading and checking every row against the
  format and the header (the decoder's shortcut, msgspec);
- ``decode_rows``: the same, rows as lists; ``decode_records``: as ``Reading``/``Event`` objects;
- the full reader alone (``parse_document``: orjson, the exactness check, the column checks),
  which decides whenever the shortcut cannot vouch for a document.

Usage: python benchmarks/decode.py [--batches N]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import platform
import random
import time
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from blackbox.seal import (
    GENESIS_HASH,
    MAX_RECORDS_BYTES,
    decode_records,
    decode_row_tuples,
    decode_rows,
    open_batch,
    seal_rows,
)
from blackbox.seal.codec import get_codec
from blackbox.seal.records import parse_document

READINGS = 5000
KINDS = ["pv"] * 70 + ["count"] * 15 + ["running"] * 10 + ["state"] * 5
TAGS = [f"L1-MX-{i:03d}.{kind}" for i, kind in enumerate(KINDS)]
T0 = 1_790_000_000_000_000


def rows(rng: random.Random, first_seq: int, n: int) -> list[list[Any]]:
    out: list[list[Any]] = []
    for seq in range(first_seq, first_seq + n):
        i = seq % len(TAGS)
        kind = KINDS[i]
        ts = T0 + seq * 1000
        value: Any
        if kind == "pv":
            value = round(rng.uniform(0, 100), rng.choice([1, 2, 3])) if rng.random() < 0.7 else rng.uniform(-1e3, 1e3)
        elif kind == "count":
            value = rng.randrange(10**7)
        elif kind == "running":
            value = rng.random() < 0.5
        else:
            value = rng.choice(["IDLE", "RUN", "CIP", "FAULT"])
        quality, reason = "good", None
        draw = rng.random()
        if draw < 0.02:
            quality, reason, value = "bad", "timeout: no response from 10.0.4.21:502 within 1000 ms", None
        elif draw < 0.03:
            quality, reason = "uncertain", "stale: value unchanged since the PLC's last scan"
        out.append([seq, TAGS[i], value, quality, reason, ts, ts - 150 if i % 2 else None,
                    "FC050-2026-1125-01", "emulsify"])
    return out


def batch(with_events: bool) -> bytes:
    rng = random.Random(1)
    key = Ed25519PrivateKey.generate()
    events: list[list[Any]] = []
    if with_events:
        n = READINGS - 3
        readings = rows(rng, 1, 1000) + rows(rng, 1002, 2000) + rows(rng, 3003, n - 3000)
        alarm = {"limit": "h", "value": 91.5, "threshold": 90.0}
        events = [[1001, "alarm.raised", "L1-MX-004.pv", alarm, T0, None, None],
                  [3002, "alarm.cleared", "L1-MX-004.pv", {"limit": "h"}, T0 + 1, None, None],
                  [READINGS, "qc.result", "pH", {"value": 5.5, "spec": [5.0, 6.0], "by": "lab-2"}, T0 + 2, None, None]]
    else:
        readings = rows(rng, 1, READINGS)
    return seal_rows(readings, events, site="BENCH-01", gateway="gw-1", key=key, batch_seq=1, prev_hash=GENESIS_HASH,
                     config_hash="c" * 64, sealed_at_us=T0).wire


def per_reading(step: Callable[[], object], batches: int) -> float:
    """CPU microseconds per reading of ``step`` (one batch) run ``batches`` times."""
    gc.collect()
    started = time.process_time()
    for _ in range(batches):
        step()
    return (time.process_time() - started) / (batches * READINGS) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=200, help="batches decoded per figure")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}; Python {platform.python_version()}")
    for with_events in (False, True):
        measure(batch(with_events), with_events, args.batches)


def measure(wire: bytes, with_events: bool, batches: int) -> None:
    opened = open_batch(wire)
    document = get_codec("zstd").decompress(opened.payload, MAX_RECORDS_BYTES)
    print(f"\nbatch of {READINGS:,} records{' (3 of them events)' if with_events else ''}: "
          f"{len(document):,} bytes of records document, {len(opened.payload):,} compressed (zstd)")
    steps: list[tuple[str, Callable[[], object]]] = [
        ("open_batch (layout, header)", lambda: open_batch(wire)),
        ("decompress + SHA-256",
         lambda: hashlib.sha256(get_codec("zstd").decompress(opened.payload, MAX_RECORDS_BYTES)).digest()),
        ("decode_row_tuples (all checks)", lambda: decode_row_tuples(opened)),
        ("decode_rows (rows as lists)", lambda: decode_rows(opened)),
        ("decode_records (objects)", lambda: decode_records(opened)),
        ("full reader alone (fallback)", lambda: parse_document(document)),
    ]
    for name, step in steps:
        print(f"  {name:<34} {per_reading(step, batches):6.3f} us CPU per reading")

if __name__ == "__main__":
    main()
