"""``blackbox status`` against a running agent with many tags, and whether polling stalls meanwhile.

A real ``blackbox run`` polls simulated Modbus TCP devices of 1,000 float32 tags each, ``--tags``
(20,000) in all, every 0.1 s (``uplink.ModbusLine``; no store: the batches wait in the buffer). After a warm-up:

1. a quiet window of ``--seconds``: the largest gap between two consecutive poll cycles, read
   from the buffer (``reading_blocks.ts_us``);
2. a window of the same length in which ``status`` is asked back to back over the control
   socket: the time of each answer (median, max; target <= 100 ms), the largest gap between poll
   cycles meanwhile, and the pollers' overrun counter before and after;
3. ``blackbox status --json`` as a user runs it (a new Python process: its start-up included).

Usage: python benchmarks/status_scale.py [--tags 20000] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import sqlite3
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from uplink import BLACKBOX, ModbusLine, say, write_config

from blackbox.broker import EmbeddedBroker
from blackbox.control_client import call
from blackbox.seal import generate_key_file

POLL = 0.1


def cycle_gap(buffer: Path, since_us: int, until_us: int) -> tuple[float, int]:
    """Largest gap in seconds between consecutive poll cycles in the window, and the cycles seen."""
    with contextlib.closing(sqlite3.connect(f"file:{buffer}?mode=ro", uri=True, timeout=10)) as db:
        times = [r[0] for r in db.execute("SELECT DISTINCT ts_us FROM reading_blocks WHERE ts_us BETWEEN ? AND ? "
                                          "ORDER BY ts_us", (since_us, until_us))]
    gaps = [(b - a) / 1e6 for a, b in itertools.pairwise(times)]
    return (max(gaps) if gaps else float("nan")), len(times)


def overruns(sock: Path) -> int:
    return sum(int(s.get("overruns") or 0) for s in call(sock, "status", timeout=60)["sources"])


async def run(workdir: Path, broker: EmbeddedBroker, tags: int, seconds: float) -> None:
    lines = [ModbusLine(min(1000, tags - first), f"PLC{k:02d}") for k, first in enumerate(range(0, tags, 1000))]
    serving = [line.start_process() for line in lines]
    config = write_config(workdir, broker, f"sqlite:///{workdir / 'unused.sqlite'}",
                          sources=[line.source(POLL) for line in lines])
    generate_key_file(workdir / "gateway.key")
    sock, buffer = workdir / "agent.sock", workdir / "buffer.sqlite"
    with open(workdir / "agent.log", "wb") as log:
        agent = subprocess.Popen([*BLACKBOX, "run", "-c", str(config)], stderr=log)
    try:
        deadline = time.monotonic() + 120
        while not sock.exists() or not buffer.exists():
            if time.monotonic() > deadline or agent.poll() is not None:
                raise RuntimeError(f"the agent did not start:\n{(workdir / 'agent.log').read_text()[-3000:]}")
            await asyncio.sleep(0.5)
        await asyncio.sleep(10)  # warm up: connected, polling
        t0 = time.time()
        await asyncio.sleep(seconds)
        t1 = time.time()
        quiet_gap, quiet_cycles = cycle_gap(buffer, int(t0 * 1e6), int(t1 * 1e6))
        over0 = await asyncio.to_thread(overruns, sock)
        answers: list[float] = []
        t2 = time.time()
        while time.time() - t2 < seconds:
            started = time.perf_counter()
            reply = await asyncio.to_thread(call, sock, "status", timeout=60)
            answers.append(time.perf_counter() - started)
        t3 = time.time()
        over1 = await asyncio.to_thread(overruns, sock)
        busy_gap, busy_cycles = cycle_gap(buffer, int(t2 * 1e6), int(t3 * 1e6))
        started = time.perf_counter()
        cli = subprocess.run([*BLACKBOX, "status", "--json", "-c", str(config)], capture_output=True, check=False)
        cli_s = time.perf_counter() - started
    finally:
        agent.terminate()
        agent.wait(60)
        for proc in serving:
            proc.terminate()
            proc.join(30)
    say(f"status with {tags:,} tags polled every {POLL} s ({len(reply['tags']):,} tags in the answer), "
        f"load average {os.getloadavg()[0]:.1f}")
    say(f"   status over the control socket: median {statistics.median(answers) * 1e3:.0f} ms, "
        f"max {max(answers) * 1e3:.0f} ms ({len(answers)} answers in {t3 - t2:.0f} s; target <= 100 ms)")
    say(f"   blackbox status --json (a new process): {cli_s:.2f} s, exit {cli.returncode}, "
        f"{len(cli.stdout):,} bytes")
    say(f"   largest gap between poll cycles: quiet {quiet_gap:.2f} s ({quiet_cycles} cycles in {t1 - t0:.0f} s), "
        f"while asking status {busy_gap:.2f} s ({busy_cycles} cycles in {t3 - t2:.0f} s); "
        f"overruns meanwhile {over1 - over0}")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--tags", type=int, default=20_000)
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    broker = EmbeddedBroker(prefer="mosquitto")
    await broker.start()
    try:
        with tempfile.TemporaryDirectory(prefix="bb-status-") as d:
            await run(Path(d), broker, args.tags, args.seconds)
    finally:
        await broker.stop()


if __name__ == "__main__":
    asyncio.run(main())
