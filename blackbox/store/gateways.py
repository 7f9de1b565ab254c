"""Per-gateway overview of the store (status, chain, keys, rejections) and batch export.

The overview answers an operator's first questions: is the gateway online, how far has its chain
arrived, are batches missing, which keys sign for it (and since when), what was refused. Export
writes the exact wire bytes of stored batches to files that ``blackbox verify-batch`` (or the
``openssl`` recipe of docs/batch-format.md) checks without the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, func, select

from blackbox.store.schema import events, gateway_keys, gateways, reading_chunks, rejections, sealed_batches
from blackbox.store.verify_log import logged_but_missing


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    enrolled_by: str
    enrolled_at_us: int
    rotated_from: str | None
    valid_from_seq: int | None
    valid_to_seq: int | None
    revoked_at_us: int | None


@dataclass(frozen=True)
class GatewayInfo:
    site: str
    gateway: str
    status: str | None
    status_at_us: int | None
    status_reason: str | None
    last_batch_at_us: int | None
    batches: int
    highest_batch_seq: int | None
    missing_batches: int
    """Batch numbers below the highest one that are not stored (gaps); the highest is the highest stored
    or, if newer batches the transparency log accepted are gone, the highest of those."""
    rejections: int
    keys: list[KeyInfo] = field(default_factory=list)
    records_signed: int = 0
    """Readings and events the stored batches hold, by their headers."""
    records_stored: int = 0
    """Readings and events rows stored for the gateway: fewer than signed means rows were deleted
    (``blackbox store verify`` says which)."""


def gateway_overview(engine: Engine) -> list[GatewayInfo]:
    """Every gateway the store knows, sorted by site and gateway."""
    sb, gk, rj = sealed_batches.c, gateway_keys.c, rejections.c
    with engine.connect() as conn:
        chains = {gid: (n, hi, signed) for gid, n, hi, signed in conn.execute(
            select(sb.gateway_id, func.count(), func.max(sb.batch_seq), func.sum(sb.n_readings + sb.n_events))
            .group_by(sb.gateway_id))}
        stored: dict[int, int] = {}
        rc = reading_chunks.c
        for stmt in (select(rc.gateway_id, func.sum(rc.n)).group_by(rc.gateway_id),
                     select(events.c.gateway_id, func.count()).group_by(events.c.gateway_id)):
            for gid, n in conn.execute(stmt):
                stored[gid] = stored.get(gid, 0) + int(n)
        refused = {(site, gw): n for site, gw, n in conn.execute(
            select(rj.site, rj.gateway, func.count()).group_by(rj.site, rj.gateway))}
        keys: dict[int, list[KeyInfo]] = {}
        for row in conn.execute(select(gateway_keys).order_by(gk.gateway_id, gk.enrolled_at_us, gk.id)):
            keys.setdefault(row.gateway_id, []).append(KeyInfo(
                row.key_id, row.enrolled_by, row.enrolled_at_us, row.rotated_from, row.valid_from_seq,
                row.valid_to_seq, row.revoked_at_us))
        gone = logged_but_missing(conn)
        out = []
        for g in conn.execute(select(gateways).order_by(gateways.c.site, gateways.c.gateway)):
            n, hi, signed = chains.get(g.id, (0, None, 0))
            # the newest batches deleted leave no gap below the highest stored one: the log knows them
            newest_gone = [k for k in gone.get(f"{g.site}/{g.gateway}", []) if hi is None or k > hi]
            if newest_gone:
                hi = max(newest_gone)
            out.append(GatewayInfo(
                site=g.site, gateway=g.gateway, status=g.status, status_at_us=g.status_at_us,
                status_reason=g.status_reason, last_batch_at_us=g.last_batch_at_us, batches=n,
                highest_batch_seq=hi, missing_batches=(hi - n) if hi is not None else 0,
                rejections=refused.get((g.site, g.gateway), 0), keys=keys.get(g.id, []),
                records_signed=int(signed or 0), records_stored=stored.get(g.id, 0)))
    return out


def export_batches(engine: Engine, site: str, gateway: str, out_dir: Path, *, first: int | None = None,
                   last: int | None = None) -> list[Path]:
    """Write stored batches of one gateway, exactly as received, as ``<site>_<gateway>_<batch_seq>.bbx``."""
    sb = sealed_batches.c
    stmt = (select(sb.batch_seq, sb.wire).join(gateways, gateways.c.id == sb.gateway_id)
            .where(gateways.c.site == site, gateways.c.gateway == gateway).order_by(sb.batch_seq))
    if first is not None:
        stmt = stmt.where(sb.batch_seq >= first)
    if last is not None:
        stmt = stmt.where(sb.batch_seq <= last)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with engine.connect() as conn:
        for batch_seq, wire in conn.execute(stmt):
            path = out_dir / f"{site}_{gateway}_{batch_seq:010d}.bbx"
            path.write_bytes(bytes(wire))
            written.append(path)
    return written
