"""What the agent judges against: limits and quality rules from approved specifications only.

:func:`resolve` loads the specifications a configuration names and verifies their signatures with
the keys it pins; :func:`effective_config` puts their limits and rules in place of the configured
ones. Signal-health rules (frozen, stale, bad quality, disconnected) stay in the configuration: they
judge the instruments, not the product.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from blackbox.config import Config, LimitSet, QcRequirement, Rule, SpecificationConfig, TagRule
from blackbox.seal import SealError, load_public_key, public_key_pem
from blackbox.spec.approval import ApprovalError, KeyRing, Role, parse_signatures
from blackbox.spec.diff import diff
from blackbox.spec.model import (
    ApprovedSpec,
    MaterialSpec,
    QcSpec,
    SpecError,
    approve,
    load_approved,
    load_spec,
    parse_spec_data,
)

SIGNAL_HEALTH_RULES = frozenset({"frozen", "stale", "bad_quality", "disconnected"})
"""Rule types that stay in the gateway's configuration when a specification is in force."""

REFUSALS = (SpecError, ApprovalError)
"""What :func:`resolve` raises for a specification that cannot be put in force."""


@dataclass(frozen=True)
class QcBasis:
    """The QC tests required for a product and where they come from (recorded with release and deviations)."""

    tests: tuple[QcSpec | QcRequirement, ...]
    basis: dict[str, Any]


@dataclass(frozen=True)
class InForce:
    """The specifications in force (none: the configured limits, unapproved) and the keys they verified with."""

    specs: tuple[ApprovedSpec, ...] = ()
    ring: KeyRing | None = None
    pins: Mapping[Role, tuple[str, ...]] = field(default_factory=dict)
    """PEM of the pinned public keys, per role (saved with the agent's state)."""

    @property
    def approved(self) -> bool:
        return bool(self.specs)

    @property
    def identity(self) -> tuple[str, ...]:
        return tuple(s.sha256 for s in self.specs)

    def reference(self) -> dict[str, Any]:
        """What ``config.applied`` records about the specifications in force."""
        return {"approved": self.approved, "specifications": [s.reference() for s in self.specs]}

    def state(self) -> dict[str, Any]:
        """Saved with the agent's state: the agent restarts on the last approved specification."""
        if not self.specs:
            return {}
        return {"pins": {r: list(p) for r, p in self.pins.items()},
                "specs": [{"document": s.doc.data, "signatures": s.signatures.to_json()} for s in self.specs]}


def pinned(cfg: SpecificationConfig) -> tuple[KeyRing, dict[Role, tuple[str, ...]]]:
    """The public keys a configuration pins; :class:`SpecError` if one cannot be read."""
    ring = KeyRing()
    pems: dict[Role, tuple[str, ...]] = {}
    keys: tuple[tuple[Role, list[Path]], ...] = (("qa", cfg.qa_keys), ("regulator", cfg.regulator_keys))
    for role, paths in keys:
        texts = []
        for path in paths:
            try:
                pub = load_public_key(Path(path))
            except (SealError, OSError, ValueError) as exc:
                raise SpecError(f"pinned {role} key {path}: {exc}") from None
            ring.add(role, pub)
            texts.append(public_key_pem(pub))
        pems[role] = tuple(texts)
    return ring, pems


def resolve(cfg: Config) -> InForce:
    """The approved specifications ``cfg`` names; raises :class:`SpecError`/:class:`ApprovalError`."""
    if cfg.specification is None:
        return InForce()
    ring, pems = pinned(cfg.specification)
    specs = []
    for path in cfg.specification.files:
        try:
            specs.append(load_approved(Path(path), ring))
        except (SpecError, ApprovalError) as exc:
            raise type(exc)(f"specification {path}: {exc}") from None
    in_force = InForce(tuple(specs), ring, pems)
    effective_config(cfg, in_force)  # checks the specifications fit this gateway
    return in_force


def restore(state: dict[str, Any]) -> InForce:
    """The specifications saved in the agent's state, verified again with the keys saved with them.

    Anything that does not verify is ignored (the state was damaged or edited): no specification.
    """
    if not state.get("specs"):
        return InForce()
    try:
        pubs: list[tuple[Role, Ed25519PublicKey]] = [(role, load_public_key(pem)) for role in ("qa", "regulator")
                                                      for pem in state["pins"][role]]
        ring = KeyRing(pubs)
        specs = tuple(approve(parse_spec_data(s["document"]), parse_signatures(s["signatures"], "specification"),
                              ring) for s in state["specs"])
        return InForce(specs, ring, {r: tuple(state["pins"][r]) for r in ("qa", "regulator")})
    except (SpecError, ApprovalError, SealError, KeyError, TypeError, ValueError):
        return InForce()


def effective_config(cfg: Config, in_force: InForce) -> Config:
    """``cfg`` with its limits and quality rules taken from the specifications in force.

    Without a specification, ``cfg`` itself. Otherwise every tag's limits are exactly those of the
    specifications (a tag they do not name has none), and the rules are the specifications' plus the
    configuration's signal-health rules. With several specifications, each one's limits and rules
    hold only for its product. :class:`SpecError` if a specification names what the gateway lacks.
    """
    if not in_force.specs:
        return cfg
    tags = cfg.tag_index()
    several = len(in_force.specs) > 1
    problems: list[str] = []
    limits: dict[str, list[LimitSet]] = {}
    rules: list[Rule] = [r for r in cfg.rules if r.type in SIGNAL_HEALTH_RULES]
    products: set[str] = set()
    for approved in in_force.specs:
        s = approved.spec
        if s.product in products:
            problems.append(f"two specifications for product {s.product!r}")
        products.add(s.product)
        for tag, sets in s.parameters.items():
            if tag not in tags:
                problems.append(f"{s.ref()}: parameters name tag {tag!r}, which this gateway does not have")
            limits.setdefault(tag, []).extend(
                ls.model_copy(update={"products": [s.product]}) if several and not ls.products else ls for ls in sets)
        for rule in s.rules:
            read: set[str] = {*rule.condition_tags(), *([rule.tag] if isinstance(rule, TagRule) else [])}
            for name in sorted(read - set(tags)):
                problems.append(f"{s.ref()}: rule {rule.alarm_id()} reads tag {name!r}, which this gateway "
                                "does not have")
            rules.append(rule.model_copy(update={"products": [s.product]}) if several and not rule.products
                         else rule)
    seen: set[str] = set()
    for rule in rules:
        if rule.alarm_id() in seen:
            problems.append(f"two rules raise the alarm {rule.alarm_id()!r} (a specification and the "
                            "configuration, or two specifications): give one of them another id")
        seen.add(rule.alarm_id())
    if problems:
        raise SpecError("; ".join(problems))
    sources = [src.model_copy(update={"tags": [t.model_copy(update={"limits": limits.get(t.name, [])})
                                               for t in src.tags]}) for src in cfg.sources]
    return cfg.model_copy(update={"sources": sources, "rules": rules})


def material_specs(in_force: InForce) -> dict[str, MaterialSpec]:
    """Material code -> tolerance, from the specifications in force."""
    out: dict[str, MaterialSpec] = {}
    for approved in in_force.specs:
        out.update(approved.spec.materials)
    return out


def qc_specs(in_force: InForce) -> dict[str, QcBasis]:
    """Product -> the QC tests its approved specification requires before release (only specifications
    that list QC tests: for the others the configuration's ``record.qc`` applies, unapproved)."""
    return {a.spec.product: QcBasis(tuple(a.spec.qc), {"source": "specification", "approved": True, "id": a.spec.id,
                                                       "version": a.spec.version, "sha256": a.sha256})
            for a in in_force.specs if a.spec.qc}


def judged(cfg: Config) -> dict[str, Any]:
    """The limits and quality rules of an effective configuration, as a specification-like document."""
    return {"parameters": {t.name: [ls.model_dump(mode="json", exclude_defaults=True) for ls in t.limits]
                           for t in cfg.tags() if t.limits},
            "rules": [r.model_dump(mode="json", exclude_defaults=True) | {"type": r.type}
                      for r in cfg.rules if r.type not in SIGNAL_HEALTH_RULES]}


def attempted_document(cfg: Config) -> dict[str, Any] | None:
    """The (first) specification document a configuration names, if it parses: for the refusal record."""
    if cfg.specification is None:
        return None
    try:
        return load_spec(Path(cfg.specification.files[0])).data
    except SpecError:
        return None


def refusal_data(reason: str, new_cfg: Config, current: Config, in_force: InForce, when: str,
                 file: Path) -> dict[str, Any]:
    """The ``spec.refused`` event: who tried (the owner of the file, the process), what, and why."""
    attempted = attempted_document(new_cfg)
    if new_cfg.specification is not None and new_cfg.specification.files:
        file = Path(new_cfg.specification.files[0])
    old = in_force.specs[0].doc.data if len(in_force.specs) == 1 else judged(current)
    new = attempted if attempted is not None else (judged(new_cfg) if new_cfg.specification is None else None)
    owner: dict[str, Any] = {"file": str(file)}
    try:
        st = os.stat(file)
        owner |= {"file_owner_uid": st.st_uid, "file_owner": _user(st.st_uid), "file_mtime_us": st.st_mtime_ns // 1000}
    except OSError as exc:
        owner |= {"file_error": exc.strerror or str(exc)}
    return {"reason": reason, "when": when, **owner, "agent_uid": os.getuid(), "agent_user": _user(os.getuid()),
            "agent_pid": os.getpid(),
            "attempted": None if attempted is None else {k: attempted.get(k) for k in ("id", "product", "version")},
            "changes": [c.to_json() for c in diff(old, new)] if new is not None else [],
            "in_force": [s.reference() for s in in_force.specs]}


def _user(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def same_pins(a: InForce, b: InForce) -> bool:
    return {r: set(p) for r, p in a.pins.items()} == {r: set(p) for r, p in b.pins.items()}


__all__ = ["REFUSALS", "InForce", "QcBasis", "effective_config", "material_specs", "pinned", "qc_specs",
           "refusal_data", "resolve", "restore", "same_pins"]


