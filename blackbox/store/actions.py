"""Two-party actions at the store: re-enroll a gateway, revoke a gateway key, purge past retention.

Each needs an action document signed by the site's factory QA and regulator
(:func:`blackbox.store.joint.check_action`). :func:`perform` checks, acts and records the outcome in
one transaction; a refusal is recorded in its own transaction and raised as
:class:`~blackbox.store.joint.JointError`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, delete, func, insert, select, update

from blackbox.config.store import RetentionConfig
from blackbox.model import now_us
from blackbox.seal import key_id, load_public_key, public_key_pem
from blackbox.store.joint import ActionName, ApprovedAction, JointError, check_action, record_action
from blackbox.store.retention import retention_report
from blackbox.store.schema import events, gateway_keys, gateways, reading_chunks, sealed_batches, tag_configs
from blackbox.store.tlog import append_entry


def perform(engine: Engine, data: Any, signatures: Any, expect: ActionName,
            retention: RetentionConfig | None = None, at_us: int | None = None) -> tuple[ApprovedAction, str]:
    """Carry out an approved action; returns it and what was done. :class:`JointError` if refused.

    ``at_us``: the time retention is judged at (now).
    """
    try:
        with engine.begin() as conn:
            approved = check_action(conn, data, signatures, expect=expect)
            detail, extra = _do(conn, engine, approved, retention or RetentionConfig(), at_us)
            record_action(engine, approved.doc.action, data, signatures, "done", detail, conn=conn, extra=extra)
        return approved, detail
    except JointError as exc:
        record_action(engine, expect, data, signatures, "refused", str(exc))
        raise


def _gateway(conn: Connection, site: str, gateway: str) -> int:
    gid = conn.execute(select(gateways.c.id).where(gateways.c.site == site, gateways.c.gateway == gateway)).scalar()
    if gid is None:
        raise JointError(f"the store knows no gateway {site}/{gateway}")
    return int(gid)


def _do(conn: Connection, engine: Engine, a: ApprovedAction, retention: RetentionConfig,
        at_us: int | None) -> tuple[str, dict[str, Any]]:
    """Carry out the action; returns what was done and the fields its log entry adds."""
    doc, gk = a.doc, gateway_keys.c
    gid = _gateway(conn, doc.site, doc.gateway)
    now = now_us()
    # the key changes are logged as the store's own (key.revoked, key.enrolled), exactly as a plain
    # revocation or enrolment is, so the log check holds gateway_keys to them; joint.action says who approved
    if doc.action == "revoke":
        done = conn.execute(update(gateway_keys).where(gk.gateway_id == gid, gk.key_id == doc.key_id,
                                                      gk.revoked_at_us.is_(None)).values(revoked_at_us=now))
        if not done.rowcount:
            raise JointError(f"key {doc.key_id} is not an active key of {doc.site}/{doc.gateway}")
        append_entry(conn, "key.revoked", {"site": doc.site, "gateway": doc.gateway, "key_id": doc.key_id,
                                           "at_us": now}, ref=doc.key_id, at_us=now)
        return f"revoked key {doc.key_id} of {doc.site}/{doc.gateway}", {}
    if doc.action == "reenroll":
        if doc.public_key is None:
            raise RuntimeError("internal error: expected doc.public_key is not None")
        try:
            pub = load_public_key(doc.public_key)
        except Exception as exc:
            raise JointError(f"public_key is not an Ed25519 public key: {exc}") from None
        kid = key_id(pub)
        if conn.execute(select(gk.id).where(gk.gateway_id == gid, gk.key_id == kid)).first() is not None:
            raise JointError(f"key {kid} is already enrolled for {doc.site}/{doc.gateway}")
        pem = public_key_pem(pub)
        conn.execute(insert(gateway_keys).values(gateway_id=gid, key_id=kid, public_key_pem=pem, enrolled_at_us=now))
        append_entry(conn, "key.enrolled", {"site": doc.site, "gateway": doc.gateway, "key_id": kid,
                                            "public_key_pem": pem, "at_us": now}, ref=kid, at_us=now)
        return f"enrolled key {kid} for {doc.site}/{doc.gateway} (re-enrolment)", {}
    if doc.through_batch_seq is None:
        raise RuntimeError("internal error: expected doc.through_batch_seq is not None")
    return _purge(conn, engine, gid, a, doc.through_batch_seq, retention, at_us)


def _purge(conn: Connection, engine: Engine, gid: int, a: ApprovedAction, through: int,
           retention: RetentionConfig, at_us: int | None) -> tuple[str, dict[str, Any]]:
    """Delete sealed batches 1..through of the gateway, if every production batch in them is due."""
    sb = sealed_batches.c
    last = conn.execute(select(sb.batch_seq, sb.hash).where(sb.gateway_id == gid, sb.batch_seq == through)).first()
    if last is None:
        raise JointError(f"batch {through} of {a.doc.site}/{a.doc.gateway} is not stored")
    held = {b for table in (reading_chunks, events) for (b,) in conn.execute(
        select(table.c.batch).where(table.c.gateway_id == gid, table.c.batch_seq <= through,
                                    table.c.batch.is_not(None)).distinct())}
    lines = {ln.batch: ln for ln in retention_report(engine, retention, at_us)
             if ln.site == a.doc.site and ln.gateway == a.doc.gateway}
    not_due = sorted(b for b in held if b not in lines or not lines[b].due)
    if not_due:
        raise JointError(f"not due for deletion (kept until product expiry + retention): {', '.join(not_due[:10])}"
                         + (f" and {len(not_due) - 10} more" if len(not_due) > 10 else ""))
    rc = reading_chunks.c
    n_readings = conn.execute(select(func.coalesce(func.sum(rc.n), 0)).where(
        rc.gateway_id == gid, rc.batch_seq <= through)).scalar_one()
    conn.execute(delete(reading_chunks).where(rc.gateway_id == gid, rc.batch_seq <= through))
    n_events = conn.execute(delete(events).where(events.c.gateway_id == gid, events.c.batch_seq <= through)).rowcount
    last_seq = conn.execute(select(sb.last_seq).where(sb.gateway_id == gid, sb.batch_seq == through)).scalar_one()
    conn.execute(delete(tag_configs).where(tag_configs.c.gateway_id == gid, tag_configs.c.seq <= last_seq))
    n_batches = conn.execute(delete(sealed_batches).where(sb.gateway_id == gid, sb.batch_seq <= through)).rowcount
    return (f"purged sealed batches 1..{through} (last hash {last.hash}) of {a.doc.site}/{a.doc.gateway}: "
            f"{n_batches} batches, {n_readings} readings, {n_events} events; production batches {len(held)}",
            {"through_batch_seq": through, "through_hash": last.hash})
