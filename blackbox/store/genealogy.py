"""Genealogy after ISA-95: supplier lot → material lot → bulk batches → finished-goods lots, and back.

The graph is read from the events the store derived from the signed records: ``lot.registered``
(a material lot and its supplier lot), ``material.consumed`` (a lot into a bulk batch),
``lot.produced`` (a finished lot filled from a bulk batch, with the packaging lots it used).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection, Engine, select

from blackbox.store.schema import events, gateways

NodeKind = Literal["supplier_lot", "lot", "batch", "finished_lot"]


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
    direction: Literal["forward", "reverse"]
    nodes: list[Node]
    links: list[Link]


def genealogy(engine: Engine, start: str, direction: Literal["forward", "reverse"]) -> Genealogy:
    """Every node reachable from ``start`` (any lot id, supplier lot or batch) in ``direction``."""
    with engine.connect() as conn:
        return _walk(_Graph(conn), start, direction)


def _walk(graph: _Graph, start: str, direction: Literal["forward", "reverse"]) -> Genealogy:
    start = graph.resolve(start)
    nodes: dict[str, Node] = {}
    links: list[Link] = []
    todo = [start]
    seen: set[str] = set()
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        for link in (graph.downstream(node) if direction == "forward" else graph.upstream(node)):
            links.append(link)
            todo.append(link.target if direction == "forward" else link.source)
    for link in links:
        for n in (link.source, link.target):
            nodes.setdefault(n, graph.node(n))
    if start not in nodes:
        nodes[start] = graph.node(start)
    return Genealogy(start=start, direction=direction, nodes=sorted(nodes.values(), key=lambda n: (n.kind, n.id)),
                     links=links)


class _Graph:
    """The edges of the genealogy. Lots received and finished lots filled (few) are read once; the
    consumptions (many) are looked up per lot or batch through the ``events`` (ref, type) and
    (batch, type) indexes."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.links: list[Link] = []
        self.kinds: dict[str, NodeKind] = {}
        self.details: dict[str, dict[str, Any]] = {}
        self._looked_up: set[tuple[str, str]] = set()
        for r in self._rows(events.c.type.in_(["lot.registered", "lot.produced"])):
            d: dict[str, Any] = dict(r.data or {})
            where = {"site": r.site, "gateway": r.gateway, "ts_us": r.ts_us}
            if r.type == "lot.registered" and r.ref:
                self.kinds[r.ref] = "lot"
                self.details[r.ref] = {k: d.get(k) for k in ("material", "sublot", "supplier", "supplier_lot", "coa",
                                                             "status", "kind", "quantity", "unit")}
                if d.get("supplier_lot"):
                    sl = f"{d.get('supplier') or '?'}:{d['supplier_lot']}"
                    self.kinds[sl] = "supplier_lot"
                    self.details[sl] = {"supplier": d.get("supplier"), "supplier_lot": d["supplier_lot"]}
                    self.links.append(Link(source=sl, target=r.ref, relation="supplied_as",
                                           quantity=d.get("quantity"), unit=d.get("unit"), **where))
            elif r.type == "lot.produced" and r.ref and d.get("batch"):
                bulk = str(d["batch"])
                self.kinds[r.ref] = "finished_lot"
                self.kinds[bulk] = "batch"
                self.details[r.ref] = {"product": d.get("product"), "quantity": d.get("quantity"),
                                       "unit": d.get("unit")}
                self.links.append(Link(source=bulk, target=r.ref, relation="filled_into",
                                       quantity=d.get("quantity"), unit=d.get("unit"), **where))
                for p in d.get("packaging") or []:
                    if isinstance(p, dict) and p.get("lot"):
                        self.kinds.setdefault(str(p["lot"]), "lot")
                        self.links.append(Link(source=str(p["lot"]), target=r.ref, relation="packaged_into",
                                               quantity=p.get("quantity"), unit=p.get("unit"), **where))
        # a supplier lot can be asked for by its number alone
        self.alias = {str(v["supplier_lot"]): k for k, v in self.details.items() if self.kinds.get(k) == "supplier_lot"}

    def _rows(self, *where: Any) -> Sequence[Any]:
        e, g = events.c, gateways.c
        return self.conn.execute(
            select(e.type, e.ref, e.batch, e.data, e.ts_us, g.site, g.gateway)
            .join_from(events, gateways, e.gateway_id == g.id).where(*where).order_by(e.ts_us, e.seq)).all()

    def _consumptions(self, column: str, value: str) -> None:
        """Add the ``material.consumed`` links of a lot (``ref``) or of a batch (``batch``), once."""
        if (column, value) in self._looked_up:
            return
        self._looked_up.add((column, value))
        c = events.c
        for r in self._rows(c.type == "material.consumed", (c.ref if column == "ref" else c.batch) == value):
            if not r.ref or not r.batch:
                continue
            d: dict[str, Any] = dict(r.data or {})
            link = Link(source=r.ref, target=r.batch, relation="consumed_in", quantity=d.get("actual"),
                        unit=d.get("eng_unit"), site=r.site, gateway=r.gateway, ts_us=r.ts_us)
            if link not in self.links:
                self.links.append(link)
                self.kinds.setdefault(r.ref, "lot")
                self.kinds[r.batch] = "batch"

    def resolve(self, node: str) -> str:
        """The node's id: a supplier lot asked for by its number alone is ``supplier:number``."""
        return node if node in self.kinds else self.alias.get(node, node)

    def downstream(self, node: str) -> list[Link]:
        node = self.resolve(node)
        self._consumptions("ref", node)
        return [link for link in self.links if link.source == node]

    def upstream(self, node: str) -> list[Link]:
        node = self.resolve(node)
        self._consumptions("batch", node)
        return [link for link in self.links if link.target == node]

    def node(self, node: str) -> Node:
        node = self.resolve(node)
        return Node(kind=self.kinds.get(node, "lot"), id=node, detail=self.details.get(node, {}))
