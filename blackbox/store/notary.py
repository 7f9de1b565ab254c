"""What the store signs: receipts for acknowledgements, checkpoints of its log, consistency proofs.

The service asks the :class:`Notary` for the bytes to publish; the notary holds the store key and
reads the transparency log (:mod:`blackbox.store.tlog`). Formats: :mod:`blackbox.tlog.receipt`
(receipts and acknowledgements) and :mod:`blackbox.tlog.note` (checkpoints).
"""

from __future__ import annotations

import base64
import logging
import time
from typing import Any

import orjson
from sqlalchemy import Engine

from blackbox.model import now_us
from blackbox.store.ingest import IngestResult
from blackbox.store.tlog import LogError, TransparencyLog
from blackbox.tlog.note import Signer
from blackbox.tlog.receipt import Receipt, make_ack

log = logging.getLogger(__name__)

CHECKPOINT_EVERY_S = 1.0
"""Shortest interval between two checkpoints published on MQTT (a new one only if the log grew)."""
MAX_PROOF_SPAN = 1 << 40
"""Largest tree size a consistency request may name (guards against nonsense, not a real limit)."""


class Notary:
    def __init__(self, engine: Engine, signer: Signer, *, clock: Any = time.monotonic) -> None:
        self.signer = signer
        self.log = TransparencyLog(engine, signer)
        self._clock = clock
        self._published_size = -1
        self._published_at = -1e9

    def ack(self, site: str, gateway: str, result: IngestResult) -> bytes:
        """The acknowledgement of ``result``: a signed receipt with its checkpoint and inclusion proof.

        A rejection of something that named no batch (unreadable bytes) has nothing a gateway could
        match: its acknowledgement stays the plain fields.
        """
        pos = result.log
        if pos is None or result.batch_seq is None or result.hash is None or result.received_at_us is None:
            return orjson.dumps(result.ack())
        receipt = Receipt(self.signer.name, site, gateway, result.batch_seq, result.hash, result.status,
                          result.reason, pos.index, result.received_at_us, pos.size, pos.root, now_us())
        proof = list(pos.proof) if pos.proof is not None else self.log.inclusion(pos.index, pos.size)
        return make_ack(self.signer, receipt, proof)

    def consistency(self, payload: bytes) -> bytes | None:
        """The answer to a gateway's ``{"type": "consistency", "old": m, "new": n}``; ``None`` if malformed."""
        try:
            doc = orjson.loads(payload)
            old, new = doc["old"], doc["new"]
            if doc.get("type") != "consistency" or not all(type(x) is int and 0 <= x < MAX_PROOF_SPAN
                                                           for x in (old, new)):
                raise ValueError("not a consistency request")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            log.warning("ignoring a malformed proof request (%s): %r", exc, payload[:200])
            return None
        answer: dict[str, Any] = {"type": "consistency", "old": old, "new": new}
        try:
            answer["proof"] = [base64.b64encode(h).decode() for h in self.log.consistency(old, new)]
        except LogError as exc:
            answer["error"] = str(exc)
        return orjson.dumps(answer)

    def checkpoint_due(self) -> str | None:
        """A signed checkpoint to publish now (kept in ``tlog_checkpoints``), or ``None``.

        One when the log has grown since the last one (or none was published yet by this process)
        and ``CHECKPOINT_EVERY_S`` has passed.
        """
        now = self._clock()
        if now - self._published_at < CHECKPOINT_EVERY_S:
            return None
        size, _ = self.log.head()
        if size == self._published_size:
            return None
        note = self.log.signed_checkpoint(size, record=True)
        self._published_size, self._published_at = size, now
        return note
