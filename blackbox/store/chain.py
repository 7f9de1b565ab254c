"""Where a verified batch fits in its gateway's stored chain: duplicate, conflict, or stored.

A gateway's chain is one line of batches: batch ``n`` names batch ``n - 1`` by hash
(``prev_hash``), batch 1 names genesis. Batches may arrive out of order and some may never arrive
(the gateway's disk quota can drop sealed batches), so the store keeps batches whose predecessor
it has not seen yet. Two batches that cannot both belong to one line **conflict**:

* the same ``batch_seq`` with different hashes, or two batches naming the same predecessor — a
  **fork**, wherever the second one sits (batch 6 naming batch 2 while batch 3 also names it);
* a batch naming a stored batch that is not numbered ``batch_seq - 1``, or a stored neighbour that
  does not link — a **broken chain**;
* two batches holding the same record seq — a **replay**.

Which one stays (:func:`place`):

1. A batch that contradicts a stored batch's own content is never right: one that names a stored
   batch at the wrong distance is refused; a stored one that names the newcomer at the wrong
   distance is moved aside.
2. A batch that **links**, i.e. whose predecessor is stored and matches (or batch 1 at genesis),
   wins over a stored batch that does not link: the stored one is moved aside, so a batch stored
   ahead of the chain can never lock the genuine chain out.
3. Otherwise the stored batch stays and the newcomer is refused (the gateway re-sends refused
   batches, so a genuine one comes back once the chain below it is stored).

A stored batch that carried a key rotation is never moved aside (its rotation may have been used).
Every conflict is recorded naming both batches (``rejections.conflict_batch_seq/conflict_hash``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, Connection, func, select

from blackbox.seal import GENESIS_HASH, ChainEnd, OpenedBatch, breaks, genesis_problem
from blackbox.store.chunks import ChunkError, unpack_seqs
from blackbox.store.schema import events, gateway_keys, reading_chunks, sealed_batches


@dataclass(frozen=True, slots=True)
class StoredBatch:
    """The chain fields of a stored batch."""

    batch_seq: int
    hash: str
    prev_hash: str
    first_seq: int
    last_seq: int

    def name(self) -> str:
        return f"batch {self.batch_seq} ({self.hash})"


class Conflict(Exception):
    """The batch cannot be stored: ``reason`` (a rejection code), ``detail``, and the stored batch it
    conflicts with (``None`` when it breaks a rule on its own)."""

    def __init__(self, reason: str, detail: str, other: StoredBatch | None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.other = other


_SB = sealed_batches.c
_COLUMNS = (_SB.batch_seq, _SB.hash, _SB.prev_hash, _SB.first_seq, _SB.last_seq)


def _fetch(conn: Connection, gid: int, *where: ColumnElement[bool]) -> list[StoredBatch]:
    rows = conn.execute(select(*_COLUMNS).where(_SB.gateway_id == gid, *where).order_by(_SB.batch_seq))
    return [StoredBatch(*row) for row in rows]


def place(conn: Connection, gid: int, opened: OpenedBatch) -> list[StoredBatch] | None:
    """``None`` if this exact batch is stored already, else the stored batches to move aside first.

    Raises :class:`Conflict` if the batch must be refused. Call inside the transaction that
    stores the batch, with the gateway's chain locked.
    """
    h, me = opened.header, opened.hash
    mine = ChainEnd.of(opened)
    s, p = h.batch_seq, h.prev_hash
    near = {b.batch_seq: b for b in _fetch(conn, gid, _SB.batch_seq.in_([s - 1, s, s + 1]))}
    same = near.get(s)
    if same is not None and same.hash == me:
        return None
    genesis = genesis_problem(h)
    if genesis is not None:
        raise Conflict("chain_broken", genesis, None)
    siblings = [x for x in _fetch(conn, gid, _SB.prev_hash == p) if x.hash != me] if p != GENESIS_HASH else []
    if p != GENESIS_HASH:
        for named in _fetch(conn, gid, _SB.hash == p):
            if breaks(named, h):  # at the wrong distance, it contradicts a stored batch: rule 1
                if siblings:
                    raise Conflict("fork", f"batch {s} ({me}) and stored {siblings[0].name()} both name "
                                           f"{named.name()} as their predecessor; only batch "
                                           f"{named.batch_seq + 1} may", siblings[0])
                raise Conflict("chain_broken", f"batch {s} ({me}) names stored {named.name()} as its predecessor, "
                                               f"which would make it batch {named.batch_seq + 1}", named)
    pred = near.get(s - 1)
    if pred is not None and breaks(pred, h):
        raise Conflict("chain_broken", f"batch {s} ({me}) names {p} as its predecessor, but stored "
                                       f"{pred.name()} is not that batch", pred)
    links = s == 1 or pred is not None
    doomed: dict[int, StoredBatch] = {}

    def linked(x: StoredBatch) -> bool:
        """Whether stored batch ``x`` links to a stored predecessor that stays."""
        if x.batch_seq == 1:
            return True
        if x.batch_seq - 1 == s:
            return not breaks(mine, x)
        if x.batch_seq - 1 in doomed:
            return False
        below = near.get(x.batch_seq - 1)
        return below is not None or bool(_fetch(conn, gid, _SB.batch_seq == x.batch_seq - 1))

    def settle(x: StoredBatch, reason: str, why: str, *, contradicts: bool = False) -> None:
        """Move ``x`` aside if this batch wins (rules 1 and 2 above), else refuse this batch."""
        if x.batch_seq in doomed:
            return
        if (contradicts or (links and not linked(x))) and not _carried_rotation(conn, gid, x):
            doomed[x.batch_seq] = x
            return
        raise Conflict(reason, f"batch {s} ({me}) conflicts with stored {x.name()}: {why}", x)

    if same is not None:
        settle(same, "fork", "two batches with the same batch_seq")
    for x in siblings:
        settle(x, "fork", f"both name {p} as their predecessor")
    for x in _fetch(conn, gid, _SB.prev_hash == me):
        if breaks(mine, x):
            settle(x, "fork", f"it names this batch as its predecessor but is numbered {x.batch_seq}",
                   contradicts=True)
    nxt = near.get(s + 1)
    if nxt is not None and breaks(mine, nxt):
        settle(nxt, "chain_broken", f"it links to {nxt.prev_hash}, not to this batch")
    ev = events.c
    holders = _chunk_holders(conn, gid, h.first_seq, h.last_seq)
    for batch_seq, seq in conn.execute(select(ev.batch_seq, func.min(ev.seq))
                                       .where(ev.gateway_id == gid, ev.seq.between(h.first_seq, h.last_seq))
                                       .group_by(ev.batch_seq)):
        holders[batch_seq] = min(seq, holders.get(batch_seq, seq))
    for batch_seq, seq in sorted(holders.items()):
        holder = _fetch(conn, gid, _SB.batch_seq == batch_seq)
        if not holder:  # records without their sealed batch: nothing to weigh them against
            raise Conflict("replay", f"record seq {seq} is already stored (from batch {batch_seq})", None)
        settle(holder[0], "replay", f"record seq {seq} is already stored from it")
    return list(doomed.values())


def _chunk_holders(conn: Connection, gid: int, first: int, last: int) -> dict[int, int]:
    """Sealed batch -> lowest stored reading seq in ``first..last``, from the chunks overlapping that range.

    The (gateway, last_seq) index finds them: new batches come last, so few chunks end at or after ``first``.
    """
    rc = reading_chunks.c
    out: dict[int, int] = {}
    for row in conn.execute(select(rc.batch_seq, rc.first_seq, rc.n, rc.seqs)
                            .where(rc.gateway_id == gid, rc.last_seq >= first, rc.first_seq <= last)):
        try:
            seqs = [s for s in unpack_seqs(row.seqs, row.n) if first <= s <= last]
        except ChunkError:  # an altered chunk (store verify reports it): it still claims the range
            seqs = [max(first, row.first_seq)]
        if seqs:
            out[row.batch_seq] = min(min(seqs), out.get(row.batch_seq, seqs[0]))
    return out


def _carried_rotation(conn: Connection, gid: int, x: StoredBatch) -> bool:
    gk = gateway_keys.c
    return bool(conn.execute(
        select(func.count()).where(gk.gateway_id == gid, gk.valid_to_seq.between(x.first_seq, x.last_seq))
    ).scalar_one())


__all__ = ["Conflict", "StoredBatch", "place"]
