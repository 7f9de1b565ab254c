"""The store's signed receipts: what a gateway needs to count a batch delivered.

A receipt is a signed note (the store's key, the same as its checkpoints') whose text is
``blackbox-receipt/v1`` then one ``name value`` line per field, in this order::

    blackbox-receipt/v1
    origin <the log's origin>
    site <site id>
    gateway <gateway id>
    batch_seq <n>
    hash <SHA-256 of the batch, hex>
    status stored|duplicate|rejected
    reason <rejection reason, or ->
    index <the log entry's leaf index>
    received_at_us <when the store accepted it: the time in the log entry>
    tree_size <size of the tree head after the entry>
    tree_root <its root, base64>
    time_us <when the receipt was signed>

The acknowledgement published on the gateway's ``acks`` topic is JSON: the plain fields
(``batch_seq``, ``hash``, ``status``, ``reason``), ``receipt`` (the signed note), ``checkpoint``
(the signed tree head of ``tree_size``, a C2SP checkpoint) and ``inclusion`` (the audit path of
the entry in that tree, base64 hashes). :func:`verify_ack` checks all of it.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import orjson

from blackbox.tlog.entries import batch_entry
from blackbox.tlog.merkle import ProofError, leaf_hash, verify_inclusion
from blackbox.tlog.note import Checkpoint, NoteError, Signer, Verifier, open_checkpoint, open_note

HEADER = "blackbox-receipt/v1"
FIELDS = ("origin", "site", "gateway", "batch_seq", "hash", "status", "reason", "index", "received_at_us",
          "tree_size", "tree_root", "time_us")
STATUSES = ("stored", "duplicate", "rejected")


class ReceiptError(ValueError):
    """An acknowledgement that is not a valid receipt from the pinned store key."""


@dataclass(frozen=True)
class Receipt:
    origin: str
    site: str
    gateway: str
    batch_seq: int
    hash: str
    status: str
    reason: str | None
    index: int
    received_at_us: int
    tree_size: int
    tree_root: bytes
    time_us: int

    def text(self) -> str:
        values = {**vars(self), "reason": self.reason or "-",
                  "tree_root": base64.b64encode(self.tree_root).decode()}
        for name in FIELDS:
            v = str(values[name])
            if not v or any(c.isspace() for c in v):
                raise ReceiptError(f"receipt field {name} {v!r} is empty or has white space")
        return HEADER + "\n" + "".join(f"{name} {values[name]}\n" for name in FIELDS)

    @classmethod
    def parse(cls, text: str) -> Receipt:
        lines = text.split("\n")
        if lines[0] != HEADER or lines[-1] != "" or len(lines) != len(FIELDS) + 2:
            raise ReceiptError(f"not a {HEADER} receipt")
        raw: dict[str, str] = {}
        for name, line in zip(FIELDS, lines[1:-1], strict=True):
            key, _, value = line.partition(" ")
            if key != name or not value:
                raise ReceiptError(f"receipt line {line[:60]!r}: expected {name}")
            raw[name] = value
        try:
            ints = {k: _int(raw[k]) for k in ("batch_seq", "index", "received_at_us", "tree_size", "time_us")}
            root = base64.b64decode(raw["tree_root"], validate=True)
        except (ValueError, binascii.Error) as exc:
            raise ReceiptError(f"malformed receipt: {exc}") from None
        if raw["status"] not in STATUSES or len(root) != 32:
            raise ReceiptError("malformed receipt: unknown status or a root that is not a SHA-256 hash")
        return cls(raw["origin"], raw["site"], raw["gateway"], ints["batch_seq"], raw["hash"], raw["status"],
                   None if raw["reason"] == "-" else raw["reason"], ints["index"], ints["received_at_us"],
                   ints["tree_size"], root, ints["time_us"])


def _int(text: str) -> int:
    if not text.isascii() or not text.lstrip("-").isdigit():
        raise ValueError(f"{text!r} is not an integer")
    return int(text)


def make_ack(signer: Signer, receipt: Receipt, inclusion: list[bytes]) -> bytes:
    """The acknowledgement JSON of a receipt: signed receipt, signed checkpoint, inclusion proof."""
    checkpoint = Checkpoint(receipt.origin, receipt.tree_size, receipt.tree_root)
    return orjson.dumps({
        "batch_seq": receipt.batch_seq, "hash": receipt.hash, "status": receipt.status, "reason": receipt.reason,
        "receipt": signer.sign(receipt.text()), "checkpoint": checkpoint.sign(signer),
        "inclusion": [base64.b64encode(h).decode() for h in inclusion],
    })


@dataclass(frozen=True)
class VerifiedAck:
    """A receipt whose signature, checkpoint and (for a stored batch) inclusion proof all verified."""

    receipt: Receipt
    receipt_note: str
    checkpoint: Checkpoint
    checkpoint_note: str
    inclusion: list[bytes]


def verify_ack(doc: dict[str, Any], verifier: Verifier, site: str, gateway: str) -> VerifiedAck:
    """Check an acknowledgement against the pinned store key; :class:`ReceiptError` if anything fails.

    For ``stored``/``duplicate`` the batch's log entry is rebuilt from the receipt's own fields
    (:func:`blackbox.tlog.entries.batch_entry`) and the inclusion proof must lead from it to the
    checkpoint's root: the log the checkpoint commits to holds this very batch.
    """
    note, cp_note, proof = doc.get("receipt"), doc.get("checkpoint"), doc.get("inclusion")
    if not isinstance(note, str) or not isinstance(cp_note, str) or not isinstance(proof, list):
        raise ReceiptError("unsigned acknowledgement (no receipt, checkpoint or inclusion proof)")
    try:
        receipt = Receipt.parse(open_note(note, verifier))
        checkpoint = open_checkpoint(cp_note, verifier)
    except NoteError as exc:
        raise ReceiptError(f"receipt or checkpoint does not verify with the pinned store key: {exc}") from None
    if receipt.origin != verifier.name:
        raise ReceiptError(f"receipt of log {receipt.origin!r}, the pinned key is {verifier.name!r}")
    if (receipt.site, receipt.gateway) != (site, gateway):
        raise ReceiptError(f"receipt for {receipt.site}/{receipt.gateway}, not this gateway")
    if (checkpoint.size, checkpoint.root) != (receipt.tree_size, receipt.tree_root):
        raise ReceiptError("the checkpoint is not the tree head the receipt names")
    if (doc.get("batch_seq"), doc.get("hash"), doc.get("status")) != (receipt.batch_seq, receipt.hash,
                                                                         receipt.status):
        raise ReceiptError("the acknowledgement's fields differ from its signed receipt")
    try:
        hashes = [base64.b64decode(h, validate=True) for h in proof]
    except (TypeError, ValueError, binascii.Error):
        raise ReceiptError("malformed inclusion proof") from None
    if receipt.status != "rejected":
        entry = batch_entry(site, gateway, receipt.batch_seq, receipt.hash, receipt.received_at_us)
        try:
            verify_inclusion(receipt.index, receipt.tree_size, leaf_hash(entry), hashes, receipt.tree_root)
        except ProofError as exc:
            raise ReceiptError(f"the batch is not in the log the receipt names: {exc}") from None
    return VerifiedAck(receipt, note, checkpoint, cp_note, hashes)
