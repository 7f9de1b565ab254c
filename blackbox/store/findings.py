"""What ``blackbox store verify`` and the trace's integrity check report: one :class:`Difference` each."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

Severity = Literal["failed", "incomplete"]

CODES: dict[str, tuple[Severity, str]] = {
    "missing_batch": ("incomplete", "a batch_seq below the highest stored one is not stored (a gap in the chain)"),
    "seq_gap": ("incomplete", "record seqs between two consecutive stored batches are in neither"),
    "stored_malformed": ("failed", "the stored bytes of a batch no longer parse or decode"),
    "batch_altered": ("failed", "a sealed_batches column differs from the batch's own header or hash"),
    "wrong_gateway": ("failed", "a stored batch names another site or gateway than the one it is stored under"),
    "unknown_key": ("failed", "a batch is signed by a key that no enrolment or rotation in the chain vouches for"),
    "key_not_in_force": ("failed", "a batch is signed by a key outside the records the chain's rotations allow it"),
    "revoked_key": ("failed", "a batch was received after its signing key was revoked"),
    "bad_signature": ("failed", "a stored batch's signature does not verify"),
    "chain_broken": ("failed", "a batch's prev_hash is not the hash of the stored batch before it"),
    "row_altered": ("failed", "a stored row differs from the row derived from its signed batch"),
    "row_missing": ("failed", "a row derived from a signed batch is not stored"),
    "row_unexplained": ("failed", "a stored row that no stored signed batch yields"),
    "key_altered": ("failed", "a gateway_keys row disagrees with its key or with the rotations in the chain"),
    "gateway_altered": ("failed", "a gateways row disagrees with the batches stored for it"),
    "log_altered": ("failed", "the transparency log's entries do not give its state's or a signed checkpoint's root, "
                    "or an entry's columns disagree with its bytes"),
    "batch_unlogged": ("failed", "a stored batch that the log never recorded as accepted"),
    "batch_missing": ("failed", "a batch the log recorded as accepted is not stored (and was not moved aside as a "
                      "fork)"),
}
"""Every finding code: its severity and what it means (also in docs/store.md)."""


@dataclass(frozen=True, slots=True)
class Difference:
    """One finding: what is wrong, where (table and key), and the stored against the derived value."""

    gateway: str
    code: str
    message: str
    table: str | None = None
    key: str | None = None
    column: str | None = None
    stored: Any = None
    derived: Any = None
    batch_seq: int | None = None

    @property
    def severity(self) -> Severity:
        return CODES[self.code][0]

    def to_dict(self) -> dict[str, Any]:
        return {"severity": self.severity, **asdict(self)}


Emit = Callable[[Difference], None]
