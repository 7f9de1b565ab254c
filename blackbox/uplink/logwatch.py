"""The gateway's watch on the store's transparency log: every tree head it adopts extends the last.

The gateway keeps the latest checkpoint it has verified (in the buffer, across restarts). Each
receipt brings a signed checkpoint; a newer one is adopted only once the store has answered a
consistency proof from the kept one to it, and one of the kept size must have the kept root. An
older one (another store worker answered with the head it had) is proven a prefix of the kept one.
A proof that fails means the store's log was truncated or rewritten: :attr:`LogWatch.inconsistent`
counts it and the forwarder raises an alarm. Intermediate heads seen while a proof is pending are
skipped: only the largest is proven (a chain of proven extensions covers the rest).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from blackbox.tlog.merkle import ProofError, verify_consistency
from blackbox.tlog.note import Checkpoint


@dataclass(frozen=True)
class ProofRequest:
    """Ask the store for the consistency proof from tree size ``old`` to ``new``."""

    old: int
    new: int

    def message(self) -> dict[str, Any]:
        return {"type": "consistency", "old": self.old, "new": self.new}


class LogWatch:
    def __init__(self, latest: tuple[Checkpoint, str] | None = None) -> None:
        self.latest = latest
        """The newest checkpoint proven consistent with everything adopted before, with its signed note."""
        self.inconsistent = 0
        self.last_problem: str | None = None
        self._pending: dict[int, tuple[Checkpoint, str]] = {}
        self._asked: tuple[ProofRequest, Checkpoint, str] | None = None

    def seen(self, checkpoint: Checkpoint, note: str) -> tuple[Checkpoint, str] | None:
        """Note a verified checkpoint; returns it if it was adopted at once (the first one ever).

        A checkpoint of the kept size with another root is inconsistent at once.
        """
        if self.latest is None:
            self.latest = (checkpoint, note)
            return self.latest
        kept = self.latest[0]
        if checkpoint.size == kept.size:
            if checkpoint.root != kept.root:
                self._fail(f"two tree heads of size {kept.size} with different roots")
            return None
        if len(self._pending) < 64 or checkpoint.size > max(self._pending):
            self._pending[checkpoint.size] = (checkpoint, note)
        return None

    def next_request(self) -> ProofRequest | None:
        """The proof to ask for now (one at a time), or ``None``; call again after each answer."""
        if self._asked is not None or self.latest is None or not self._pending:
            return None
        kept = self.latest[0]
        newer = [s for s in self._pending if s > kept.size]
        size = max(newer) if newer else max(self._pending)
        for s in [s for s in self._pending if kept.size < s < size]:  # skipped: the largest is proven
            del self._pending[s]
        checkpoint, note = self._pending.pop(size)
        request = ProofRequest(kept.size, size) if size > kept.size else ProofRequest(size, kept.size)
        self._asked = (request, checkpoint, note)
        return request

    def answer(self, doc: dict[str, Any]) -> tuple[Checkpoint, str] | None:
        """Check the store's answer; returns the newly adopted checkpoint, if one was."""
        if self._asked is None or self.latest is None:
            return None
        request, checkpoint, note = self._asked
        if (doc.get("old"), doc.get("new")) != (request.old, request.new):
            return None  # not the answer to our question (an old one, or another gateway's)
        self._asked = None
        kept = self.latest[0]
        old, new = (kept, checkpoint) if request.new == checkpoint.size else (checkpoint, kept)
        try:
            proof = [base64.b64decode(h, validate=True) for h in doc.get("proof") or []]
            if doc.get("error"):
                raise ProofError(str(doc["error"])[:200])
            verify_consistency(old.size, new.size, old.root, new.root, proof)
        except (ProofError, TypeError, ValueError, binascii.Error) as exc:
            self._fail(f"tree head {new.size} is not consistent with tree head {old.size}: {exc}")
            return None
        if new is checkpoint:
            self.latest = (checkpoint, note)
            return self.latest
        return None

    def retry(self) -> None:
        """The question went unanswered (lost, or the store was away): ask again on the next call."""
        if self._asked is not None:
            _, checkpoint, note = self._asked
            self._pending.setdefault(checkpoint.size, (checkpoint, note))
            self._asked = None

    def _fail(self, problem: str) -> None:
        self.inconsistent += 1
        self.last_problem = problem
