"""The byte layout of a batch (docs/batch-format.md), and nothing else.

::

    "BBX1" | u32 header_len | header | u32 payload_len | payload | signature (64 bytes)
    \\_______________________ signed bytes ______________________/

Lengths are unsigned 32-bit big-endian. The signature is Ed25519 over the signed bytes; the batch
hash is SHA-256 of the signed bytes.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from blackbox.seal.codec import MAX_RECORDS_BYTES
from blackbox.seal.errors import MalformedBatch

MAGIC = b"BBX1"
SIGNATURE_BYTES = 64
MAX_HEADER_BYTES = 64 * 1024
MAX_PAYLOAD_BYTES = MAX_RECORDS_BYTES
_LEN = struct.Struct(">I")
MIN_WIRE_BYTES = len(MAGIC) + 2 * _LEN.size + SIGNATURE_BYTES


@dataclass(frozen=True, slots=True)
class Parts:
    header: bytes
    payload: bytes
    signed: bytes
    signature: bytes


def pack(header: bytes, payload: bytes) -> bytes:
    """The signed bytes for a header and a (compressed) payload."""
    if len(header) > MAX_HEADER_BYTES:
        raise ValueError(f"header of {len(header)} bytes exceeds {MAX_HEADER_BYTES}")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    return b"".join((MAGIC, _LEN.pack(len(header)), header, _LEN.pack(len(payload)), payload))


def split(wire: bytes) -> Parts:
    """Cut a wire into its parts, checking the layout but trusting nothing inside it."""
    if len(wire) < MIN_WIRE_BYTES:
        raise MalformedBatch(f"{len(wire)} bytes is too short for a batch (at least {MIN_WIRE_BYTES})")
    if wire[:4] != MAGIC:
        raise MalformedBatch(f"not a blackbox batch: starts with {wire[:4]!r}, expected {MAGIC!r}")
    (header_len,) = _LEN.unpack_from(wire, 4)
    if header_len > MAX_HEADER_BYTES:
        raise MalformedBatch(f"header length {header_len} exceeds {MAX_HEADER_BYTES}")
    header_end = 8 + header_len
    if header_end + _LEN.size + SIGNATURE_BYTES > len(wire):
        raise MalformedBatch(f"header length {header_len} runs past the end of the batch")
    (payload_len,) = _LEN.unpack_from(wire, header_end)
    if payload_len > MAX_PAYLOAD_BYTES:
        raise MalformedBatch(f"payload length {payload_len} exceeds {MAX_PAYLOAD_BYTES}")
    payload_start = header_end + _LEN.size
    signed_end = payload_start + payload_len
    if signed_end + SIGNATURE_BYTES != len(wire):
        raise MalformedBatch(
            f"length mismatch: header and payload lengths give {signed_end + SIGNATURE_BYTES} bytes, "
            f"the batch has {len(wire)}"
        )
    return Parts(
        header=wire[8:header_end],
        payload=wire[payload_start:signed_end],
        signed=wire[:signed_end],
        signature=wire[signed_end:],
    )


def batch_hash(signed: bytes) -> str:
    """The chain hash of a batch: hex SHA-256 of its signed bytes (the wire minus the signature)."""
    return hashlib.sha256(signed).hexdigest()
