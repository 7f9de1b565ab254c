"""How a batch links to the batch before it: the one home of the chain-link rules.

Batch ``n`` names batch ``n - 1`` by hash (``prev_hash``) and carries the record seqs that follow
it; batch 1, and only batch 1, names genesis. The sealer builds each batch on :func:`successor` of
the chain's end; the offline verifier (``blackbox verify``), the store's ingest (which batch wins
a conflict, :mod:`blackbox.store.chain`) and ``store verify``/integrity check links with
:func:`link_faults` and :func:`genesis_problem`, each naming the faults in its own terms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from blackbox.seal.format import OpenedBatch, SealedBatch
from blackbox.seal.header import GENESIS_HASH, BatchHeader


class End(Protocol):
    """The batch a successor links to: its number, hash and last record seq (``None``: not known,
    e.g. the last batch of a purged chain start, whose records are gone)."""

    @property
    def batch_seq(self) -> int: ...
    @property
    def hash(self) -> str: ...
    @property
    def last_seq(self) -> int | None: ...


class Link(Protocol):
    """The link fields of a batch: the number it claims, the hash it names and its first record seq."""

    @property
    def batch_seq(self) -> int: ...
    @property
    def prev_hash(self) -> str: ...
    @property
    def first_seq(self) -> int: ...


@dataclass(frozen=True, slots=True)
class ChainEnd:
    """An :class:`End` made from a batch (or genesis)."""

    batch_seq: int
    hash: str
    last_seq: int | None

    @classmethod
    def of(cls, batch: OpenedBatch | SealedBatch) -> ChainEnd:
        return cls(batch.header.batch_seq, batch.hash, batch.header.last_seq)


GENESIS = ChainEnd(0, GENESIS_HASH, 0)
"""The end of an empty chain: batch 1 names it (its records follow seq 0)."""


@dataclass(frozen=True, slots=True)
class Successor:
    """What the next batch claims: its ``batch_seq``, the ``prev_hash`` it names, and the last record
    seq already sealed (its records follow it)."""

    batch_seq: int
    prev_hash: str
    after_seq: int


def successor(end: End | None) -> Successor:
    """What the batch sealed after ``end`` (``None``: an empty chain) claims."""
    end = end or GENESIS
    if end.last_seq is None:
        raise ValueError("cannot seal after a batch whose last record seq is unknown")
    return Successor(end.batch_seq + 1, end.hash, end.last_seq)


LinkFault = Literal["prev_hash", "batch_seq", "seq_gap"]
"""``prev_hash``/``batch_seq``: the chain is broken (a batch missing, replayed or forged);
``seq_gap``: the chain is intact but records between the two batches are in neither (the buffer
dropped them; a gap event in the batch should say why)."""


def link_faults(previous: End, current: Link) -> dict[LinkFault, str]:
    """What is wrong with ``current`` as the batch following ``previous``, each fault with its
    message (empty when it links)."""
    faults: dict[LinkFault, str] = {}
    if current.prev_hash != previous.hash:
        faults["prev_hash"] = (f"prev_hash {current.prev_hash} is not the hash of batch {previous.batch_seq} "
                               f"({previous.hash})")
    if current.batch_seq != previous.batch_seq + 1:
        faults["batch_seq"] = f"batch_seq {current.batch_seq} does not follow {previous.batch_seq}"
    if previous.last_seq is not None and current.first_seq != previous.last_seq + 1:
        faults["seq_gap"] = f"record seq jumps from {previous.last_seq} to {current.first_seq}"
    return faults


def breaks(previous: End, current: Link) -> bool:
    """Whether ``current`` cannot follow ``previous`` in one chain (a record gap does not break it)."""
    return not link_faults(previous, current).keys() <= {"seq_gap"}


def genesis_problem(header: BatchHeader) -> str | None:
    """What is wrong with where the batch starts its chain: batch 1, and only batch 1, names genesis."""
    if (header.batch_seq == 1) != (header.prev_hash == GENESIS_HASH):
        return (f"batch {header.batch_seq} with prev_hash {header.prev_hash}: batch 1, and only batch 1, "
                f"names genesis")
    return None


def link_problems(previous: OpenedBatch | SealedBatch, current: OpenedBatch | SealedBatch) -> list[str]:
    """What is wrong with ``current`` as the batch following ``previous`` (empty when it links):
    :func:`link_faults`, and another gateway's batch."""
    p, c = previous.header, current.header
    problems: list[str] = []
    if (c.site, c.gateway) != (p.site, p.gateway):
        problems.append(f"batch is from {c.site}/{c.gateway}, the previous one from {p.site}/{p.gateway}")
    problems.extend(link_faults(ChainEnd.of(previous), c).values())
    return problems
