"""Checking a batch's signature (how it links to the batch before it: :mod:`blackbox.seal.links`)."""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from blackbox.seal.errors import BadSignature
from blackbox.seal.format import OpenedBatch
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
