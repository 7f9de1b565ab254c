"""``blackbox status`` against a running agent with many tags, and whether polling stalls meanwhile.

A real ``blackbox run`` polls simulated Modbus TCP devices of 1,000 float32 tags each, ``--tags``
(20,000) in all, every 0.1 s (``uplink.ModbusLine``; no store: the batches wait in the buffer). After a warm-up:

1. a quiet window of ``--seconds``: the largest poll delay, i.e. the longest gap between two
   consecutive cycles of one source minus its poll interval, read from the buffer (each cycle is
   one ``reading_blocks`` row, its source known by its first tag);
2. a window of the same length in which ``status`` is asked back to back over the control
   socket: the agent's time per answer (median, max; target <= 100 ms), the largest poll delay
   meanwhile, and the pollers' overrun counter before and after;
3. ``blackbox status``, ``blackbox status --json`` and ``blackbox tail --count 1`` as a user runs
   them, wall time end to end (a new Python process: start-up, finding the control socket, the
   answer, printing it), median of ``--runs``; ``tail`` includes waiting for the next commit of
   the tag (up to one poll interval);
4. the command's start-up alone (``blackbox status --help``), for comparison.

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


def poll_delay(buffer: Path, since_us: int, until_us: int) -> tuple[float, int]:
    """The largest poll delay in seconds in the window (the longest gap between consecutive cycles
    of one source, minus the poll interval), and the cycles seen."""
    with contextlib.closing(sqlite3.connect(f"file:{buffer}?mode=ro", uri=True, timeout=10)) as db:
        rows = db.execute("SELECT substr(t, 1, instr(t, '-') - 1), ts_us FROM (SELECT json_extract(tags, '$[0]') "
                          "AS t, ts_us FROM reading_blocks WHERE ts_us BETWEEN ? AND ?) ORDER BY ts_us",
                          (since_us, until_us)).fetchall()
    by_source: dict[str, list[int]] = {}
    for source, ts in rows:
        by_source.setdefault(source, []).append(ts)
    gaps = [(b - a) / 1e6 for times in by_source.values() for a, b in itertools.pairwise(times)]
    return (max(gaps) - POLL if gaps else float("nan")), len(rows)


def cli_seconds(args: list[str], runs: int) -> tuple[float, subprocess.CompletedProcess[bytes]]:
    """Median wall time of a ``blackbox`` command run as a new process, and its last run."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run([*BLACKBOX, *args], capture_output=True, check=False, timeout=120)
        times.append(time.perf_counter() - started)
    return statistics.median(times), done


def overruns(sock: Path) -> int:
    return sum(int(s.get("overruns") or 0) for s in call(sock, "status", timeout=60)["sources"])


async def run(workdir: Path, broker: EmbeddedBroker, tags: int, seconds: float, runs: int) -> None:
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
        quiet_gap, quiet_cycles = poll_delay(buffer, int(t0 * 1e6), int(t1 * 1e6))
        over0 = await asyncio.to_thread(overruns, sock)
        answers: list[float] = []
        t2 = time.time()
        while time.time() - t2 < seconds:
            started = time.perf_counter()
            reply = await asyncio.to_thread(call, sock, "status", timeout=60)
            answers.append(time.perf_counter() - started)
        t3 = time.time()
        over1 = await asyncio.to_thread(overruns, sock)
        busy_gap, busy_cycles = poll_delay(buffer, int(t2 * 1e6), int(t3 * 1e6))
        c = str(config)
        cli_text_s, text = await asyncio.to_thread(cli_seconds, ["status", "-c", c], runs)
        cli_s, cli = await asyncio.to_thread(cli_seconds, ["status", "--json", "-c", c], runs)
        tail_s, tail = await asyncio.to_thread(cli_seconds, ["tail", "-c", c, "--count", "1", "--tag",
                                                             "PLC00-0000.value"], runs)
        help_s, _ = await asyncio.to_thread(cli_seconds, ["status", "--help"], runs)
    finally:
        agent.terminate()
        agent.wait(60)
        for proc in serving:
            proc.terminate()
            proc.join(30)
    say(f"status with {tags:,} tags polled every {POLL} s ({len(reply['tags']):,} tags in the answer), "
        f"load average {os.getloadavg()[0]:.1f}")
    say(f"   status over the control socket (agent side): median {statistics.median(answers) * 1e3:.0f} ms, "
        f"max {max(answers) * 1e3:.0f} ms ({len(answers)} answers in {t3 - t2:.0f} s; target <= 100 ms)")
    say(f"   CLI end to end, median of {runs} (target <= 100 ms): blackbox status {cli_text_s * 1e3:.0f} ms "
        f"(exit {text.returncode}), status --json {cli_s * 1e3:.0f} ms (exit {cli.returncode}, "
        f"{len(cli.stdout):,} bytes), tail --count 1 {tail_s * 1e3:.0f} ms (exit {tail.returncode}; "
        f"includes waiting up to {POLL} s for the next cycle); start-up alone (status --help) {help_s * 1e3:.0f} ms")
    say(f"   largest poll delay: quiet {quiet_gap * 1e3:.0f} ms ({quiet_cycles} cycles in {t1 - t0:.0f} s), "
        f"while asking status back to back {busy_gap * 1e3:.0f} ms ({busy_cycles} cycles in {t3 - t2:.0f} s); "
        f"overruns meanwhile {over1 - over0}")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--tags", type=int, default=20_000)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--runs", type=int, default=5, help="Runs of each CLI command (the median is shown).")
    args = ap.parse_args()
    broker = EmbeddedBroker(prefer="mosquitto")
    await broker.start()
    try:
        with tempfile.TemporaryDirectory(prefix="bb-status-") as d:
            await run(Path(d), broker, args.tags, args.seconds, args.runs)
    finally:
        await broker.stop()


if __name__ == "__main__":
    asyncio.run(main())
