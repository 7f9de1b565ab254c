"""Shared pieces for the agent tests: a recorder on a real buffer, a small real filesystem, waiting."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, TypeVarTuple

import orjson
import yaml
from services import unavailable

from blackbox.agent.clock import GatewayClock
from blackbox.agent.context import ContextTracker
from blackbox.agent.control import Caller, Handler
from blackbox.agent.recorder import Recorder
from blackbox.agent.system_alarms import SystemAlarms
from blackbox.buffer import Buffer
from blackbox.config import ContextConfig
from blackbox.control_client import AgentUnreachable, call
from blackbox.rules import RuleEngine

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class BufferThread:
    """The agent's arrangement: every buffer call on one dedicated thread."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1)

    async def __call__(self, fn: Callable[[*Ts], T], *args: *Ts) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def close(self) -> None:
        self._executor.shutdown(wait=True)


class FakeClock:
    """Wall and boot clocks a test moves by hand; a real clock cannot be stepped on a test machine."""

    def __init__(self) -> None:
        self.wall_ns = 1_800_000_000_000_000_000
        self.steady_ns = 5_000_000_000

    def advance(self, seconds: float, jump: float = 0.0) -> None:
        """Let ``seconds`` pass; the wall clock also steps by ``jump`` seconds."""
        self.wall_ns += int((seconds + jump) * 1e9)
        self.steady_ns += int(seconds * 1e9)

    def gateway_clock(self, threshold_s: float = 1.0, floor_us: int = 0) -> GatewayClock:
        return GatewayClock(threshold_s, floor_us, wall_ns=lambda: self.wall_ns, steady_ns=lambda: self.steady_ns)


def make_recorder(buffer: Buffer, db: BufferThread, context: ContextConfig | None = None,
                  clock: GatewayClock | None = None) -> Recorder:
    return Recorder(buffer, db, ContextTracker(context or ContextConfig(), {}), RuleEngine([], {}),
                    clock or GatewayClock(), SystemAlarms())


async def reply(handler: Handler, args: dict[str, Any], caller: Caller) -> Any:
    """What a control command answers (one answer: ``tail`` alone streams)."""
    outcome = handler(args, caller)
    assert inspect.isawaitable(outcome), "the command streams"
    return await outcome


def events_of(path: Path, kind: str | None = None) -> list[dict[str, Any]]:
    """Events in a buffer file, oldest first, with their data decoded."""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT seq, ts_us, type, subject, data, batch, phase FROM events ORDER BY seq").fetchall()
    out = [{"seq": s, "ts_us": ts, "type": t, "subject": sub, "data": orjson.loads(d), "batch": b, "phase": p}
           for s, ts, t, sub, d, b, p in rows]
    return [e for e in out if kind is None or e["type"] == kind]


@contextmanager
def small_disk(where: Path, megabytes: int) -> Iterator[Path]:
    """A real filesystem of ``megabytes`` (tmpfs) to fill up: ENOSPC is then the kernel's own."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        unavailable("a small tmpfs to fill (mounting needs root)")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(where)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        unavailable(f"a small tmpfs to fill ({proc.stderr.strip()})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def fill_disk(path: Path) -> None:
    """Write ``path`` until the filesystem has no space left."""
    with open(path, "ab") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as exc:
            assert exc.errno == 28, exc  # ENOSPC




BLACKBOX = [sys.executable, "-m", "blackbox", "--log-level", "INFO"]
DIAGNOSABLE = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"}
"""An environment for a blackbox process a test starts: its log unbuffered, and SIGABRT dumps every
thread's stack into it (see :func:`stop_process`)."""


def stop_process(proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> int:
    """SIGTERM ``proc`` and wait up to ``timeout`` s for it to exit; return its exit code.

    A process that does not stop in time is aborted with SIGABRT: started with :data:`DIAGNOSABLE`,
    it first writes every thread's stack to ``log``, and the test fails with that log, which shows
    where it hung.
    """
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        proc.wait(timeout=30)
        raise AssertionError(f"{proc.args!r} did not stop within {timeout} s of SIGTERM; its log, with every "
                             f"thread's stack at the end:\n{log.read_text()[-20000:]}") from None


def cli(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the ``blackbox`` command; with ``check``, fail with its error output unless it exits 0."""
    proc = subprocess.run([*BLACKBOX, *args], capture_output=True, text=True, check=False, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"blackbox {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}"
    return proc


def agent_status(sock: Path) -> dict[str, Any] | None:
    """The running agent's status, or ``None`` if no agent answers (yet)."""
    try:
        status: dict[str, Any] = call(sock, "status", timeout=5)
        return status
    except AgentUnreachable:
        return None


def mqtt_settings(host: str, port: int) -> dict[str, Any]:
    """Uplink settings of one test run: its own topic root and client ids on the shared broker."""
    run_id = uuid.uuid4().hex[:8]
    return {"host": host, "port": port, "protocol": "5", "topic_root": f"bbtest-{run_id}",
            "client_id": f"agent-{run_id}"}


def edit_config(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")


class NotifySocket:
    """A real ``NOTIFY_SOCKET``: collects what the agent tells systemd."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[str] = []
        self._task = asyncio.get_running_loop().create_task(self._collect())

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self.messages.append((await loop.sock_recv(self.sock, 4096)).decode())

    def count(self, line: str) -> int:
        return sum(line in m.split("\n") for m in self.messages)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.sock.close()
