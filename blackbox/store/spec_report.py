"""The trace report's specification section: what a batch was judged against, and who approved it.

The gateway records, in every ``config.applied``, which specifications were in force (their hashes)
and in ``spec.applied`` the signed documents. The store does not take the gateway's word for the
approval: it verifies both signatures again, now, with the QA and regulator keys enrolled for the
site. Anything short of that — no specification, one the store does not hold, signatures that do
not verify — makes the batch *unapproved*, said first in the report.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Connection, select

from blackbox.model import iso
from blackbox.seal.limits import RecordedLimitSet
from blackbox.seal.spec_record import RecordedSpec
from blackbox.spec.approval import ROLE_NAMES, Approval
from blackbox.spec.diff import diff
from blackbox.store.joint import StoredSpec, stored_specs
from blackbox.store.report import ApprovalLine, ChangeLine, SpecificationInfo, SpecRefusal, SpecVersion
from blackbox.store.schema import events


@dataclass(frozen=True)
class AppliedSpec:
    """One configuration in force during the batch, as its ``config.applied`` recorded it."""

    specification: Any
    """Its ``specification`` field: which specifications the gateway says were in force."""
    limits: dict[str, list[RecordedLimitSet]]
    """The limit sets it applied, per tag, as the record holds them (what the trace judges readings by)."""


def _limits_differ(applied: dict[str, list[RecordedLimitSet]], specs: list[RecordedSpec]) -> list[str]:
    """Tags whose applied limits are not exactly the specifications' (as the agent builds and records them).

    Both sides are compared in the record format: neither the set the gateway recorded nor the
    kept specification is read through a current model, which may refuse what an older one applied.
    """
    several = len(specs) > 1
    expected: dict[str, list[RecordedLimitSet]] = {}
    for s in specs:
        for tag, sets in s.parameters.items():
            expected.setdefault(tag, []).extend(
                replace(ls, products=(s.product,)) if several and not ls.products else ls for ls in sets)
    return sorted(t for t in set(applied) | set(expected) if applied.get(t, []) != expected.get(t, []))


def _mismatch(conn: Connection, site: str, applied: AppliedSpec) -> str | None:
    """Why the limits a configuration applied are not those of the specifications it names, if they are not."""
    field = applied.specification
    if not isinstance(field, dict) or field.get("approved") is not True:
        return None
    specs = []
    for entry in field.get("specifications") or []:
        stored = stored_specs(conn, site, sha256=str(entry.get("sha256"))) if isinstance(entry, dict) else []
        if not stored:
            return None  # reported as not held by the store
        if stored[0].record is None:
            return f"specification {stored[0].spec_id} v{stored[0].version} {stored[0].problem}"
        specs.append(stored[0].record)
    differ = _limits_differ(applied.limits, specs)
    if differ:
        return ("the limits the gateway applied are not the specification's for " + ", ".join(differ[:5])
                + (f" and {len(differ) - 5} more" if len(differ) > 5 else ""))
    return None


def _opt_text(value: Any) -> str | None:
    return None if value is None else str(value)


def _approvals(approvals: tuple[Approval, ...]) -> list[ApprovalLine]:
    return [ApprovalLine(role=a.role, role_name=ROLE_NAMES[a.role], signer=a.signer or None, key_id=a.key_id,
                         signed_at_us=a.signed_at_us) for a in approvals]


def _chosen(spec_field: Any, product: str | None) -> dict[str, Any] | None:
    """The approved specification entry of a config.applied for the batch's product, if any."""
    if not isinstance(spec_field, dict) or spec_field.get("approved") is not True:
        return None
    entries = [e for e in spec_field.get("specifications") or [] if isinstance(e, dict)]
    for e in entries:
        if e.get("product") == product:
            return e
    return entries[0] if len(entries) == 1 else None


def _history(versions: list[StoredSpec]) -> list[SpecVersion]:
    out: list[SpecVersion] = []
    previous: dict[str, Any] | None = None
    for v in versions:
        readable = v.record is not None and isinstance(v.document, dict)
        out.append(SpecVersion(
            version=v.version, hash=v.sha256, reason=v.reason if v.reason is not None else "(cannot be read)",
            approved=v.approved, problem=v.problem, approvals=_approvals(v.approvals),
            changes=[ChangeLine(path=c.path, old=c.old, new=c.new) for c in diff(previous, v.document)]
            if previous is not None and readable else []))
        if v.approved and readable:
            previous = v.document
    return out


def _refusals(conn: Connection, labels: dict[int, str], start_us: int, end_us: int | None) -> list[SpecRefusal]:
    e = events.c
    stmt = select(e.gateway_id, e.data, e.ts_us).where(e.gateway_id.in_(list(labels)), e.type == "spec.refused",
                                                        e.ts_us >= start_us)
    if end_us is not None:
        stmt = stmt.where(e.ts_us <= end_us)
    out = []
    for gid, data, ts in conn.execute(stmt.order_by(e.ts_us, e.seq)):
        d = data if isinstance(data, dict) else {}
        who = d.get("file_owner") or (f"uid {d['file_owner_uid']}" if "file_owner_uid" in d else None)
        changes = [ChangeLine(path=str(c.get("path")), old=c.get("old"), new=c.get("new"))
                   for c in d.get("changes") or [] if isinstance(c, dict)]
        out.append(SpecRefusal(ts_us=ts, gateway=labels[gid], reason=d.get("reason"), who=who, changes=changes))
    return out


def specification_info(conn: Connection, labels: dict[int, str], in_force: list[AppliedSpec], product: str | None,
                       start_us: int, end_us: int | None) -> SpecificationInfo:
    """The specification section of a batch's trace report.

    ``in_force`` holds every configuration in force during the batch (first the one at its start);
    ``labels`` the batch's gateways as ``site/gateway``. Approved means: both approvals verify now
    with the site's keys, **and** the limits the gateway applied are exactly the specification's.
    """
    site = next(iter(sorted(labels.values())), "/").split("/", 1)[0]
    refusals = _refusals(conn, labels, start_us, end_us)
    chosen = [_chosen(a.specification, product) for a in in_force]
    mismatch = next((m for a in in_force if (m := _mismatch(conn, site, a)) is not None), None)
    first = chosen[0] if chosen else None
    others = sorted({f"{c.get('id')} v{c.get('version')} ({str(c.get('sha256'))[:16]}…)" for c in chosen[1:]
                     if c is not None and first is not None and c.get("sha256") != first.get("sha256")})
    if first is None:
        why = ("no specification approved by both the factory QA and the regulator was in force: the batch was "
               "judged against the gateway's configured limits")
        return SpecificationInfo(product=product, unapproved=True, why_unapproved=why, statement=why.capitalize(),
                                 refusals=refusals)
    sha = str(first.get("sha256"))
    stored = stored_specs(conn, site, sha256=sha)
    version = first.get("version")  # the gateway's record: shown as recorded, never refused
    base: dict[str, Any] = {"id": _opt_text(first.get("id")), "product": _opt_text(first.get("product")),
                            "version": version if isinstance(version, int) and not isinstance(version, bool) else None,
                            "hash": sha, "refusals": refusals, "changed_during_batch": others}
    history = _history(stored_specs(conn, site, spec_id=str(first.get("id"))))
    label = f"specification {first.get('id')} v{first.get('version')} (sha256 {sha[:16]}…)"
    if not stored:
        why = f"{label} is not held by the store: its approval cannot be checked"
    elif stored[0].record is None:
        why = f"{label} is held by the store, but {stored[0].problem}"
    elif not stored[0].approved:
        why = f"the approval of {label} does not verify with the keys enrolled for site {site}: {stored[0].problem}"
    elif any(c is None for c in chosen[1:]):
        why = "unapproved limits were put in force during the batch"
    elif mismatch is not None:
        why = mismatch
    else:
        approvals = _approvals(stored[0].approvals)
        who = ", ".join(f"{a.role_name} {a.signer or '(key ' + a.key_id + ')'} on {iso(a.signed_at_us)}"
                        for a in approvals)
        return SpecificationInfo(**base, approvals=approvals, unapproved=False,
                                 statement=f"Judged against {label}, approved by {who}.", history=history)
    return SpecificationInfo(**base, unapproved=True, why_unapproved=why,
                             statement=f"Judged against {label}, but {why}.", history=history)
