"""Two-party approval: detached Ed25519 signatures of the factory QA and the regulator.

A document (a specification, a two-party action at the store) is approved by signatures over its
canonical hash. Each signature signs an *approval statement*, the canonical JSON of::

    {"purpose": "blackbox-approval-v1", "kind": <"specification" | "action">, "sha256": <document hash>,
     "role": <"qa" | "regulator">, "key_id": <signer's key id>, "signer": <name>, "signed_at": <ISO 8601 UTC>}

so the role, the signer's name and the time are as much signed as the document. Signatures live
in a sidecar file next to the document (``<document>.sig``, JSON), never inside it: adding a
signature does not change what is signed.

A document is approved when at least one signature of each role verifies with a key known for
that role, and no signature fails: a signature that does not verify, or comes from a key nobody
enrolled, means someone tampered with the file, and the whole approval is refused.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from blackbox.model import iso, now_us
from blackbox.seal import key_id
from blackbox.spec.canonical import canonical_bytes

Role = Literal["qa", "regulator"]
Kind = Literal["specification", "action"]
ROLES: tuple[Role, ...] = ("qa", "regulator")
ROLE_NAMES: dict[str, str] = {"qa": "factory QA", "regulator": "regulator"}
PURPOSE = "blackbox-approval-v1"


class ApprovalError(Exception):
    """A document is not approved (missing, invalid or unknown signatures, or a changed document)."""


@dataclass(frozen=True)
class Signature:
    """One detached signature, as stored in the sidecar file."""

    role: Role
    key_id: str
    signer: str
    signed_at: str
    """ISO 8601 UTC, e.g. ``2026-12-04T16:40:00Z``."""
    signature: str
    """Base64 of the 64-byte Ed25519 signature of the approval statement."""

    @property
    def signed_at_us(self) -> int:
        return _parse_time(self.signed_at)


@dataclass(frozen=True)
class Approval:
    """A signature that verified: who approved, in which role, when."""

    role: Role
    key_id: str
    signer: str
    signed_at_us: int

    def describe(self) -> str:
        return f"{ROLE_NAMES[self.role]} {self.signer or '-'} (key {self.key_id}) on {iso(self.signed_at_us)}"


@dataclass(frozen=True)
class SignatureFile:
    kind: Kind
    sha256: str
    signatures: tuple[Signature, ...]

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "sha256": self.sha256, "signatures": [asdict(s) for s in self.signatures]}


def _parse_time(text: str) -> int:
    try:
        dt = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise ApprovalError(f"signed_at {text!r} is not an ISO 8601 time") from None
    if dt.tzinfo is None:
        raise ApprovalError(f"signed_at {text!r} has no time zone (use ...Z)")
    return int(dt.timestamp() * 1_000_000)


def statement(kind: Kind, sha256: str, role: str, kid: str, signer: str, signed_at: str) -> bytes:
    """The bytes a signature signs (see the module docstring)."""
    return canonical_bytes({"purpose": PURPOSE, "kind": kind, "sha256": sha256, "role": role, "key_id": kid,
                            "signer": signer, "signed_at": signed_at})


def sign(kind: Kind, sha256: str, role: Role, key: Ed25519PrivateKey, signer: str,
         signed_at_us: int | None = None) -> Signature:
    """A signature of ``role`` over the document with hash ``sha256``."""
    if role not in ROLES:
        raise ApprovalError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    kid = key_id(key.public_key())
    when = iso(signed_at_us if signed_at_us is not None else now_us() // 1_000_000 * 1_000_000)
    if when is None:
        raise RuntimeError("internal error: expected when is not None")
    sig = key.sign(statement(kind, sha256, role, kid, signer, when))
    return Signature(role, kid, signer, when, base64.b64encode(sig).decode("ascii"))


def signature_path(document: Path) -> Path:
    """Where a document's signatures live: ``<document>.sig``."""
    return document.with_name(document.name + ".sig")


def read_signatures(path: Path, kind: Kind) -> SignatureFile:
    """The sidecar file at ``path``; :class:`ApprovalError` if missing or malformed."""
    try:
        raw = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise ApprovalError(f"no signatures: {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise ApprovalError(f"cannot read signatures {path}: {exc}") from None
    return parse_signatures(raw, kind, str(path))


def parse_signatures(raw: Any, kind: Kind, name: str = "signatures") -> SignatureFile:
    """A :class:`SignatureFile` from its JSON form; :class:`ApprovalError` if malformed."""
    if not isinstance(raw, dict) or raw.get("kind") != kind or not isinstance(raw.get("sha256"), str):
        raise ApprovalError(f"{name}: not a signature file of a {kind} (needs kind, sha256, signatures)")
    sigs = []
    for i, s in enumerate(raw.get("signatures") or []):
        try:
            if s["role"] not in ROLES:
                raise ValueError(f"role {s['role']!r}")
            sigs.append(Signature(role=s["role"], key_id=str(s["key_id"]), signer=str(s.get("signer", "")),
                                  signed_at=str(s["signed_at"]), signature=str(s["signature"])))
        except (KeyError, TypeError, ValueError) as exc:
            raise ApprovalError(f"{name}: signature {i + 1} is malformed ({exc})") from None
    return SignatureFile(kind, raw["sha256"], tuple(sigs))


def write_signatures(path: Path, sigfile: SignatureFile) -> None:
    """Write the sidecar file (replacing it atomically)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(sigfile.to_json(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def add_signature(sigfile: SignatureFile | None, kind: Kind, sha256: str, sig: Signature) -> SignatureFile:
    """``sigfile`` with ``sig`` added (replacing an earlier signature by the same key).

    Signatures over another hash are dropped: they approved a different document.
    """
    kept = [] if sigfile is None or sigfile.sha256 != sha256 else [s for s in sigfile.signatures
                                                                     if s.key_id != sig.key_id]
    return SignatureFile(kind, sha256, (*kept, sig))


class KeyRing:
    """Public keys per role (the gateway's pins, or the keys enrolled at the store for a site)."""

    def __init__(self, keys: Iterable[tuple[Role, Ed25519PublicKey]] = ()) -> None:
        self._keys: dict[str, tuple[Role, Ed25519PublicKey]] = {}
        for role, pub in keys:
            self.add(role, pub)

    def add(self, role: Role, pub: Ed25519PublicKey) -> str:
        kid = key_id(pub)
        known = self._keys.get(kid)
        if known is not None and known[0] != role:
            raise ApprovalError(f"key {kid} is given both as {ROLE_NAMES[known[0]]} and as {ROLE_NAMES[role]} "
                                "key: the two approvals must come from different keys")
        self._keys[kid] = (role, pub)
        return kid

    def get(self, kid: str) -> tuple[Role, Ed25519PublicKey] | None:
        return self._keys.get(kid)

    def ids(self, role: Role) -> list[str]:
        return sorted(k for k, (r, _) in self._keys.items() if r == role)

    def __bool__(self) -> bool:
        return bool(self._keys)


def verify(kind: Kind, sha256: str, sigfile: SignatureFile, ring: KeyRing) -> list[Approval]:
    """The approvals of the document with hash ``sha256``; :class:`ApprovalError` unless both roles
    approved and every signature verifies with a known key of its role."""
    if sigfile.kind != kind:
        raise ApprovalError(f"the signatures are for a {sigfile.kind}, not a {kind}")
    if sigfile.sha256 != sha256:
        raise ApprovalError(f"the {kind} changed after it was signed: its canonical hash is {sha256[:16]}…, "
                            f"the signatures are over {sigfile.sha256[:16]}…")
    problems: list[str] = []
    approvals: list[Approval] = []
    for s in sigfile.signatures:
        who = f"{ROLE_NAMES[s.role]} signature by key {s.key_id}"
        known = ring.get(s.key_id)
        if known is None:
            known_ids = ", ".join(ring.ids(s.role)) or "none"
            problems.append(f"{who}: not a known {ROLE_NAMES[s.role]} key (known: {known_ids})")
            continue
        if known[0] != s.role:
            problems.append(f"{who}: that key is a {ROLE_NAMES[known[0]]} key")
            continue
        try:
            raw = base64.b64decode(s.signature, validate=True)
            known[1].verify(raw, statement(kind, sha256, s.role, s.key_id, s.signer, s.signed_at))
            approvals.append(Approval(s.role, s.key_id, s.signer, s.signed_at_us))
        except (InvalidSignature, binascii.Error, ValueError):
            problems.append(f"{who}: the signature does not verify")
    for role in ROLES:
        if not any(a.role == role for a in approvals):
            problems.append(f"no valid {ROLE_NAMES[role]} signature")
    if problems:
        raise ApprovalError("; ".join(problems))
    return approvals
