"""Golden batches: the reference occurrence that QA chose for a product at a site, with its history.

A choice is a row of ``golden_batches`` (site, product, batch, occurrence and its start, who, role,
when, why). A new choice or a withdrawal adds a row; nothing is updated or deleted, so the table is
its own audit trail. The current choice of a (site, product) is its newest row; a row without a
batch is a withdrawal (the comparison goes back to the last batches of the product).

The occurrence is pinned by its start time as well as its number: a batch number reused by a PLC
is two occurrences, and the choice must keep naming the run QA looked at.

Who may choose: factory QA of that site, or an administrator (API, pages, or ``blackbox store
golden`` run as the store's owner). The web process writes choices through its write engine, as it
writes the access log; every read goes through the read-only one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from sqlalchemy import Engine, func, insert, select

from blackbox.model import now_us
from blackbox.store.schema import golden_batches
from blackbox.web import queries
from blackbox.web.auth import Principal

Mode = Literal["auto", "golden", "last"]
MODES: tuple[Mode, ...] = ("auto", "golden", "last")


class GoldenError(ValueError):
    """A choice that cannot be made or used (an occurrence without a product, nothing to withdraw)."""


@dataclass(frozen=True)
class GoldenChoice:
    site: str
    product: str
    batch: str | None
    """None: a withdrawal."""
    occurrence: int | None
    started_at_us: int | None
    chosen_at_us: int
    chosen_by: str
    role: str
    reason: str | None

    def public(self) -> dict[str, Any]:
        return asdict(self)


def may_choose(principal: Principal, site: str) -> bool:
    """Factory QA of the site, or an administrator."""
    return principal.role == "admin" or (principal.role == "factory_qa" and principal.may_see_site(site))


def _add(engine: Engine, choice: GoldenChoice) -> GoldenChoice:
    with engine.begin() as conn:
        conn.execute(insert(golden_batches).values(**asdict(choice)))
    return choice


def choose(engine: Engine, occ: queries.Occurrence, *, by: str, role: str, reason: str | None = None
           ) -> GoldenChoice:
    """Make ``occ`` the golden batch of its product at its site (the previous choice stays as history)."""
    if occ.product is None:
        raise GoldenError(f"batch {occ.batch} names no product: it cannot be a product's golden batch")
    return _add(engine, GoldenChoice(occ.site, occ.product, occ.batch, occ.occurrence, occ.started_at_us,
                                     now_us(), by, role, reason or None))


def withdraw(engine: Engine, site: str, product: str, *, by: str, role: str, reason: str | None = None
             ) -> GoldenChoice:
    """Withdraw the current choice: comparisons of the product go back to its last batches."""
    if current(engine, site, product) is None:
        raise GoldenError(f"no golden batch is chosen for product {product} at site {site}")
    return _add(engine, GoldenChoice(site, product, None, None, None, now_us(), by, role, reason or None))


def _choice(row: Any) -> GoldenChoice:
    return GoldenChoice(row.site, row.product, row.batch, row.occurrence, row.started_at_us, row.chosen_at_us,
                        row.chosen_by, row.role, row.reason)


def history(engine: Engine, *, sites: Sequence[str] | None, site: str | None = None, product: str | None = None
            ) -> list[GoldenChoice]:
    """Every choice and withdrawal, newest first; ``sites`` is what the caller may see (None: all)."""
    g = golden_batches.c
    conds: list[Any] = []
    if sites is not None:
        conds.append(g.site.in_(list(sites)))
    if site is not None:
        conds.append(g.site == site)
    if product is not None:
        conds.append(g.product == product)
    with engine.connect() as conn:
        rows = conn.execute(select(golden_batches).where(*conds).order_by(g.id.desc())).all()
    return [_choice(r) for r in rows]


def current_choices(engine: Engine, *, sites: Sequence[str] | None, site: str | None = None) -> list[GoldenChoice]:
    """The golden batch in force for each (site, product) that has one, by site and product."""
    g = golden_batches.c
    newest = select(func.max(g.id)).group_by(g.site, g.product)
    if sites is not None:
        newest = newest.where(g.site.in_(list(sites)))
    if site is not None:
        newest = newest.where(g.site == site)
    with engine.connect() as conn:
        rows = conn.execute(select(golden_batches).where(g.id.in_(newest.scalar_subquery()), g.batch.is_not(None))
                            .order_by(g.site, g.product)).all()
    return [_choice(r) for r in rows]


def current(engine: Engine, site: str, product: str) -> GoldenChoice | None:
    """The golden batch in force for a product at a site, or None (never chosen, or withdrawn)."""
    g = golden_batches.c
    with engine.connect() as conn:
        row = conn.execute(select(golden_batches).where(g.site == site, g.product == product)
                           .order_by(g.id.desc()).limit(1)).first()
    return None if row is None or row.batch is None else _choice(row)


def resolve(engine: Engine, choice: GoldenChoice) -> queries.Occurrence:
    """The chosen occurrence, found by its start time (NotFound if the store no longer has it)."""
    if choice.batch is None:
        raise RuntimeError("internal error: a withdrawal has no occurrence to resolve")
    for occ in queries.occurrences(engine, choice.site, choice.batch):
        if occ.started_at_us == choice.started_at_us:
            return occ
    raise queries.NotFound(choice.batch)


# -- what a comparison compares with ---------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    kind: Literal["golden", "last", "batch"]
    """``golden``: the product's stored golden batch; ``last``: the last N batches; ``batch``: a
    batch named for this one comparison."""
    occurrences: list[queries.Occurrence]
    golden: GoldenChoice | None
    """The product's golden batch in force, used or not (the page offers it)."""
    spread: list[queries.Occurrence]
    """For a single reference batch: the product's last batches, whose variation sets the envelope's
    width around it (one batch has no standard deviation)."""


def reference_for(engine: Engine, occ: queries.Occurrence, *, mode: Mode = "auto", last: int = 10,
                  batch: str | None = None, batch_occurrence: int | None = None) -> Reference:
    """What ``occ`` is compared with: a batch named for this comparison, else (``auto``) the product's
    golden batch when one is chosen, else its last ``last`` finished batches.

    ``mode="golden"`` without a golden batch raises :class:`GoldenError`; an occurrence that cannot
    be found raises ``queries.NotFound``. The caller has checked that ``batch`` is at ``occ``'s site.
    """
    gold = current(engine, occ.site, occ.product) if occ.product is not None else None
    if batch is not None:
        single = queries.find_occurrence(engine, occ.site, batch, batch_occurrence)
        return Reference("batch", [single], gold, _spread(engine, occ, single, last))
    if mode == "golden" and gold is None:
        raise GoldenError(f"no golden batch is chosen for product {occ.product} at site {occ.site}")
    if mode != "last" and gold is not None:
        single = resolve(engine, gold)
        return Reference("golden", [single], gold, _spread(engine, occ, single, last))
    return Reference("last", queries.reference_occurrences(engine, occ, last=last), gold, [])


def _spread(engine: Engine, occ: queries.Occurrence, single: queries.Occurrence, last: int) -> list[queries.Occurrence]:
    """The last batches of the product before ``occ``, without the single reference itself."""
    return [o for o in queries.reference_occurrences(engine, occ, last=last + 1)
            if (o.batch, o.occurrence) != (single.batch, single.occurrence)][:last]
