"""Genealogy after ISA-95: supplier lot → material lot → bulk batches → finished-goods lots, and back.

The graph is read from the events the store derived from the signed records, one hop at a time,
each hop one query through the ``events`` (ref, type) or (batch, type) index for the whole
frontier — so a walk reads the rows of the graph it returns, not every lot event of the store:

| hop | forward (index) | reverse (index) |
|---|---|---|
| supplier lot → material lot | ``lot.supplied`` by ref = supplier lot | ``lot.registered`` by ref = lot |
| material lot → bulk batch | ``material.consumed`` by ref = lot | ``material.consumed`` by batch |
| bulk batch → finished lot | ``lot.produced`` by batch | ``lot.produced`` by ref = finished lot |
| packaging lot → finished lot | ``packaging.consumed`` by ref = lot | ``lot.produced`` by ref = finished lot |

``lot.supplied`` and ``packaging.consumed`` are recorded by the gateway with ``lot.registered`` and
``lot.produced`` for exactly this. Every row is limited to the gateways of the sites the caller
may see (``sites``; None: all) before the walk goes on, so a viewer of one site never learns of
another's lots, nor of a link through them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import ColumnElement, Connection, Engine, select

from blackbox.store.schema import events, gateways

NodeKind = Literal["supplier_lot", "lot", "batch", "finished_lot"]
Direction = Literal["forward", "reverse"]
CHUNK = 500
"""Ids per ``IN (…)`` list (SQLite and PostgreSQL both take far more; this keeps statements small)."""
MAX_HOPS = 16
"""The graph is at most four hops deep; more means a cycle in bad data, and the walk stops."""


class Node(BaseModel):
    model_config = ConfigDict(frozen=True)
    kind: NodeKind
    id: str
    detail: dict[str, Any] = Field(default_factory=dict)


class Link(BaseModel):
    model_config = ConfigDict(frozen=True)
    source: str = Field(description="id of the upstream node")
    target: str = Field(description="id of the downstream node")
    relation: str = Field(description="supplied_as, consumed_in, filled_into, packaged_into")
    quantity: float | None = None
    unit: str | None = None
    site: str | None = None
    gateway: str | None = None
    ts_us: int | None = None


class Genealogy(BaseModel):
    model_config = ConfigDict(frozen=True)
    start: str
    direction: Direction
    nodes: list[Node]
    links: list[Link]


def supplier_key(supplier: Any, supplier_lot: Any) -> str:
    """The node id of a supplier lot: ``supplier:number``."""
    return f"{supplier or '?'}:{supplier_lot}"


def genealogy(engine: Engine, start: str, direction: Direction, sites: Sequence[str] | None = None) -> Genealogy:
    """Every node reachable from ``start`` (any lot id, supplier lot or batch) in ``direction``, seen from
    ``sites`` (None: every site)."""
    with engine.connect() as conn:
        return _Walk(conn, sites).run(start, direction)


class _Walk:
    def __init__(self, conn: Connection, sites: Sequence[str] | None) -> None:
        self.conn = conn
        self.gids: set[int] | None = None
        self.labels: dict[int, tuple[str, str]] = {}
        if sites is not None:
            g = gateways.c
            rows = conn.execute(select(g.id, g.site, g.gateway).where(g.site.in_(list(sites)))).all()
            self.gids = {r.id for r in rows}
            self.labels = {r.id: (r.site, r.gateway) for r in rows}
        self.kinds: dict[str, NodeKind] = {}
        self.details: dict[str, dict[str, Any]] = {}
        self.links: dict[tuple[str, str, str, int | None], Link] = {}

    # -- queries -----------------------------------------------------------------------------------

    def _rows(self, event_type: str, column: str, values: Iterable[str]) -> list[Any]:
        """Events of ``event_type`` whose indexed ``column`` (ref or batch) is one of ``values``."""
        e = events.c
        key: ColumnElement[Any] = e.ref if column == "ref" else e.batch
        out: list[Any] = []
        todo = sorted(set(values))
        for i in range(0, len(todo), CHUNK):
            stmt = select(e.gateway_id, e.type, e.ref, e.batch, e.data, e.ts_us).where(
                key.in_(todo[i:i + CHUNK]), e.type == event_type)
            out += self.conn.execute(stmt.order_by(e.ts_us, e.gateway_id, e.seq)).all()
        # The site filter is applied here, not in SQL: given ``gateway_id IN (…)`` the planners prefer the
        # primary key (gateway_id, seq), which reads every event of those gateways, to the lookup index.
        return out if self.gids is None else [r for r in out if r.gateway_id in self.gids]

    def _where(self, gid: int) -> dict[str, Any]:
        if gid not in self.labels:
            g = gateways.c
            row = self.conn.execute(select(g.site, g.gateway).where(g.id == gid)).one()
            self.labels[gid] = (row.site, row.gateway)
        site, gateway = self.labels[gid]
        return {"site": site, "gateway": gateway}

    def _link(self, source: str, source_kind: NodeKind, target: str, target_kind: NodeKind, relation: str,
              r: Any, quantity: Any, unit: Any) -> None:
        self.kinds.setdefault(source, source_kind)
        self.kinds.setdefault(target, target_kind)
        link = Link(source=source, target=target, relation=relation,
                    quantity=quantity if isinstance(quantity, int | float) else None,
                    unit=None if unit is None else str(unit), ts_us=r.ts_us, **self._where(r.gateway_id))
        self.links.setdefault((source, target, relation, r.ts_us), link)

    # -- hops: each takes the frontier, adds links, returns the next frontier by kind ----------------

    def _forward(self, frontier: dict[NodeKind, set[str]]) -> dict[NodeKind, set[str]]:
        nxt: dict[NodeKind, set[str]] = {"lot": set(), "batch": set(), "finished_lot": set()}
        numbers = {k.split(":", 1)[1]: k for k in frontier.get("supplier_lot", set()) if ":" in k}
        for r in self._rows("lot.supplied", "ref", numbers):
            d = dict(r.data or {})
            key = supplier_key(d.get("supplier"), d.get("supplier_lot"))
            if key in frontier["supplier_lot"] and d.get("lot"):
                self._link(key, "supplier_lot", str(d["lot"]), "lot", "supplied_as", r, d.get("quantity"),
                           d.get("unit"))
                nxt["lot"].add(str(d["lot"]))
        lots = frontier.get("lot", set())
        for r in self._rows("material.consumed", "ref", lots):
            if r.batch:
                d = dict(r.data or {})
                self._link(r.ref, "lot", r.batch, "batch", "consumed_in", r, d.get("actual"), d.get("eng_unit"))
                nxt["batch"].add(r.batch)
        for r in self._rows("packaging.consumed", "ref", lots):
            d = dict(r.data or {})
            if d.get("finished_lot"):
                self._link(r.ref, "lot", str(d["finished_lot"]), "finished_lot", "packaged_into", r,
                           d.get("quantity"), d.get("unit"))
                nxt["finished_lot"].add(str(d["finished_lot"]))
        for r in self._rows("lot.produced", "batch", frontier.get("batch", set())):
            d = dict(r.data or {})
            if r.ref and d.get("batch") == r.batch:
                self._produced(r, d)
                nxt["finished_lot"].add(r.ref)
        return nxt

    def _reverse(self, frontier: dict[NodeKind, set[str]]) -> dict[NodeKind, set[str]]:
        nxt: dict[NodeKind, set[str]] = {"supplier_lot": set(), "lot": set(), "batch": set()}
        for r in self._rows("lot.produced", "ref", frontier.get("finished_lot", set())):
            d = dict(r.data or {})
            if d.get("batch"):
                self._produced(r, d)
                nxt["batch"].add(str(d["batch"]))
                for p in d.get("packaging") or []:
                    if isinstance(p, dict) and p.get("lot"):
                        self._link(str(p["lot"]), "lot", r.ref, "finished_lot", "packaged_into", r,
                                   p.get("quantity"), p.get("unit"))
                        nxt["lot"].add(str(p["lot"]))
        for r in self._rows("material.consumed", "batch", frontier.get("batch", set())):
            if r.ref:
                d = dict(r.data or {})
                self._link(r.ref, "lot", r.batch, "batch", "consumed_in", r, d.get("actual"), d.get("eng_unit"))
                nxt["lot"].add(r.ref)
        for r in self._rows("lot.registered", "ref", frontier.get("lot", set())):
            d = dict(r.data or {})
            self.details[r.ref] = _lot_detail(d)
            if d.get("supplier_lot"):
                key = supplier_key(d.get("supplier"), d["supplier_lot"])
                self.details[key] = {"supplier": d.get("supplier"), "supplier_lot": d["supplier_lot"]}
                self._link(key, "supplier_lot", r.ref, "lot", "supplied_as", r, d.get("quantity"), d.get("unit"))
        return nxt

    def _produced(self, r: Any, d: dict[str, Any]) -> None:
        self._link(str(d["batch"]), "batch", r.ref, "finished_lot", "filled_into", r, d.get("quantity"), d.get("unit"))
        self.details[r.ref] = {"product": d.get("product"), "quantity": d.get("quantity"), "unit": d.get("unit")}

    # -- the walk ----------------------------------------------------------------------------------

    def _start(self, start: str) -> tuple[str, dict[NodeKind, set[str]]]:
        """The start node and its first frontier: a supplier lot (``supplier:number`` or the number alone,
        which may name the lots of several suppliers), else any other kind — the hops of the wrong kinds
        find nothing."""
        number = start.split(":", 1)[1] if ":" in start else start
        keys = {supplier_key((r.data or {}).get("supplier"), (r.data or {}).get("supplier_lot"))
                for r in self._rows("lot.supplied", "ref", {start, number})}
        if start in keys:
            keys = {start}
        if keys:
            for k in keys:
                self.kinds[k] = "supplier_lot"
                self.details[k] = {"supplier": k.split(":", 1)[0], "supplier_lot": k.split(":", 1)[1]}
            return (start if start in keys else next(iter(sorted(keys)))), {"supplier_lot": keys}
        return start, {"lot": {start}, "batch": {start}, "finished_lot": {start}}

    def run(self, start: str, direction: Direction) -> Genealogy:
        start, frontier = self._start(start)
        seen: set[tuple[str, str]] = set()
        for _ in range(MAX_HOPS):
            frontier = {k: {n for n in ids if (k, n) not in seen} for k, ids in frontier.items()}
            if not any(frontier.values()):
                break
            seen.update((k, n) for k, ids in frontier.items() for n in ids)
            frontier = self._forward(frontier) if direction == "forward" else self._reverse(frontier)
        lots = [n for n, k in self.kinds.items() if k == "lot" and n not in self.details]
        for r in self._rows("lot.registered", "ref", lots):
            self.details[r.ref] = _lot_detail(dict(r.data or {}))
        nodes = {n: Node(kind=k, id=n, detail=self.details.get(n, {})) for n, k in self.kinds.items()}
        nodes.setdefault(start, Node(kind="lot", id=start))
        return Genealogy(start=start, direction=direction, nodes=sorted(nodes.values(), key=lambda n: (n.kind, n.id)),
                         links=list(self.links.values()))


def _lot_detail(d: dict[str, Any]) -> dict[str, Any]:
    return {k: d.get(k) for k in ("material", "sublot", "supplier", "supplier_lot", "coa", "status", "kind",
                                  "quantity", "unit")}
