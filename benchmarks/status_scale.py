"""``blackbox status`` against a running agent with many tags, and whether polling stalls meanwhile.

A real ``blackbox run`` polls simulated Modbus TCP devices of 1,000 float32 tags each, ``--tags``
(20,000) in all, every 0.1 s (``uplink.ModbusLine``; no store: the batches wait in the buffer). After a warm-up:

1. a quiet window of ``--seconds``: the largest poll delay, i.e. the longest gap between two
   consecutive cycles of one source minus its poll interval, read from the buffer (each cycle is
   one ``reading_blocks`` row, its source known by its first tag), and the agent's CPU per second;
2. for each request the command makes — plain ``status`` (counts and the first tags needing
   attention) and ``status --json`` (every tag) — a window of the same length in which it is
   asked back to back over the control socket: the time per answer as the asking client sees it
   (median, max; target <= 100 ms), the agent's CPU per answer (its CPU in the window minus the
   quiet window's rate, per answer), the answer's size, the largest poll delay meanwhile, and the
   pollers' overrun counter before and after;
3. ``blackbox status``, ``blackbox status --json``, ``blackbox status --unit PLC00`` and
   ``blackbox tail --count 1`` as a user runs them (a new Python process: start-up, finding the
   control socket, the answer, printing it): median wall time and median CPU time of the
   command's process (user + system) of ``--runs``; ``tail`` includes waiting for the next commit
   of the tag (up to one poll interval);
4. for comparison: ``blackbox status --help`` (through typer, as every other command), and the
   Python interpreter starting and doing nothing;
5. the agent's CPU to build each answer's list of tags and encode the answer, measured in this
   process on a live view of the same shape (``--tags`` tags, 1,000 per commit), median of 50:
   on a loaded machine the agent's own CPU per answer cannot be told apart from its polling's.

The load average is printed at the start and the end: on a shared machine, wall times follow the
load, CPU times much less.

The commands of 3 and 4 run as ``python -m blackbox`` of this interpreter unless ``--installed VENV``
names a virtual environment where blackbox was installed as the install guides say (``pip install
.``): a development checkout's editable install adds a module finder to every start (about 10 ms of
CPU) that an installed gateway does not have.

Usage: python benchmarks/status_scale.py [--tags 20000] [--seconds 20] [--runs 9] [--installed VENV]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from uplink import BLACKBOX, ModbusLine, say, write_config

from blackbox.agent.live import LiveView, tag_report
from blackbox.broker import EmbeddedBroker
from blackbox.buffer import Committed
from blackbox.cli.agent_view import status_args
from blackbox.columns import ReadingBlock, SampleColumns
from blackbox.config.sources import TagConfig
from blackbox.control_client import call, call_text
from blackbox.model import now_us
from blackbox.seal import generate_key_file

POLL = 0.1
TICKS = os.sysconf("SC_CLK_TCK")


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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def run_timed(args: list[str], runs: int) -> tuple[float, float, subprocess.CompletedProcess[bytes]]:
    """Median wall and CPU time (user + system) of a command run as a new process, and its last run."""
    walls, cpus = [], []
    done: subprocess.CompletedProcess[bytes] | None = None
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)  # no other child of ours ends meanwhile
        started = time.perf_counter()
        done = subprocess.run(args, capture_output=True, timeout=120, check=False)  # output read as it comes
        walls.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    if done is None:
        raise ValueError("runs must be 1 or more")
    return statistics.median(walls), statistics.median(cpus), done


def answer_cpu(tags: int) -> dict[str, tuple[float, int]]:
    """The agent's CPU (median of 50) to build the tags of a plain and of a full status answer and
    encode it, and the encoded size, on a live view of ``tags`` tags fed as the agent feeds it."""
    names = [f"PLC{i // 1000:02d}-{i % 1000:04d}.value" for i in range(tags)]
    configs = {n: TagConfig.model_construct(name=n, unit="BM", eng_unit=None) for n in names}
    live = LiveView(configs, poll_s=dict.fromkeys(names, POLL))
    ts = now_us()
    for first in range(0, tags, 1000):
        chunk = tuple(names[first:first + 1000])
        live.on_commit(Committed(ReadingBlock(1 + first, ts, None, None,
                                              SampleColumns.good(chunk, [20.0 + i * 0.01 for i in range(len(chunk))])),
                                 []))
    out = {}
    for name, attention, limit, indented in (("plain status", True, 50, False), ("status --json", False, None, True)):
        cpus, size = [], 0
        for _ in range(50):
            started = time.process_time()
            rows, last = live.snapshot()
            report = tag_report(rows, last, ts + 50_000, None, attention, limit, indented)
            doc = {"tags": orjson.Fragment(report.json), "tag_counts": report.counts}
            size = len(orjson.dumps(doc, option=orjson.OPT_INDENT_2) if indented
                       else orjson.dumps({"ok": True, "result": doc}))
            cpus.append(time.process_time() - started)
        out[name] = (statistics.median(cpus), size)
    return out


def overruns(sock: Path) -> int:
    return sum(int(s.get("overruns") or 0) for s in call(sock, "status", {"limit": 0}, timeout=60)["sources"])


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def answer(sock: Path, args: dict[str, Any]) -> bytes:
    """``status`` with ``args`` as the command asks it: ``--json`` as the text it prints, else decoded."""
    if args.get("as_text"):
        return call_text(sock, "status", args, timeout=60)
    return orjson.dumps(call(sock, "status", args, timeout=60))


async def hammer(sock: Path, args: dict[str, Any], agent_pid: int, seconds: float) -> dict[str, Any]:
    """Ask ``status`` with ``args`` back to back for ``seconds``; the answer times, CPU and window."""
    answers: list[float] = []
    size = 0
    cpu0, t0 = cpu_seconds(agent_pid), time.time()
    while time.time() - t0 < seconds:
        started = time.perf_counter()
        size = len(await asyncio.to_thread(answer, sock, args))
        answers.append(time.perf_counter() - started)
    t1 = time.time()
    return {"answers": answers, "cpu": cpu_seconds(agent_pid) - cpu0, "t0": t0, "t1": t1, "bytes": size}


async def run(workdir: Path, broker: EmbeddedBroker, tags: int, seconds: float, runs: int,
              installed: Path | None) -> None:
    lines = [ModbusLine(min(1000, tags - first), f"PLC{k:02d}") for k, first in enumerate(range(0, tags, 1000))]
    serving = [line.start_process() for line in lines]
    config = write_config(workdir, broker, f"sqlite:///{workdir / 'unused.sqlite'}",
                          sources=[line.source(POLL) for line in lines])
    generate_key_file(workdir / "gateway.key")
    sock, buffer = workdir / "agent.sock", workdir / "buffer.sqlite"
    say(f"status with {tags:,} tags polled every {POLL} s; load average at the start {load()}")
    with open(workdir / "agent.log", "wb") as log:
        agent = subprocess.Popen([*BLACKBOX, "run", "-c", str(config)], stderr=log)
    c = str(config)
    commands = {"blackbox status": ["status", "-c", c], "blackbox status --json": ["status", "--json", "-c", c],
                "blackbox status --tag 'PLC00-*' (1,000 tags)": ["status", "--tag", "PLC00-*", "-c", c],
                f"blackbox tail --count 1 (waits up to {POLL} s for the next cycle)":
                    ["tail", "-c", c, "--count", "1", "--tag", "PLC00-0000.value"],
                "blackbox status --help (through typer, as every other command)": ["status", "--help"]}
    try:
        deadline = time.monotonic() + 120
        while not sock.exists() or not buffer.exists():
            if time.monotonic() > deadline or agent.poll() is not None:
                raise RuntimeError(f"the agent did not start:\n{(workdir / 'agent.log').read_text()[-3000:]}")
            await asyncio.sleep(0.5)
        await asyncio.sleep(10)  # warm up: connected, polling
        cpu0, t0 = cpu_seconds(agent.pid), time.time()
        await asyncio.sleep(seconds)
        t1, quiet_cpu_rate = time.time(), (cpu_seconds(agent.pid) - cpu0) / seconds
        quiet_gap, quiet_cycles = poll_delay(buffer, int(t0 * 1e6), int(t1 * 1e6))
        windows = {}
        for name, args in (("plain status", status_args(False, False, [], [])),
                           ("status --json", status_args(False, True, [], []) | {"as_text": True})):
            over0 = await asyncio.to_thread(overruns, sock)
            w = await hammer(sock, args, agent.pid, seconds)
            w["overruns"] = await asyncio.to_thread(overruns, sock) - over0
            w["gap"], w["cycles"] = poll_delay(buffer, int(w["t0"] * 1e6), int(w["t1"] * 1e6))
            windows[name] = w
        python = sys.executable if installed is None else str(installed / "bin" / "python")
        command = [python, *BLACKBOX[1:]]
        clis = {name: await asyncio.to_thread(run_timed, [*command, *args], runs) for name, args in commands.items()}
        bare = await asyncio.to_thread(run_timed, [python, "-c", "pass"], runs)
    finally:
        agent.terminate()
        agent.wait(60)
        for proc in serving:
            proc.terminate()
            proc.join(30)
    say(f"   quiet window: agent CPU {quiet_cpu_rate:.2f} s/s; largest poll delay {quiet_gap * 1e3:.0f} ms "
        f"({quiet_cycles} cycles in {t1 - t0:.0f} s)")
    for name, w in windows.items():
        n = len(w["answers"])
        per_answer = (w["cpu"] - quiet_cpu_rate * (w["t1"] - w["t0"])) / n
        say(f"   {name} over the control socket, back to back ({n} answers of {w['bytes']:,} bytes in "
            f"{w['t1'] - w['t0']:.0f} s): median {statistics.median(w['answers']) * 1e3:.0f} ms, max "
            f"{max(w['answers']) * 1e3:.0f} ms (target <= 100 ms); agent CPU about {per_answer * 1e3:.0f} ms per "
            f"answer; largest poll delay {w['gap'] * 1e3:.0f} ms ({w['cycles']} cycles), overruns {w['overruns']}")
    say(f"   as a user runs them ({python} -m blackbox), median of {runs} (target <= 100 ms):")
    for name, (wall, cpu, done) in clis.items():
        say(f"      {name}: {wall * 1e3:.0f} ms wall, {cpu * 1e3:.0f} ms CPU (exit {done.returncode}, "
            f"{len(done.stdout):,} bytes)")
    say(f"      python -c pass (the interpreter alone): {bare[0] * 1e3:.0f} ms wall, {bare[1] * 1e3:.0f} ms CPU")
    for name, (cpu, size) in answer_cpu(tags).items():
        say(f"   the agent's CPU to build and encode the tags of {name} ({size:,} bytes): {cpu * 1e3:.1f} ms")
    say(f"   load average at the end {load()}")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--tags", type=int, default=20_000)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--runs", type=int, default=9, help="Runs of each CLI command (the median is shown).")
    ap.add_argument("--installed", type=Path, metavar="VENV",
                    help="Run the commands with the blackbox installed in this virtual environment.")
    args = ap.parse_args()
    broker = EmbeddedBroker(prefer="mosquitto")
    await broker.start()
    try:
        with tempfile.TemporaryDirectory(prefix="bb-status-") as d:
            await run(Path(d), broker, args.tags, args.seconds, args.runs, args.installed)
    finally:
        await broker.stop()


if __name__ == "__main__":
    asyncio.run(main())
