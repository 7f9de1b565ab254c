"""Shared pieces of the joint-control tests: approval keys, signed specifications, tampered variants."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from blackbox.seal import public_key_pem
from blackbox.spec.approval import Role, SignatureFile, add_signature, sign, signature_path, write_signatures
from blackbox.spec.canonical import canonical_sha256

SIGNERS: dict[Role, str] = {"qa": "Li Wei", "regulator": "Wang Fang"}
T_SIGN = 1_795_000_000_000_000


@dataclass
class Approvers:
    qa: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    regulator: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)

    def key(self, role: Role) -> Ed25519PrivateKey:
        return self.qa if role == "qa" else self.regulator

    def pem(self, role: Role) -> str:
        return public_key_pem(self.key(role))

    def write_public(self, folder: Path) -> dict[str, list[str]]:
        """Public keys as files; returns the ``specification`` section's key entries."""
        out: dict[str, list[str]] = {}
        for role in ("qa", "regulator"):
            path = folder / f"{role}.pub.pem"
            path.write_text(self.pem(role), encoding="ascii")
            out[f"{role}_keys"] = [str(path)]
        return out

    def signatures(self, doc: dict[str, Any], roles: tuple[Role, ...] = ("qa", "regulator"),
                   keys: dict[Role, Ed25519PrivateKey] | None = None) -> SignatureFile:
        sha = canonical_sha256(doc)
        sigfile = None
        for i, role in enumerate(roles):
            key = (keys or {}).get(role, self.key(role))
            sigfile = add_signature(sigfile, "specification", sha,
                                    sign("specification", sha, role, key, SIGNERS[role], T_SIGN + i * 60_000_000))
        return sigfile or SignatureFile("specification", sha, ())


def spec_doc(version: int = 1, hh: float = 85.0, reason: str = "first approved limits") -> dict[str, Any]:
    return {"id": "FC-050", "product": "FC-050", "version": version, "reason": reason,
            "parameters": {"EM-01.temperature": [{"phases": ["emulsify"], "l": 70.0, "h": 80.0, "hh": hh}]},
            "rules": [{"type": "threshold", "tag": "EM-01.temperature", "deadband": 0.2}],
            "materials": {"RM-001": {"tolerance_pct": 0.5}},
            "retention": {"shelf_life_months": 36}}


TAMPERED = ("one_signature", "wrong_key", "one_byte_changed")
"""The ways a specification must be refused by the agent and by the store."""


def tampered(approvers: Approvers, how: str, doc: dict[str, Any]) -> tuple[dict[str, Any], SignatureFile]:
    """``doc`` with signatures spoilt ``how``: only QA signed; the regulator's signature made with
    another key; or both signed, then one byte of the document changed."""
    if how == "one_signature":
        return doc, approvers.signatures(doc, ("qa",))
    if how == "wrong_key":
        return doc, approvers.signatures(doc, keys={"regulator": Ed25519PrivateKey.generate()})
    assert how == "one_byte_changed"
    sigs = approvers.signatures(doc)
    changed = copy.deepcopy(doc)
    changed["parameters"]["EM-01.temperature"][0]["hh"] = 86.0  # "85.0" -> "86.0": one byte
    return changed, sigs


def write_spec(path: Path, doc: dict[str, Any], sigs: SignatureFile) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    write_signatures(signature_path(path), sigs)
    return path
