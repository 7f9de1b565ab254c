"""Retention: records of a production batch are kept at least until the product expires plus a year.

A batch expires its product's shelf life after it ended; its records are due for deletion
``years_after_expiry`` (at least one) later. The shelf life comes from the newest approved
specification of the product that gives one, else from the store's ``retention`` configuration.
Nothing is ever deleted here: a purge is a two-party action (:mod:`blackbox.store.joint`).
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, select

from blackbox.config.store import RetentionConfig
from blackbox.model import now_us
from blackbox.store.joint import stored_specs
from blackbox.store.schema import events, gateways, specifications


@dataclass(frozen=True)
class RetentionLine:
    site: str
    gateway: str
    batch: str
    product: str | None
    ended_at_us: int | None
    """None: the batch has not ended (never due)."""
    keep_until_us: int | None
    due: bool
    basis: str
    """Where the shelf life came from."""


def add_months(ts_us: int, months: int) -> int:
    """``ts_us`` plus calendar months (the day clamped to the month's length), UTC."""
    dt = datetime.fromtimestamp(ts_us / 1e6, tz=UTC)
    total = dt.month - 1 + months
    year, month = dt.year + total // 12, total % 12 + 1
    day = min(dt.day, calendar.monthrange(year, month)[1])
    return int(dt.replace(year=year, month=month, day=day).timestamp() * 1e6)


def _rules(conn: Connection, cfg: RetentionConfig) -> dict[tuple[str, str], tuple[int, str]]:
    """(site, product) -> (months kept after the batch ended, basis) from approved specifications."""
    out: dict[tuple[str, str], tuple[int, str]] = {}
    sites = {s for (s,) in conn.execute(select(specifications.c.site).distinct())}
    for site in sites:
        for stored in stored_specs(conn, site):
            spec = stored.record
            if stored.approved and spec is not None and spec.retention is not None:
                months = spec.retention.shelf_life_months + round(spec.retention.years_after_expiry * 12)
                out[(site, spec.product)] = (months, f"specification {spec.ref()}")
    return out


def retention_report(engine: Engine, cfg: RetentionConfig, at_us: int | None = None) -> list[RetentionLine]:
    """Every production batch the store holds, with the date its records may go and whether it is due."""
    at_us = at_us if at_us is not None else now_us()
    e, g = events.c, gateways.c
    lines: list[RetentionLine] = []
    with engine.connect() as conn:
        by_spec = _rules(conn, cfg)
        rows = conn.execute(select(g.site, g.gateway, e.type, e.ref, e.data, e.ts_us)
                            .join_from(events, gateways, e.gateway_id == g.id)
                            .where(e.type.in_(["batch.started", "batch.ended"]))
                            .order_by(g.site, g.gateway, e.ts_us, e.seq)).all()
    batches: dict[tuple[str, str, str], dict[str, object]] = {}
    for site, gateway, type_, ref, data, ts in rows:
        if ref is None:
            continue
        b = batches.setdefault((site, gateway, ref), {"product": None, "ended": None})
        if type_ == "batch.started" and b["product"] is None:
            product = (data or {}).get("product")
            b["product"] = None if product is None else str(product)
        elif type_ == "batch.ended":
            b["ended"] = ts
    for (site, gateway, batch), b in sorted(batches.items()):
        product = b["product"] if isinstance(b["product"], str) else None
        ended = b["ended"] if isinstance(b["ended"], int) else None
        if product is not None and (site, product) in by_spec:
            months, basis = by_spec[(site, product)]
        elif product is not None and product in cfg.products:
            p = cfg.products[product]
            months, basis = p.shelf_life_months + round(p.years_after_expiry * 12), "store configuration"
        else:
            months = cfg.shelf_life_months + round(cfg.years_after_expiry * 12)
            basis = "store default"
        keep = add_months(ended, months) if ended is not None else None
        lines.append(RetentionLine(site, gateway, batch, product, ended, keep, keep is not None and keep <= at_us,
                                   basis))
    return lines
