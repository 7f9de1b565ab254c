"""No change to a sealed batch goes unnoticed, and only the right key's signature passes."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from blackbox.model import Event, Reading
from blackbox.seal import (
    BadSignature,
    MalformedBatch,
    SealError,
    decode_records,
    open_batch,
    seal_batch,
    verify_batch,
)

from .helpers import craft, header_for, make_records


def accept(wire: bytes, public_key: Ed25519PublicKey) -> list[Reading | Event]:
    """Everything a receiver does; returns the records only if the batch is accepted."""
    opened = open_batch(wire)
    verify_batch(opened, public_key)
    return decode_records(opened)


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_every_flipped_bit_is_detected(seal_args: dict[str, Any], key: Ed25519PrivateKey, compression: str) -> None:
    wire = seal_batch(make_records()[:6], compression=compression, **seal_args).wire
    public = key.public_key()
    assert accept(wire, public)
    kinds: set[type] = set()
    for i in range(len(wire)):
        for mask in (0x01, 0x80):
            bad = bytearray(wire)
            bad[i] ^= mask
            with pytest.raises(SealError) as info:
                accept(bytes(bad), public)
            assert isinstance(info.value, (MalformedBatch, BadSignature))
            kinds.add(type(info.value))
    assert kinds == {MalformedBatch, BadSignature}  # both layers do their part


def test_truncation_and_extension_are_detected(seal_args: dict[str, Any], key: Ed25519PrivateKey) -> None:
    wire = seal_batch(make_records()[:4], **seal_args).wire
    public = key.public_key()
    for n in range(len(wire)):
        with pytest.raises(MalformedBatch):
            accept(wire[:n], public)
    for extra in (b"\x00", b"x" * 64, wire[-64:]):
        with pytest.raises(MalformedBatch):
            accept(wire + extra, public)


def test_batch_from_another_key_is_rejected(
    seal_args: dict[str, Any], key: Ed25519PrivateKey, other_key: Ed25519PrivateKey
) -> None:
    theirs = seal_batch(make_records()[:3], **{**seal_args, "key": other_key}).wire
    with pytest.raises(BadSignature, match="signed with key"):
        verify_batch(open_batch(theirs), key.public_key())
    verify_batch(open_batch(theirs), other_key.public_key())


def test_signature_swapped_for_another_keys_is_rejected(
    seal_args: dict[str, Any], key: Ed25519PrivateKey, other_key: Ed25519PrivateKey
) -> None:
    wire = seal_batch(make_records()[:3], **seal_args).wire
    swapped = wire[:-64] + other_key.sign(wire[:-64])
    with pytest.raises(BadSignature, match="does not verify"):
        verify_batch(open_batch(swapped), key.public_key())
    with pytest.raises(BadSignature):  # and the other key's owner cannot claim it either
        verify_batch(open_batch(swapped), other_key.public_key())


def test_forged_key_id_does_not_help(key: Ed25519PrivateKey, other_key: Ed25519PrivateKey) -> None:
    """An attacker with their own key writes the victim's key_id in the header and signs."""
    document = b'{"e":[],"r":[[1,"T",1.0,"good",null,1,null,null,null]]}'
    header = header_for(document, key, "none", first_ts_us=1, last_ts_us=1)  # names key's key_id
    forged = craft(header, document, other_key)
    with pytest.raises(BadSignature, match="does not verify"):
        verify_batch(open_batch(forged), key.public_key())
    assert decode_records(open_batch(craft(header, document, key)))  # the same bytes, honestly signed


def test_verify_needs_an_ed25519_public_key(seal_args: dict[str, Any], key: Ed25519PrivateKey) -> None:
    opened = open_batch(seal_batch(make_records()[:2], **seal_args).wire)
    with pytest.raises(TypeError):
        verify_batch(opened, key)  # type: ignore[arg-type]
