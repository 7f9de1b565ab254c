"""Key rotation as an event in the chain, and following it when verifying (docs/batch-format.md).

A gateway rotates its signing key by recording a ``key.rotated`` event that names the new public
key. The event is the **last record** of a batch signed by the **old** key; every later batch is
signed by the new key. So the old key itself vouches for its successor, inside the signed chain:
a verifier that trusts the old key learns the new one from the chain, and nothing signed by the
old key can follow the rotation.

Event data::

    {"old_key_id": "<16 hex>", "new_key_id": "<16 hex>", "new_public_key": "<64 hex, raw 32 bytes>",
     "new_fingerprint": "SHA256:<64 hex>", "requested_by": "<who asked>"}
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from blackbox.model import Event, Reading
from blackbox.seal.errors import SealError
from blackbox.seal.format import OpenedBatch
from blackbox.seal.header import BatchHeader
from blackbox.seal.keys import fingerprint, key_id, raw_public_bytes
from blackbox.seal.verify import verify_batch

KEY_ROTATED = "key.rotated"
"""Event type of a key rotation."""

_HEX64 = re.compile(r"[0-9a-f]{64}")


class RotationError(SealError):
    """A ``key.rotated`` event that does not follow the rules (see the module docstring)."""


class UnknownKey(SealError):
    """The batch names a key the verifier does not trust (never given, nor rotated into)."""


class KeyNotInForce(SealError):
    """The signing key is trusted, but not for these records (before it was rotated in, or after it was retired)."""


@dataclass(frozen=True, slots=True)
class Rotation:
    """A verified-looking rotation: at record ``seq``, ``old_key_id`` hands over to ``new_key``."""

    seq: int
    old_key_id: str
    new_key_id: str
    new_key: Ed25519PublicKey

    @property
    def old_valid_to(self) -> int:
        """The last record the old key may sign: the rotation event itself, last in its batch."""
        return self.seq

    @property
    def new_valid_from(self) -> int:
        """The first record the new key signs."""
        return self.seq + 1

    @staticmethod
    def seq_bringing_in(valid_from_seq: int) -> int:
        """The record of the rotation that brought in a key in force from ``valid_from_seq`` (the
        inverse of :attr:`new_valid_from`): the last record of the batch that proves it."""
        return valid_from_seq - 1


def rotation_data(old_key: Ed25519PrivateKey | Ed25519PublicKey, new_key: Ed25519PrivateKey | Ed25519PublicKey,
                  requested_by: str | None) -> dict[str, Any]:
    """The ``data`` of the ``key.rotated`` event that hands over from ``old_key`` to ``new_key``."""
    return {
        "old_key_id": key_id(old_key),
        "new_key_id": key_id(new_key),
        "new_public_key": raw_public_bytes(new_key).hex(),
        "new_fingerprint": fingerprint(new_key),
        "requested_by": requested_by,
    }


def rotation_of(event: Event) -> Rotation:
    """Read a ``key.rotated`` event; :class:`RotationError` if its data is inconsistent."""
    data = event.data
    old, new, raw = data.get("old_key_id"), data.get("new_key_id"), data.get("new_public_key")
    if not isinstance(raw, str) or not _HEX64.fullmatch(raw):
        raise RotationError(f"key.rotated event seq {event.seq}: new_public_key must be 64 lowercase hex digits")
    new_key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(raw))
    if new != key_id(new_key):
        raise RotationError(f"key.rotated event seq {event.seq}: new_key_id {new!r} is not the id of new_public_key")
    if not isinstance(old, str) or old == new:
        raise RotationError(f"key.rotated event seq {event.seq}: old_key_id {old!r} must name another key")
    return Rotation(event.seq, old, new, new_key)


def batch_rotation(opened: OpenedBatch, records: Sequence[Reading | Event]) -> Rotation | None:
    """The rotation a batch carries, if any, checked against the batch; :class:`RotationError`.

    Rules: at most one ``key.rotated`` event per batch; it is the batch's last record; it was
    signed by the key it retires (``old_key_id`` is the header's ``key_id``).
    """
    found = [r for r in records if isinstance(r, Event) and r.type == KEY_ROTATED]
    if not found:
        return None
    if len(found) > 1:
        raise RotationError(f"batch {opened.header.batch_seq} holds {len(found)} key rotations; at most one is allowed")
    rotation = rotation_of(found[0])
    if rotation.seq != opened.header.last_seq:
        raise RotationError(f"key.rotated event seq {rotation.seq} is not the last record of batch "
                            f"{opened.header.batch_seq} (which ends at {opened.header.last_seq})")
    if rotation.old_key_id != opened.header.key_id:
        raise RotationError(f"key.rotated event seq {rotation.seq} retires key {rotation.old_key_id}, but the batch "
                            f"is signed by key {opened.header.key_id}")
    return rotation


def key_range_breach(header: BatchHeader, valid_from_seq: int | None,
                     valid_to_seq: int | None) -> Literal["before", "after"] | None:
    """Whether a key in force for records ``valid_from_seq..valid_to_seq`` may sign this batch.

    The one home of the rule, used by the offline verifier, the store's ingest and ``store
    verify``: ``None`` if the key's range covers the batch's records (an open end is unbounded);
    ``"before"`` if the batch starts before the key was rotated in; ``"after"`` if it ends after
    the key was retired.
    """
    if valid_from_seq is not None and header.first_seq < valid_from_seq:
        return "before"
    if valid_to_seq is not None and header.last_seq > valid_to_seq:
        return "after"
    return None


@dataclass
class _Trusted:
    key: Ed25519PublicKey
    valid_from_seq: int | None = None
    valid_to_seq: int | None = None


class KeyChain:
    """The keys trusted for one gateway's chain, following its rotations (the offline verifier).

    Start with the keys an operator trusts; :meth:`check` verifies each batch (in chain order) and
    learns the keys it rotates to.
    """

    def __init__(self, trusted: Iterable[Ed25519PublicKey]) -> None:
        self._keys = {key_id(k): _Trusted(k) for k in trusted}

    def check(self, opened: OpenedBatch, records: Sequence[Reading | Event]) -> Rotation | None:
        """:meth:`verify` then :meth:`follow`, for records already decoded."""
        self.verify(opened)
        return self.follow(opened, records)

    def verify(self, opened: OpenedBatch) -> None:
        """The batch's key is trusted and in force for its records, and its signature verifies.

        Raises :class:`UnknownKey`, :class:`KeyNotInForce` or :class:`~blackbox.seal.BadSignature`.
        Call it before decoding the records: nothing in an unverified payload is worth reading.
        """
        h = opened.header
        trusted = self._keys.get(h.key_id)
        if trusted is None:
            raise UnknownKey(f"batch {h.batch_seq} is signed by key {h.key_id}, which is neither given nor "
                             f"rotated into by an earlier batch")
        breach = key_range_breach(h, trusted.valid_from_seq, trusted.valid_to_seq)
        if breach == "before":
            raise KeyNotInForce(f"batch {h.batch_seq} is signed by key {h.key_id}, which is in force only from "
                                f"record {trusted.valid_from_seq}")
        if breach == "after":
            raise KeyNotInForce(f"batch {h.batch_seq} is signed by key {h.key_id}, which was retired after record "
                                f"{trusted.valid_to_seq}")
        verify_batch(opened, trusted.key)

    def follow(self, opened: OpenedBatch, records: Sequence[Reading | Event]) -> Rotation | None:
        """Apply the rotation a verified batch carries, if any (:class:`RotationError` if it breaks the rules)."""
        rotation = batch_rotation(opened, records)
        if rotation is not None:
            self._keys[opened.header.key_id].valid_to_seq = rotation.old_valid_to
            self._keys[rotation.new_key_id] = _Trusted(rotation.new_key, valid_from_seq=rotation.new_valid_from)
        return rotation
