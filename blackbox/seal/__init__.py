"""Sealing: canonical batch bytes, the hash chain, Ed25519 signing and verification, keys.

The gateway, the store and the offline verifier all import this package, so both sides agree on
the bytes. The format is specified in ``docs/batch-format.md``.

Sending side::

    sealed = seal_batch(records, site=..., gateway=..., key=key, batch_seq=n,
                        prev_hash=previous.hash, config_hash=...)
    publish(sealed.wire)

Receiving side::

    opened = open_batch(wire)                 # MalformedBatch
    verify_batch(opened, enrolled_public_key)  # BadSignature
    records = decode_records(opened)           # MalformedBatch
"""

from blackbox.seal.codec import MAX_RECORDS_BYTES, Codec, codec_names, register_codec
from blackbox.seal.errors import (
    BadSignature,
    KeyFileError,
    KeyFileExists,
    KeyPermissionError,
    MalformedBatch,
    SealError,
)
from blackbox.seal.format import (
    OpenedBatch,
    SealedBatch,
    decode_records,
    decode_row_tuples,
    decode_rows,
    open_batch,
    seal_batch,
    seal_rows,
    seal_runs,
)
from blackbox.seal.header import FORMAT_VERSION, GENESIS_HASH, BatchHeader
from blackbox.seal.keys import (
    fingerprint,
    generate_key_file,
    key_id,
    load_private_key,
    load_public_key,
    next_key_path,
    promote_next_key,
    public_key_pem,
    set_aside_next_key,
)
from blackbox.seal.links import GENESIS, ChainEnd, breaks, genesis_problem, link_faults, link_problems, successor
from blackbox.seal.rotation import (
    KEY_ROTATED,
    KeyChain,
    KeyNotInForce,
    Rotation,
    RotationError,
    UnknownKey,
    batch_rotation,
    key_range_breach,
    rotation_data,
    rotation_of,
)
from blackbox.seal.verify import verify_batch

__all__ = [
    "FORMAT_VERSION",
    "GENESIS",
    "GENESIS_HASH",
    "KEY_ROTATED",
    "MAX_RECORDS_BYTES",
    "BadSignature",
    "BatchHeader",
    "ChainEnd",
    "Codec",
    "KeyChain",
    "KeyFileError",
    "KeyFileExists",
    "KeyNotInForce",
    "KeyPermissionError",
    "MalformedBatch",
    "OpenedBatch",
    "Rotation",
    "RotationError",
    "SealError",
    "SealedBatch",
    "UnknownKey",
    "batch_rotation",
    "breaks",
    "codec_names",
    "decode_records",
    "decode_row_tuples",
    "decode_rows",
    "fingerprint",
    "generate_key_file",
    "genesis_problem",
    "key_id",
    "key_range_breach",
    "link_faults",
    "link_problems",
    "load_private_key",
    "load_public_key",
    "next_key_path",
    "open_batch",
    "promote_next_key",
    "public_key_pem",
    "register_codec",
    "rotation_data",
    "rotation_of",
    "seal_batch",
    "seal_rows",
    "seal_runs",
    "set_aside_next_key",
    "successor",
    "verify_batch",
]
