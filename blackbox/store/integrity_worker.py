"""A large trace report's integrity check in a second process, on the report's own database snapshot.

The trace report of a production batch does two independent things: it re-verifies every sealed
batch the production batch spans (:func:`blackbox.store.integrity.check_integrity`, every signature,
chain link and stored row proven against the signed records) and it computes the statistics and
excursions of every tag. For a batch of a million readings the first is about 0.8 s of CPU, the
second about 0.35 s. The integrity check is cut into :data:`PARTS` slices of each gateway's range
of sealed batches (:class:`blackbox.store.verify.Part`), each checked by a worker process while the
report's own process computes the rest; the operating system shares the cores among the three, so
the report takes about the CPU of the whole divided by the cores, whichever part is the larger.

Nothing of the check is left out or remembered between reports: the workers run the same function
on every sealed batch, each time, and the slices' findings merged are those of one walk
(:func:`blackbox.store.integrity.merge_shares`; a test holds every tamper's verdict to the one of a
single process). Each reads exactly what the report reads: the report's transaction exports its
PostgreSQL snapshot (``pg_export_snapshot``) and each worker's transaction imports it (``SET
TRANSACTION SNAPSHOT``) before its first query, so a row changed meanwhile is seen by none or by
all. The workers belong to the reporting process, started by a clean ``forkserver`` (never a fork of
a threaded web process), and kept for the next report; any error in one is raised in the report.
Each worker ends when its reporting process does, however that ends (a SIGKILL too): a worker
holds the write ends of its own queue and of the forkserver's liveness pipe, so nothing else would
ever tell it or the forkserver that their owner is gone.

Only PostgreSQL (SQLite cannot share a snapshot between connections) and only for batches spanning
at least :data:`PARALLEL_MIN_BATCHES` sealed batches, below which starting the work elsewhere costs
more than it saves.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import select
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor

from sqlalchemy import Connection, Engine, text

from blackbox.store.db import readonly_engine
from blackbox.store.gc_pause import gc_paused
from blackbox.store.integrity import GatewayShare, check_integrity, merge_shares
from blackbox.store.report import Integrity
from blackbox.store.verify import Part

PARALLEL_MIN_BATCHES = 40
"""Sealed batches (of 5,000 readings, the sealer's usual size: 200,000 readings) from which a report's
integrity check runs in the worker processes."""

PARTS = 2
"""Slices of the integrity check, one per worker process: with the report's own process, one more
process than a two-core machine has cores, so that none waits for another to finish its share."""

SeqRanges = dict[int, tuple[int, int | None]]

_SNAPSHOT_ID = re.compile(r"[0-9A-F]+-[0-9A-F]+(-[0-9]+)?")


class _Pool:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.executor: ProcessPoolExecutor | None = None

    def get(self) -> ProcessPoolExecutor:
        with self.lock:
            if self.executor is None:
                context = multiprocessing.get_context("forkserver")
                context.set_forkserver_preload(["blackbox.store.trace"])  # imports this module
                self.executor = ProcessPoolExecutor(max_workers=PARTS, mp_context=context,
                                                    initializer=_end_with_owner, initargs=(os.getpid(),))
            return self.executor

    def shutdown(self) -> None:
        """Stop the worker processes (started again by the next report)."""
        with self.lock:
            executor, self.executor = self.executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)


_POOL = _Pool()
OWNER_POLL_S = 1.0
"""How often a worker looks for its owner where the system cannot tell it (no ``pidfd_open``)."""


def _end_with_owner(owner: int) -> None:
    """In a worker, at its start: end the worker as soon as process ``owner`` has ended."""
    threading.Thread(target=_wait_for_end, args=(owner,), name="owner-watch", daemon=True).start()


def _wait_for_end(owner: int) -> None:
    try:
        fd = os.pidfd_open(owner)
    except (AttributeError, OSError):  # not Linux 5.3+: ask every second (a pid is not reused that soon)
        while _alive(owner):
            time.sleep(OWNER_POLL_S)
    else:
        select.select([fd], [], [])  # readable once the process has ended
    os._exit(0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's (the pid was reused)
        return True
    return True


def shutdown() -> None:
    """Stop this process's integrity workers, if started (the web server, before it exits)."""
    _POOL.shutdown()


def prestart() -> None:
    """Start the worker processes now rather than at the first large report (``blackbox store web``: the
    first batch page after a restart would otherwise wait about a second for them). Returns at once."""
    pool = _POOL.get()
    for _ in range(PARTS):
        pool.submit(int)  # a task each makes the pool start its processes


def worker_pids() -> list[int]:
    """Process ids of this process's integrity workers, if started (for benchmarks, which count their CPU)."""
    with _POOL.lock:
        executor = _POOL.executor
        return [] if executor is None else [p.pid for p in (executor._processes or {}).values() if p.pid is not None]
_ENGINES: dict[str, Engine] = {}
"""The worker process's read-only engine for each store URL it was given."""


def start_integrity(conn: Connection, batch_no: str, labels: dict[int, str],
                    boundaries: dict[int, tuple[int | None, int | None]], *, deep: bool,
                    lost: dict[int, list[int]], ranges: SeqRanges | None) -> PendingIntegrity:
    """Start :func:`blackbox.store.integrity.check_integrity` of the report in the worker processes, on
    ``conn``'s snapshot.

    ``conn`` must be in its REPEATABLE READ transaction on PostgreSQL, and stay in it until the
    verdict is in (the exported snapshot lives as long as the transaction that exported it).
    """
    snapshot, search_path = conn.execute(text("SELECT pg_export_snapshot(), current_setting('search_path')")).one()
    url = conn.engine.url.render_as_string(hide_password=False)
    pool = _POOL.get()
    return PendingIntegrity([
        pool.submit(_check_in_snapshot, url, str(snapshot), str(search_path), batch_no, labels, boundaries, deep,
                    lost, ranges, Part(i, PARTS)) for i in range(PARTS)])


class PendingIntegrity:
    """The parts of an integrity check under way in the worker processes."""

    def __init__(self, parts: list[Future[list[GatewayShare]]]) -> None:
        self._parts = parts

    def result(self, timeout: float | None = None) -> Integrity:
        """The verdict, once every part is in (``timeout`` seconds for each at most)."""
        return merge_shares([part.result(timeout) for part in self._parts])


def _check_in_snapshot(url: str, snapshot: str, search_path: str, batch_no: str, labels: dict[int, str],
                       boundaries: dict[int, tuple[int | None, int | None]], deep: bool,
                       lost: dict[int, list[int]], ranges: SeqRanges | None, part: Part) -> list[GatewayShare]:
    """In a worker: ``part`` of the integrity check in a transaction on the exported ``snapshot``, with the
    report's ``search_path`` (the schema its connection reads, whatever set it)."""
    from blackbox.store.trace import in_ranges  # the report's module imports this one

    if not _SNAPSHOT_ID.fullmatch(snapshot):
        raise ValueError(f"not a PostgreSQL snapshot id: {snapshot!r}")
    engine = _ENGINES.get(url)
    if engine is None:
        engine = _ENGINES[url] = readonly_engine(url)
    with gc_paused(), engine.connect() as conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            conn.exec_driver_sql(f"SET TRANSACTION SNAPSHOT '{snapshot}'")  # the id checked above
            conn.execute(text("SELECT set_config('search_path', :path, true)"), {"path": search_path})
            return check_integrity(conn, batch_no, labels, boundaries, deep=deep, lost=lost,
                                   scope=lambda t: in_ranges(t, ranges), part=part)
