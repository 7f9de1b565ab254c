"""Joint control at the store: approver keys, specifications received, two-party actions.

The store trusts, per site, the public keys of the factory QA and of the regulator that were
enrolled for it (``approver_keys``). With them it verifies every specification a gateway puts in
force (its ``spec.applied`` events) and every two-party action (re-enrolling a gateway, revoking a
gateway key, purging records past retention): an action is carried out only if both a QA and a
regulator signature over its canonical document verify; otherwise it is refused, and either way
it is recorded in ``joint_actions``. Every approver enrolment, specification received and
two-party action (done or refused) is also an entry of the store's transparency log
(:mod:`blackbox.store.tlog`), in the same transaction.
"""

from __future__ import annotations

import getpass
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from pydantic import Field, ValidationError, model_validator
from sqlalchemy import Connection, Engine, insert, select

from blackbox.config.base import Identifier, Strict
from blackbox.model import Event, now_us
from blackbox.seal import SealError, key_id, load_public_key, public_key_pem
from blackbox.seal.spec_record import RecordedSpec, SpecRecordError, recorded_spec
from blackbox.spec.approval import (
    ROLES,
    Approval,
    ApprovalError,
    KeyRing,
    parse_signatures,
)
from blackbox.spec.approval import verify as verify_signatures
from blackbox.spec.canonical import NotCanonical, canonical_sha256
from blackbox.store.schema import approver_keys, gateway_keys, gateways, joint_actions, specifications, tlog_entries
from blackbox.store.tlog import append_entry

log = logging.getLogger("blackbox.store.joint")


class JointError(Exception):
    """An approver key, specification or action the store refuses; the message says why."""


# -- approver keys --------------------------------------------------------------------------------


def enroll_approver(engine: Engine, site: str, role: str, public_key: str | bytes) -> str:
    """Trust ``public_key`` as the ``role`` (qa or regulator) approver of ``site``; returns its key id."""
    if role not in ROLES:
        raise JointError(f"role must be qa or regulator, not {role!r}")
    try:
        pub = load_public_key(public_key)
    except (SealError, ValueError, TypeError) as exc:
        raise JointError(f"not an Ed25519 public key: {exc}") from None
    kid = key_id(pub)
    ak = approver_keys.c
    with engine.begin() as conn:
        row = conn.execute(select(ak.role).where(ak.site == site, ak.key_id == kid)).first()
        if row is not None:
            if row.role != role:
                raise JointError(f"key {kid} is already the {row.role} key of site {site}: the two approvals must "
                                 "come from different keys")
            return kid
        now = now_us()
        conn.execute(insert(approver_keys).values(site=site, role=role, key_id=kid, public_key_pem=public_key_pem(pub),
                                                  enrolled_at_us=now))
        append_entry(conn, "approver.enrolled", {"site": site, "role": role, "key_id": kid,
                                                 "public_key_pem": public_key_pem(pub), "at_us": now},
                     ref=kid, at_us=now)
    log.info("enrolled %s approver key %s for site %s", role, kid, site)
    return kid


def approver_ring(conn: Connection, site: str) -> KeyRing:
    """The approver keys enrolled for ``site``."""
    ak = approver_keys.c
    ring = KeyRing()
    for role, pem in conn.execute(select(ak.role, ak.public_key_pem).where(ak.site == site)):
        ring.add(role, load_public_key(pem))
    return ring


# -- specifications -----------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredSpec:
    """A specification version kept by the store, read through the record format and verified again.

    ``record`` is ``None`` when the document cannot be read at all (``problem`` says why): it is
    still listed, never left out.
    """

    spec_id: str
    product: str
    version: int
    sha256: str
    document: Any
    """The exact document kept (what the signatures are over)."""
    record: RecordedSpec | None
    approvals: tuple[Approval, ...]
    problem: str | None
    """Why it is not approved (unreadable, or signatures that do not verify); ``None``: approved."""
    received_at_us: int
    source: str

    @property
    def approved(self) -> bool:
        return self.problem is None

    @property
    def reason(self) -> str | None:
        return self.record.reason if self.record is not None else None


def _approvals(sha: str, signatures: Any, ring: KeyRing) -> tuple[Approval, ...]:
    """Both approvals of the document with canonical hash ``sha``; :class:`ApprovalError` otherwise."""
    sigfile = parse_signatures(signatures, "specification")
    if not ring:
        raise ApprovalError("no QA or regulator key is enrolled for the site (blackbox store approver enroll)")
    return tuple(verify_signatures("specification", sha, sigfile, ring))


def register_spec(conn: Connection, site: str, data: Any, signatures: Any, source: str,
                  received_at_us: int | None = None, refused: str | None = None) -> str | None:
    """Keep a specification version (once per hash); returns why it is refused, or ``None`` if approved.

    It is read as a record (:func:`blackbox.seal.spec_record.recorded_spec`), not through the
    current specification model: a gateway may have applied a document a newer model refuses.
    ``refused``: a reason the caller already refuses it for (``blackbox store spec add`` checks a
    new file against the current model). A refused one is kept too, marked refused with the
    reason: it is the record of the attempt.
    """
    received_at_us = received_at_us if received_at_us is not None else now_us()
    if not isinstance(data, dict):
        return refused or "the specification is not a document"
    try:
        sha = canonical_sha256(data)
    except NotCanonical as exc:
        return refused or f"the specification is not canonical JSON: {exc}"
    problem = refused
    version = data.get("version")
    header = (str(data.get("id") or "?")[:128], str(data.get("product") or "?")[:128],
              version if isinstance(version, int) and not isinstance(version, bool) else 0)
    try:
        record = recorded_spec(data)
        header = (record.id[:128], record.product[:128], record.version)
        _approvals(sha, signatures, approver_ring(conn, site))
    except (SpecRecordError, ApprovalError) as exc:
        problem = problem or str(exc)
    sp = specifications.c
    if conn.execute(select(sp.id).where(sp.site == site, sp.sha256 == sha)).first() is None:
        conn.execute(insert(specifications).values(
            site=site, spec_id=header[0], product=header[1], version=header[2], sha256=sha, document=data,
            signatures=signatures if isinstance(signatures, dict) else {}, status="refused" if problem else "approved",
            detail=problem, received_at_us=received_at_us, source=source[:64]))
        append_entry(conn, "spec.received", {"site": site, "spec_id": header[0], "version": header[2], "sha256": sha,
                                             "status": "refused" if problem else "approved", "detail": problem,
                                             "source": source[:64], "at_us": received_at_us},
                     ref=sha, at_us=received_at_us)
    if problem:
        log.warning("specification %s v%s (%s…) from %s is not approved: %s", header[0], header[2], sha[:16], source,
                    problem)
    return problem


def register_spec_events(conn: Connection, site: str, gateway: str, events: Iterable[Event],
                         received_at_us: int) -> None:
    """Keep the specification of every ``spec.applied`` event of a stored batch (ingest calls this)."""
    for e in events:
        if e.type == "spec.applied":
            register_spec(conn, site, e.data.get("document"), e.data.get("signatures"), f"{site}/{gateway}",
                          received_at_us)


def _stored(row: Any, ring: KeyRing) -> StoredSpec:
    """One kept version: read as a record, its signatures verified over its exact canonical bytes."""
    kept = {"document": row.document, "received_at_us": row.received_at_us, "source": row.source}
    header = {"spec_id": row.spec_id, "product": row.product, "version": row.version}
    try:
        sha = canonical_sha256(row.document)
    except NotCanonical as exc:
        return StoredSpec(**header, **kept, sha256=row.sha256, record=None, approvals=(),
                          problem=f"the kept document cannot be read: it is not canonical JSON ({exc})")
    try:
        record = recorded_spec(row.document)
    except SpecRecordError as exc:
        return StoredSpec(**header, **kept, sha256=sha, record=None, approvals=(),
                          problem=f"the kept document cannot be read: {exc}")
    header = {"spec_id": record.id, "product": record.product, "version": record.version}
    try:
        approvals = _approvals(sha, row.signatures, ring)
    except ApprovalError as exc:
        return StoredSpec(**header, **kept, sha256=sha, record=record, approvals=(), problem=str(exc))
    return StoredSpec(**header, **kept, sha256=sha, record=record, approvals=approvals, problem=None)


def stored_specs(conn: Connection, site: str, *, sha256: str | None = None,
                 spec_id: str | None = None) -> list[StoredSpec]:
    """Specification versions kept for ``site`` (by hash or id), oldest version first, verified now.

    Every kept version is listed, one that cannot be read too (``record`` ``None``, with the reason).
    """
    sp = specifications.c
    stmt = select(sp.spec_id, sp.product, sp.version, sp.sha256, sp.document, sp.signatures, sp.received_at_us,
                  sp.source).where(sp.site == site)
    if sha256 is not None:
        stmt = stmt.where(sp.sha256 == sha256)
    if spec_id is not None:
        stmt = stmt.where(sp.spec_id == spec_id)
    ring = approver_ring(conn, site)
    return [_stored(row, ring) for row in conn.execute(stmt.order_by(sp.version, sp.received_at_us))]


# -- two-party actions ---------------------------------------------------------------------------


def check_first_enrolment(engine: Engine, site: str, gateway: str, kid: str) -> None:
    """A plain enrolment is only for a gateway's first key (or the same key again).

    Another key for a gateway that has one is a re-enrolment (after key loss): it needs both
    parties (``blackbox store action``). Refused attempts are recorded; raises :class:`JointError`.
    """
    gk, g = gateway_keys.c, gateways.c
    with engine.connect() as conn:
        kids = {k for (k,) in conn.execute(select(gk.key_id).join_from(gateway_keys, gateways, gk.gateway_id == g.id)
                                           .where(g.site == site, g.gateway == gateway))}
    if kids and kid not in kids:
        problem = (f"{site}/{gateway} already has key(s) {', '.join(sorted(kids))}: enrolling another key is a "
                   "re-enrolment, which needs the factory QA's and the regulator's signatures "
                   "(blackbox store action new --action reenroll)")
        record_action(engine, "reenroll", {"site": site, "gateway": gateway, "key_id": kid}, None, "refused", problem)
        raise JointError(problem)


ActionName = Literal["reenroll", "revoke", "purge"]


class ActionDocument(Strict):
    """What both parties sign to let the store re-enroll, revoke or purge."""

    action: ActionName
    site: Identifier
    gateway: Identifier
    reason: str = Field(min_length=1, description="Why (the key loss report, the retention decision...).")
    requested_at: str = Field(min_length=1, description="ISO 8601 UTC; makes each document unique.")
    public_key: str | None = Field(default=None, description="reenroll: the gateway's new public key (PEM).")
    key_id: str | None = Field(default=None, description="revoke: the key id to revoke.")
    through_batch_seq: int | None = Field(default=None, ge=1, description="purge: delete sealed batches 1..this.")

    @model_validator(mode="after")
    def _fields(self) -> ActionDocument:
        need = {"reenroll": "public_key", "revoke": "key_id", "purge": "through_batch_seq"}[self.action]
        if getattr(self, need) is None:
            raise ValueError(f"a {self.action} needs {need}")
        return self


@dataclass(frozen=True)
class ApprovedAction:
    doc: ActionDocument
    data: dict[str, Any]
    sha256: str
    approvals: tuple[Approval, ...]


def check_action(conn: Connection, data: Any, signatures: Any, *, expect: ActionName | None = None) -> ApprovedAction:
    """An action document verified with the approver keys of its site; :class:`JointError` otherwise."""
    try:
        doc = ActionDocument.model_validate(data)
        sha = canonical_sha256(data)
    except (ValidationError, NotCanonical) as exc:
        raise JointError(f"not a valid action document: {exc}") from None
    if expect is not None and doc.action != expect:
        raise JointError(f"the approval is for a {doc.action}, not a {expect}")
    try:
        sigfile = parse_signatures(signatures, "action")
        ring = approver_ring(conn, doc.site)
        if not ring:
            raise ApprovalError(f"no QA or regulator key is enrolled for site {doc.site}")
        approvals = verify_signatures("action", sha, sigfile, ring)
    except ApprovalError as exc:
        raise JointError(f"the {doc.action} is not approved by both parties: {exc}") from None
    used = conn.execute(select(joint_actions.c.id).where(joint_actions.c.sha256 == sha,
                                                         joint_actions.c.outcome == "done")).first()
    if used is not None:
        raise JointError("this approval was already used (each approved action is carried out once)")
    return ApprovedAction(doc, data, sha, tuple(approvals))


@dataclass(frozen=True)
class Purge:
    """A purge carried out, as the transparency log records it."""

    through_batch_seq: int
    through_hash: str
    """Hash of the last purged batch: the first batch kept links to it."""


def purges(conn: Connection) -> dict[tuple[str, str], Purge]:
    """(site, gateway) -> the furthest purge done, from the log's ``joint.action`` entries (not the tables)."""
    e = tlog_entries.c
    out: dict[tuple[str, str], Purge] = {}
    for (data,) in conn.execute(select(e.data).where(e.kind == "joint.action")):
        doc = orjson.loads(bytes(data))
        through, last = doc.get("through_batch_seq"), doc.get("through_hash")
        if doc.get("action") != "purge" or doc.get("outcome") != "done" or not isinstance(through, int):
            continue
        key = (str(doc.get("site")), str(doc.get("gateway")))
        if key not in out or out[key].through_batch_seq < through:
            out[key] = Purge(through, str(last))
    return out


def record_action(engine: Engine, action: str, data: Any, signatures: Any, outcome: Literal["done", "refused"],
                  detail: str | None, conn: Connection | None = None, extra: dict[str, Any] | None = None) -> None:
    """One row of ``joint_actions`` and one ``joint.action`` log entry (with ``extra`` fields)."""
    """One row of ``joint_actions``: what was asked, with which signatures, what the store did and why."""
    d = data if isinstance(data, dict) else {}
    try:
        sha: str | None = canonical_sha256(data)
    except NotCanonical:
        sha = None
    at = now_us()
    row: dict[str, Any] = {
           "at_us": at, "action": action[:32], "site": _opt(d.get("site")), "gateway": _opt(d.get("gateway")),
           "sha256": sha, "document": d or None, "signatures": signatures if isinstance(signatures, dict) else None,
           "outcome": outcome, "detail": detail, "actor": _actor()}
    sigs = signatures.get("signatures") if isinstance(signatures, dict) else None
    entry = {k: row[k] for k in ("action", "site", "gateway", "sha256", "outcome", "detail", "actor", "at_us")} | {
        "signers": [{k: str(s.get(k)) for k in ("role", "key_id", "signer", "signed_at")}
                    for s in sigs or [] if isinstance(s, dict)]} | (extra or {})
    if conn is not None:
        conn.execute(insert(joint_actions).values(**row))
        append_entry(conn, "joint.action", entry, ref=sha, at_us=at)
        return
    with engine.begin() as c:
        c.execute(insert(joint_actions).values(**row))
        append_entry(c, "joint.action", entry, ref=sha, at_us=at)


def _opt(v: Any) -> str | None:
    return None if v is None else str(v)[:128]


def _actor() -> str | None:
    try:
        return getpass.getuser()[:128]
    except (KeyError, OSError):
        return None
