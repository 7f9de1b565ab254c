"""Checking a batch: its signature, and how it links to the batch before it in the chain."""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from blackbox.seal.errors import BadSignature
from blackbox.seal.format import OpenedBatch, SealedBatch
from blackbox.seal.header import GENESIS_HASH, BatchHeader
from blackbox.seal.keys import key_id


def verify_batch(opened: OpenedBatch, public_key: Ed25519PublicKey) -> None:
    """Check the Ed25519 signature over the exact received bytes; raise :class:`BadSignature`.

    The header's ``key_id`` must name ``public_key``: a batch that claims one key and was checked
    against another is rejected even before the signature is looked at.
    """
    if not isinstance(public_key, Ed25519PublicKey):
        raise TypeError(f"public_key must be an Ed25519PublicKey, not {type(public_key).__name__}")
    expected = key_id(public_key)
    if opened.header.key_id != expected:
        raise BadSignature(f"batch is signed with key {opened.header.key_id}, not with key {expected}")
    try:
        public_key.verify(opened.signature, opened.signed_bytes)
    except InvalidSignature:
        raise BadSignature(f"signature does not verify with key {expected}") from None


def genesis_problem(header: BatchHeader) -> str | None:
    """What is wrong with where the batch starts its chain: batch 1, and only batch 1, names genesis.

    The one home of the rule, used by the offline verifier, the store's ingest and ``store verify``.
    """
    if (header.batch_seq == 1) != (header.prev_hash == GENESIS_HASH):
        return (f"batch {header.batch_seq} with prev_hash {header.prev_hash}: batch 1, and only batch 1, "
                f"names genesis")
    return None


def link_problems(previous: OpenedBatch | SealedBatch, current: OpenedBatch | SealedBatch) -> list[str]:
    """What is wrong with ``current`` as the batch following ``previous`` (empty when it links).

    A chain break (wrong ``prev_hash``, ``batch_seq`` not +1, another gateway) means a batch is
    missing, replayed or forged. A jump in the record ``seq`` with an intact chain is reported
    too: the buffer dropped records, and a gap event in the batch should say why.
    """
    p, c = previous.header, current.header
    problems: list[str] = []
    if (c.site, c.gateway) != (p.site, p.gateway):
        problems.append(f"batch is from {c.site}/{c.gateway}, the previous one from {p.site}/{p.gateway}")
    if c.prev_hash != previous.hash:
        problems.append(f"prev_hash {c.prev_hash} is not the hash of batch {p.batch_seq} ({previous.hash})")
    if c.batch_seq != p.batch_seq + 1:
        problems.append(f"batch_seq {c.batch_seq} does not follow {p.batch_seq}")
    if c.first_seq != p.last_seq + 1:
        problems.append(f"record seq jumps from {p.last_seq} to {c.first_seq}")
    return problems
