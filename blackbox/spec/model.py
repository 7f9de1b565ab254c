"""Specifications: the quality-relevant configuration of one product, versioned and co-signed.

A specification file (YAML) holds, for one product: the standard ranges and warning zones of each
parameter per phase (limit sets, as a tag's ``limits``), the alarm and early-warning rules with
their parameters, the material tolerances, and how long records are kept; with an id, a version
and the reason for the change. What is signed is its canonical form
(:mod:`blackbox.spec.canonical`) — comments and layout of the YAML do not matter.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from blackbox.config.base import Identifier, Strict
from blackbox.config.rules import LIMIT_RULES, Rule
from blackbox.config.sources import LimitSet
from blackbox.spec.approval import Approval, ApprovalError, KeyRing, SignatureFile, read_signatures, signature_path
from blackbox.spec.approval import verify as verify_signatures
from blackbox.spec.canonical import NotCanonical, canonical_sha256


class MaterialSpec(Strict):
    """Tolerance of a material's weighing (per material code), overriding the recipe's tolerance tag."""

    tolerance_pct: float | None = Field(default=None, ge=0, description="Allowed |actual - target| in % of target.")
    tolerance: float | None = Field(default=None, ge=0, description="Allowed |actual - target|, in the "
                                    "weighing's unit.")

    @model_validator(mode="after")
    def _one(self) -> MaterialSpec:
        if (self.tolerance is None) == (self.tolerance_pct is None):
            raise ValueError("give exactly one of tolerance and tolerance_pct")
        return self


class QcSpec(Strict):
    """A QC test every batch of the product needs before release, with its specification."""

    test: str = Field(min_length=1, max_length=128, description="Test name, as the analyst enters it (e.g. pH).")
    low: float | None = Field(default=None, description="Lowest value within specification.")
    high: float | None = Field(default=None, description="Highest value within specification.")
    eng_unit: str | None = Field(default=None, description="Unit of the value (informative).")

    @model_validator(mode="after")
    def _ordered(self) -> QcSpec:
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"low {self.low} is above high {self.high}")
        return self


class RetentionSpec(Strict):
    """How long the store must keep the records of a batch of this product."""

    shelf_life_months: int = Field(gt=0, description="Shelf life (expiry = end of the batch + this).")
    years_after_expiry: float = Field(default=1.0, ge=1, description="Years kept after expiry (at least 1).")


class Specification(Strict):
    id: Identifier = Field(description="Specification id, e.g. FC-050.")
    product: str = Field(min_length=1, description="Product code the specification is for.")
    version: int = Field(ge=1, description="Version; each approved change raises it.")
    reason: str = Field(min_length=1, description="Why this version exists (the change and its justification).")
    supersedes: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$",
                                   description="Canonical hash of the version this one replaces.")
    parameters: dict[str, list[LimitSet]] = Field(default_factory=dict, description="Tag -> limit sets in force "
                                                  "(standard range l..h, warning/action zones ll, hh, per phase).")
    rules: list[Rule] = Field(default_factory=list, description="Alarm and early-warning rules.")
    materials: dict[str, MaterialSpec] = Field(default_factory=dict, description="Material code -> tolerance.")
    qc: list[QcSpec] = Field(default_factory=list, description="QC tests required before release, with their "
                             "specifications (a test without low/high needs the analyst's verdict).")
    retention: RetentionSpec | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Specification:
        seen: set[str] = set()
        for rule in self.rules:
            tag = getattr(rule, "tag", None)
            if rule.type in LIMIT_RULES and tag not in self.parameters:
                raise ValueError(f"a {rule.type} rule on {tag!r} needs limits for it under parameters")
            alarm = rule.alarm_id()
            if alarm in seen:
                raise ValueError(f"two rules raise the alarm {alarm!r}: give one of them another id")
            seen.add(alarm)
        tests = [q.test for q in self.qc]
        if len(tests) != len(set(tests)):
            raise ValueError("qc lists a test twice: " + ", ".join(sorted({t for t in tests if tests.count(t) > 1})))
        return self

    def ref(self) -> str:
        return f"{self.id} v{self.version}"


class SpecError(Exception):
    """A specification file that cannot be used; the message lists every problem."""


@dataclass(frozen=True)
class SpecDocument:
    """A parsed, validated specification and its canonical hash."""

    spec: Specification
    data: dict[str, Any]
    sha256: str
    path: Path | None = None


def parse_spec_data(data: Any, name: str = "<specification>", text: str | None = None) -> SpecDocument:
    """Validate a parsed document; :class:`SpecError` listing every problem (with lines if ``text``)."""
    if not isinstance(data, dict):
        raise SpecError(f"{name}: a specification must be a YAML mapping")
    try:
        sha = canonical_sha256(data)
    except NotCanonical as exc:
        raise SpecError(f"{name}: {exc}") from None
    try:
        spec = Specification.model_validate(data)
    except ValidationError as exc:
        import yaml  # only to parse: the running agent holds validated specifications, not YAML

        from blackbox.config.yamldoc import line_index, nearest_line

        node = yaml.compose(text, Loader=yaml.SafeLoader) if text else None
        lines = line_index(node) if node is not None else {}
        msgs = []
        for err in exc.errors(include_url=False):
            loc = tuple(err["loc"])
            line = nearest_line(lines, loc) if lines else None
            where = f"{name}:{line}" if line else name
            msgs.append(f"{where}: {'.'.join(str(p) for p in loc) or '<root>'}: {err['msg']}")
        raise SpecError("\n".join(msgs)) from None
    return SpecDocument(spec, data, sha)


def parse_spec(text: str, name: str = "<specification>") -> SpecDocument:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{name}: not valid YAML: {exc}") from None
    return parse_spec_data(data, name, text)


def load_spec(path: Path) -> SpecDocument:
    """Read and validate a specification file; :class:`SpecError`."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not UTF-8 text: {exc}") from None
    doc = parse_spec(text, str(path))
    return SpecDocument(doc.spec, doc.data, doc.sha256, path)


@dataclass(frozen=True)
class ApprovedSpec:
    """A specification whose QA and regulator signatures verified."""

    doc: SpecDocument
    signatures: SignatureFile
    approvals: tuple[Approval, ...]

    @property
    def spec(self) -> Specification:
        return self.doc.spec

    @property
    def sha256(self) -> str:
        return self.doc.sha256

    def reference(self) -> dict[str, Any]:
        """What ``config.applied`` records of it: identity and approvals."""
        s = self.spec
        return {"id": s.id, "product": s.product, "version": s.version, "sha256": self.sha256,
                "approvals": [{"role": a.role, "key_id": a.key_id, "signer": a.signer,
                               "signed_at_us": a.signed_at_us} for a in self.approvals]}

    def record(self) -> dict[str, Any]:
        """The whole signed specification (the ``spec.applied`` event): anyone can re-verify it."""
        return {**self.reference(), "document": self.doc.data, "signatures": self.signatures.to_json()}


def approve(doc: SpecDocument, sigfile: SignatureFile, ring: KeyRing) -> ApprovedSpec:
    """``doc`` approved by ``sigfile`` under ``ring``; :class:`ApprovalError` otherwise."""
    approvals = verify_signatures("specification", doc.sha256, sigfile, ring)
    return ApprovedSpec(doc, sigfile, tuple(approvals))


def load_approved(path: Path, ring: KeyRing) -> ApprovedSpec:
    """The specification at ``path`` with its signatures (``<path>.sig``), verified.

    Raises :class:`SpecError` (unusable file) or :class:`ApprovalError` (not approved).
    """
    doc = load_spec(path)
    return approve(doc, read_signatures(signature_path(path), "specification"), ring)


__all__ = ["ApprovalError", "ApprovedSpec", "MaterialSpec", "QcSpec", "RetentionSpec", "SpecDocument", "SpecError",
           "Specification", "approve", "load_approved", "load_spec", "parse_spec", "parse_spec_data"]
