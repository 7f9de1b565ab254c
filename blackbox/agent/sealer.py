"""Seals buffered records into signed, hash-chained batches by count, size or age; rotates the key.

Sealing runs on the buffer's thread (``db``), so reading the records, signing and storing the
batch cannot interleave with anything else that touches the buffer. Records come out of the buffer
as runs of rows built from its blocks of columns, one block at a time, and are sealed without
building objects (:func:`blackbox.seal.seal_runs`), which keeps the agent's CPU per reading and its
memory low.

Key rotation (docs/batch-format.md): ``keys.rotate`` on the control socket writes the successor
key to ``<key_file>.next``, records a ``key.rotated`` event naming it, and waits until that event
has been sealed — as the last record of a batch signed by the old key. From the next batch on
the sealer signs with the new key, and ``<key_file>.next`` replaces ``<key_file>``. Which key
signs next is always derived from the chain itself (the last sealed batch), so a crash at any
step resumes correctly.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from blackbox.agent.clock import StepWatch, wall_minus_boot_us
from blackbox.agent.control import Caller, ControlError, Handler
from blackbox.aio import wait_and_clear
from blackbox.buffer import Buffer, Committed, DbCall
from blackbox.buffer.repository import SpanRun
from blackbox.config.seal import SealConfig
from blackbox.glibc_malloc import FreeMemoryRelease
from blackbox.model import Event, EventDraft, Sample
from blackbox.seal import (
    KEY_ROTATED,
    KeyFileExists,
    SealError,
    batch_rotation,
    decode_records,
    fingerprint,
    generate_key_file,
    key_id,
    load_private_key,
    next_key_path,
    open_batch,
    promote_next_key,
    public_key_pem,
    rotation_data,
    rotation_of,
    seal_runs,
    set_aside_next_key,
    successor,
)

log = logging.getLogger(__name__)

Record = Callable[[Sequence[Sample], Sequence[EventDraft]], Awaitable[Committed]]
RETRY_AFTER_ERROR_S = 5.0
LARGE_BATCH_RECORDS = 10_000
"""A batch of at least this many records (a records document of about a megabyte) is a large transient
of the heap: the sealer gives the heap's free pages back right after it (:class:`FreeMemoryRelease`)."""
CLOCK_STEP_US = 1_000_000
"""A change of the wall clock against the boot clock larger than this between two batches is a step."""


class ClockWatch:
    """The ``clock`` status written into each batch header.

    ``stepped``: the wall clock jumped (by more than a second, against the boot clock, which counts
    suspend too) since the previous batch was sealed, i.e. while this batch's records were being
    collected. ``unsynced``: the kernel says the clock is not synchronised (no NTP; ``adjtimex``
    returns ``TIME_ERROR``). Otherwise ``ok``.
    """

    def __init__(self, check_sync: bool, offset: Callable[[], int] | None = None) -> None:
        self._adjtimex = _adjtimex() if check_sync else None
        self._wall_minus_boot = offset or wall_minus_boot_us
        self._steps = StepWatch(CLOCK_STEP_US)
        self._steps.step_us(self._wall_minus_boot())

    def kernel_unsynced(self) -> bool:
        return self._adjtimex is not None and self._adjtimex(ctypes.create_string_buffer(512)) == _TIME_ERROR

    def status(self) -> str:
        if self._steps.step_us(self._wall_minus_boot()) is not None:
            return "stepped"
        return "unsynced" if self.kernel_unsynced() else "ok"


_TIME_ERROR = 5


def _adjtimex() -> Callable[[Any], int] | None:
    """libc's ``adjtimex`` (a read-only query with a zeroed ``struct timex``), where there is one."""
    try:
        fn: Callable[[Any], int] = ctypes.CDLL(None, use_errno=True).adjtimex
    except (OSError, AttributeError):
        log.info("cannot ask the kernel whether the clock is synchronised; clock status covers steps only")
        return None
    return fn


@dataclass
class _Made:
    batch_seq: int
    last_seq: int


@dataclass(frozen=True, slots=True)
class _Tip:
    """The newest sealed batch: a chain end (:class:`~blackbox.seal.links.End`) whose last record seq is
    always known, unlike a purged chain start's in the store."""

    batch_seq: int
    hash: str
    last_seq: int


class RecordsPerBatch:
    """How many records the sealer asks the buffer for: ``max_records``, or fewer while ``max_bytes``
    cuts its batches.

    A batch cut by ``max_bytes`` costs more than its size: the blocks beyond the cut were read back
    for nothing, and the block the cut falls in is encoded twice more to find the exact cut
    (:func:`blackbox.seal.seal_runs`). With ``max_records`` above what ``max_bytes`` holds (the
    defaults at about 110 bytes a reading), that was every batch of a busy line. So after a cut the
    sealer asks for what fitted, and for 2 % more after each batch that fitted, up to ``max_records``:
    a cut every few dozen batches, each batch as large as before to within a few percent.
    """

    GROWTH = 50
    """After a batch that fitted, ask for ``1 / GROWTH`` more records next time."""

    def __init__(self, max_records: int) -> None:
        self.most = max_records
        self.ask = max_records

    def sealed(self, offered: int, sealed: int) -> None:
        """``sealed`` of the ``offered`` records went into the batch (fewer: the byte cap cut it)."""
        if sealed < offered:
            self.ask = max(1, sealed)
        elif offered >= self.ask and self.ask < self.most:
            self.ask = min(self.most, self.ask + max(1, self.ask // self.GROWTH))


T = TypeVar("T")


def one_by_one(items: list[T]) -> Iterator[T]:
    """``items`` in order, each taken out of the list as it is yielded (the list ends empty).

    The sealer hands a batch's runs over so: each holds its stored block's text columns, and the
    document of a large batch is megabytes already, so a run is let go once it is in the document.
    """
    items.reverse()
    while items:
        yield items.pop()


class Sealer:
    def __init__(self, buffer: Buffer, db: DbCall, key: Ed25519PrivateKey, cfg: SealConfig, site: str,
                 gateway: str, config_hash: str, on_sealed: Callable[[int], None], key_file: Path | None = None,
                 ) -> None:
        self._buffer = buffer
        self._db = db
        self._cfg = cfg
        self._site = site
        self._gateway = gateway
        self._config_hash = config_hash
        self._on_sealed = on_sealed
        self._key_file = key_file
        self._file_key = key
        self._next_key: Ed25519PrivateKey | None = None
        self._key = key
        self._clock = ClockWatch(cfg.clock_sync_check)
        self._wake = asyncio.Event()
        self._rotating = False
        self._resolve_next_after: int | None = None
        self._sealed_through = 0
        """Last record seq in a sealed batch (kept here: the loop must not query the buffer to know it)."""
        self._pending_since: float | None = None
        self._tip: _Tip | None = None
        self.per_batch = RecordsPerBatch(cfg.max_records)
        self._release_memory = FreeMemoryRelease()
        """What sealing freed inside the heap would otherwise stay resident."""
        self.sealed = 0
        self.last_error: str | None = None

    @property
    def key_id(self) -> str:
        """Id of the key that signs the next batch."""
        return key_id(self._key)

    def notify(self) -> None:
        self._wake.set()

    def reconfigure(self, cfg: SealConfig, config_hash: str) -> None:
        """A reloaded configuration: batches sealed from now on carry its hash and follow its limits.

        The caller seals everything recorded under the old configuration first (``flush``).
        """
        if cfg.clock_sync_check != self._cfg.clock_sync_check:
            self._clock = ClockWatch(cfg.clock_sync_check)
        self._cfg = cfg
        self.per_batch = RecordsPerBatch(cfg.max_records)
        self._config_hash = config_hash
        self._wake.set()

    # -- the loop --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Pick the signing key the chain says is in force (finishing an interrupted rotation)."""
        await self._db(self._choose_key)
        tip = await self._db(self._last_sealed)
        self._sealed_through = tip.last_seq if tip is not None else 0
        self._pending_since = -1e9  # whatever was left unsealed by the last run is old: seal it now

    async def run(self) -> None:
        """Seal when a batch's records are waiting (``max_records``, fewer while ``max_bytes`` cuts the
        batches: :class:`RecordsPerBatch`) or the oldest waiting record is ``max_age`` old.

        What waits is known without a query: sequence numbers are contiguous, so it is the buffer's
        last seq minus the last one sealed; its age is counted from when the sealer first saw it
        (within milliseconds of the commit, and immune to steps of the wall clock).
        """
        while True:
            waiting = self._buffer.last_seq - self._sealed_through
            if waiting <= 0:
                self._pending_since = None
                await wait_and_clear(self._wake, self._cfg.max_age)
                continue
            if self._pending_since is None:
                self._pending_since = time.monotonic()
            age = time.monotonic() - self._pending_since
            if waiting < self.per_batch.ask and age < self._cfg.max_age:
                await wait_and_clear(self._wake, self._cfg.max_age - age)
                continue
            try:
                await self.seal_once()
            except (SealError, ValueError, OSError) as exc:
                # Nothing is lost (the records stay in the buffer); say so loudly and try again.
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.error("sealing failed, retrying in %.0f s: %s", RETRY_AFTER_ERROR_S, self.last_error)
                await asyncio.sleep(RETRY_AFTER_ERROR_S)

    async def flush(self) -> None:
        """Seal everything buffered so far (shutdown, tests)."""
        while await self.seal_once():
            pass

    async def seal_through(self, seq: int) -> int:
        """Seal until record ``seq`` is in a sealed batch; return that batch's sequence number."""
        while True:
            made = await self._db(self._seal_in_db_thread)
            if made is not None:
                self.sealed += 1
                self._on_sealed(made.batch_seq)
                if made.last_seq >= seq:
                    return made.batch_seq
            else:
                tip = await self._db(self._last_sealed)
                if tip is not None and tip.last_seq >= seq:
                    return tip.batch_seq
                raise RuntimeError(f"record {seq} is not in the buffer")

    async def seal_once(self) -> bool:
        made = await self._db(self._seal_in_db_thread)
        if made is not None:
            self.sealed += 1
            self.last_error = None
            self._on_sealed(made.batch_seq)
        return made is not None

    # -- buffer thread ---------------------------------------------------------------------------

    def _seal_in_db_thread(self) -> _Made | None:
        """Seal the next batch, if there is anything to seal."""
        nxt = successor(self._last_sealed())
        after, batch_seq, prev = nxt.after_seq, nxt.batch_seq, nxt.prev_hash
        started = time.perf_counter()
        found = self._buffer.unsealed(after, self.per_batch.ask)
        runs, events = found.runs, found.events
        del found
        if not runs and not events:
            # nothing above `after`: records counted as waiting were dropped by the buffer (quota)
            self._sealed_through = max(self._sealed_through, self._buffer.last_seq)
            self._resolve_stale_next(after)
            return None
        rotation_at = next((e[0] for e in events if e[1] == KEY_ROTATED), None)
        if rotation_at is not None:  # the rotation ends the batch signed by the old key (no run spans an event)
            runs = [r for r in runs if r.last_seq <= rotation_at]
            events = [e for e in events if e[0] <= rotation_at]
        offered = sum(r.last_seq - r.first_seq + 1 for r in runs) + len(events)
        handed: Iterator[SpanRun] = one_by_one(runs)
        batch = seal_runs(handed, events, site=self._site, gateway=self._gateway, key=self._key,
                          batch_seq=batch_seq, prev_hash=prev, config_hash=self._config_hash,
                          clock=self._clock.status(), compression=self._cfg.compression,
                          max_bytes=self._cfg.max_bytes)
        h = batch.header
        self.per_batch.sealed(offered, h.last_seq - h.first_seq + 1)
        self._buffer.add_sealed(batch_seq, h.first_seq, h.last_seq, batch.hash, batch.wire)
        self._tip = _Tip(batch_seq, batch.hash, h.last_seq)
        self._sealed_through = h.last_seq
        log.debug("sealed batch %d: %d records, %d bytes in %.1f ms", batch_seq, h.last_seq - h.first_seq + 1,
                  len(batch.wire), (time.perf_counter() - started) * 1000)
        if rotation_at is not None and h.last_seq == rotation_at:
            event = next(e for e in events if e[0] == rotation_at)
            self._switch_key(rotation_of(Event(*event)).new_key_id)
        del runs, batch
        self._release_memory(large=h.last_seq - h.first_seq + 1 >= LARGE_BATCH_RECORDS)
        return _Made(batch_seq, h.last_seq)

    def _last_sealed(self) -> _Tip | None:
        """The newest sealed batch: read once, then kept (only we seal)."""
        if self._tip is None:
            last = self._buffer.last_sealed()
            self._tip = _Tip(last.batch_seq, last.hash, last.last_seq) if last is not None else None
        return self._tip

    def _choose_key(self) -> None:
        """The key in force is the one the chain names: the last batch's signer, or its rotation target."""
        nxt = next_key_path(self._key_file) if self._key_file is not None else None
        if nxt is not None and nxt.exists():
            self._next_key = load_private_key(nxt)
        last = self._buffer.last_sealed()
        if last is None:
            in_force = key_id(self._file_key)
        else:
            opened = open_batch(last.wire)
            rotation = batch_rotation(opened, decode_records(opened)) if opened.header.n_events else None
            in_force = rotation.new_key_id if rotation is not None else opened.header.key_id
        if self._next_key is not None and key_id(self._next_key) == in_force:
            self._switch_key(in_force)  # the rotation was sealed, the key file not yet replaced
        elif key_id(self._file_key) != in_force:
            log.warning("the chain's last key is %s but the key file holds %s: signing with %s, which the store "
                        "accepts only if an operator enrolled it", in_force, key_id(self._file_key),
                        key_id(self._file_key))
        if self._next_key is not None and self._key is not self._next_key:
            # a successor exists but is not in force yet: either its key.rotated event still waits to be
            # sealed, or the rotation was never recorded (crash in between); decided once caught up
            self._resolve_next_after = self._buffer.last_seq
        log.info("signing with key %s", key_id(self._key))

    def _switch_key(self, new_kid: str) -> None:
        if self._next_key is None or key_id(self._next_key) != new_kid:
            log.error("the chain rotated to key %s, but %s does not hold it: the store will refuse further "
                      "batches signed with %s until an operator enrolls a new key", new_kid,
                      next_key_path(self._key_file) if self._key_file else "no key file", key_id(self._key))
            return
        self._key = self._file_key = self._next_key
        self._next_key = None
        self._resolve_next_after = None
        if self._key_file is not None:
            promote_next_key(self._key_file)
        log.warning("signing key rotated: now signing with key %s", new_kid)

    def _resolve_stale_next(self, sealed_through: int) -> None:
        """Once everything recorded before a restart is sealed, a successor never named in the chain is unused."""
        if self._resolve_next_after is None or self._rotating or sealed_through < self._resolve_next_after:
            return
        self._resolve_next_after = None
        if self._next_key is not None and self._key_file is not None:
            aside = set_aside_next_key(self._key_file)
            log.warning("a successor key was never recorded in the chain (interrupted rotation); moved it to %s",
                        aside)
            self._next_key = None

    def _create_next(self) -> Ed25519PrivateKey:
        if self._key_file is None:
            raise ControlError("this agent has no key file to rotate")
        try:
            self._next_key = generate_key_file(next_key_path(self._key_file))
        except KeyFileExists:
            raise ControlError("a key rotation is already in progress (the successor key file exists)") from None
        return self._next_key

    # -- control ---------------------------------------------------------------------------------

    def control_handlers(self, record: Record) -> dict[str, Handler]:
        """``keys.rotate``: rotate the signing key as an event in the chain (see the module docstring)."""

        async def rotate(_args: dict[str, Any], caller: Caller) -> dict[str, Any]:
            if self._rotating or self._next_key is not None:
                raise ControlError("a key rotation is already in progress")
            self._rotating = True
            try:
                old = self._key
                new = await self._db(self._create_next)
                committed = await record([], [EventDraft(KEY_ROTATED, key_id(new),
                                                         rotation_data(old, new, caller.name))])
                seq = committed.events[0].seq
                batch_seq = await self.seal_through(seq)
            finally:
                self._rotating = False
            log.warning("key rotation recorded at seq %d in batch %d by %s", seq, batch_seq, caller.name)
            return {"old_key_id": key_id(old), "new_key_id": key_id(new), "fingerprint": fingerprint(new),
                    "public_key_pem": public_key_pem(new), "seq": seq, "batch_seq": batch_seq,
                    "in_force": self.key_id}

        return {"keys.rotate": rotate}
