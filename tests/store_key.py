"""One store key for the tests that run a store in process: its signer and the key gateways pin."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from blackbox.config import StoreConfig
from blackbox.tlog.entries import batch_entry
from blackbox.tlog.merkle import MemoryTree
from blackbox.tlog.note import Signer
from blackbox.tlog.receipt import Receipt, make_ack

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


class SignedAcks:
    """The store's signed acknowledgements for a gateway's batches, without a store: a log holding
    one ``batch`` entry per given batch, every receipt under the same tree head (so a gateway never
    needs a consistency proof)."""

    def __init__(self, site: str, gateway: str, batches: list[tuple[int, str]]) -> None:
        self.site, self.gateway = site, gateway
        self.tree = MemoryTree()
        self.index = {seq: self.tree.append(batch_entry(site, gateway, seq, h, 1_000)) for seq, h in batches}

    def ack(self, batch_seq: int, hash_: str, status: str = "stored", reason: str | None = None) -> bytes:
        index = self.index.get(batch_seq, 0)
        receipt = Receipt(STORE_SIGNER.name, self.site, self.gateway, batch_seq, hash_, status, reason, index, 1_000,
                          self.tree.size, self.tree.root(), 2_000)
        return make_ack(STORE_SIGNER, receipt, self.tree.inclusion(index) if status != "rejected" else [])
