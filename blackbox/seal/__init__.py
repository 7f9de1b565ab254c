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
from blackbox.seal.format import OpenedBatch, SealedBatch, decode_records, open_batch, seal_batch
from blackbox.seal.header import FORMAT_VERSION, GENESIS_HASH, BatchHeader
from blackbox.seal.keys import (
    fingerprint,
    generate_key_file,
    key_id,
    load_private_key,
    load_public_key,
    public_key_pem,
)
from blackbox.seal.verify import link_problems, verify_batch

__all__ = [
    "FORMAT_VERSION",
    "GENESIS_HASH",
    "MAX_RECORDS_BYTES",
    "BadSignature",
    "BatchHeader",
    "Codec",
    "KeyFileError",
    "KeyFileExists",
    "KeyPermissionError",
    "MalformedBatch",
    "OpenedBatch",
    "SealError",
    "SealedBatch",
    "codec_names",
    "decode_records",
    "fingerprint",
    "generate_key_file",
    "key_id",
    "link_problems",
    "load_private_key",
    "load_public_key",
    "open_batch",
    "public_key_pem",
    "register_codec",
    "seal_batch",
    "verify_batch",
]
