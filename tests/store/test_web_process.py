"""``blackbox store web`` as a process: on PostgreSQL it starts worker processes for the integrity
checks of large reports (a forkserver, its workers and multiprocessing's resource tracker). However
the web process ends, SIGTERM or SIGKILL, none of them may outlive it: each holds about 60 MiB, and
a web server restarted now and then would leave a set behind every time."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from services import fresh_postgres_database
from waiting import wait_until

from blackbox.store.db import make_engine
from blackbox.store.migrate import upgrade_schema

STARTUP_S = 60.0
GONE_S = 15.0


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_postgres_database() as url:
        engine = make_engine(url)
        upgrade_schema(engine)
        engine.dispose()
        yield url


def descendants(pid: int) -> set[int]:
    """The processes below ``pid`` (children, theirs, ...), read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # ended meanwhile
            continue
        children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pids: set[int]) -> set[int]:
    """Those of ``pids`` that still run (a zombie has ended: it only waits to be reaped)."""
    running = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            running.add(pid)
    return running


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize(("stop", "exit_code"), [(signal.SIGTERM, 0), (signal.SIGKILL, -signal.SIGKILL)])
def test_no_worker_process_outlives_the_web_process(pg_url: str, tmp_path: Path, stop: signal.Signals,
                                                     exit_code: int) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    config = tmp_path / "store.yaml"
    config.write_text(f"store:\n  database_url: '{pg_url}'\n  web: {{host: 127.0.0.1, port: {port}}}\n")
    log = tmp_path / "web.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "blackbox", "store", "web", "-c", str(config)],
                                stdout=out, stderr=subprocess.STDOUT)
    workers: set[int] = set()
    try:
        wait_until(lambda: listening(port) or proc.poll() is not None, STARTUP_S, "store web to listen")
        assert proc.poll() is None, log.read_text()
        # the resource tracker, the forkserver and its two workers
        wait_until(lambda: len(descendants(proc.pid)) >= 4, STARTUP_S, "the integrity workers to start")
        workers = descendants(proc.pid)
        proc.send_signal(stop)
        assert proc.wait(30) == exit_code, log.read_text()
        wait_until(lambda: not alive(workers), GONE_S, f"the worker processes {sorted(workers)} to end")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for pid in alive(workers):  # left behind: the test failed, and nothing else would end them
            os.kill(pid, signal.SIGKILL)
