"""One store key for the tests that run a store in process: its signer and the key gateways pin."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from blackbox.config import StoreConfig
from blackbox.tlog.note import Signer

STORE_SIGNER = Signer(StoreConfig().log_origin, Ed25519PrivateKey.generate())
STORE_VKEY = STORE_SIGNER.verifier.vkey
"""What ``uplink.store_key`` is set to for gateways talking to a store signing with STORE_SIGNER."""


def write_store_key(path: Path) -> Path:
    """STORE_SIGNER's private key as a key file (PEM, 0600), for a store started from a configuration."""
    pem = STORE_SIGNER.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption())
    path.write_bytes(pem)
    path.chmod(0o600)
    return path
