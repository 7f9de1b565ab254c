"""What the batch page's record sections and the genealogy page show, arranged for the templates.

Nothing is derived here: the batch record comes from the trace report (the same
:class:`~blackbox.store.batch_record.BatchRecordInfo` the text report and the JSON export print),
the genealogy from :func:`blackbox.store.genealogy.genealogy` (what the API and the CLI answer).
This module only groups them: a weighing with its signatures, a walk's nodes by hop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from sqlalchemy import Engine

from blackbox.store.batch_record import BatchRecordInfo, SignatureLine
from blackbox.store.genealogy import Direction, Genealogy, Link, NodeKind
from blackbox.web import queries

FORWARD_ORDER: tuple[NodeKind, ...] = ("supplier_lot", "lot", "batch", "finished_lot")


def signatures_by_record(rec: BatchRecordInfo) -> dict[tuple[str, int], list[SignatureLine]]:
    """The batch's signatures by the record they sign (gateway, seq): a weighing's row shows its own."""
    out: dict[tuple[str, int], list[SignatureLine]] = {}
    for s in rec.signatures:
        out.setdefault((s.gateway, s.seq), []).append(s)
    return out


@dataclass
class NodeRow:
    kind: NodeKind
    id: str
    detail: dict[str, Any]
    sites: list[str]
    batch_url: str | None = None
    """The batch page of a bulk batch node, at the run (occurrence) the links name."""
    upstream: list[Link] = field(default_factory=list)
    downstream: list[Link] = field(default_factory=list)


@dataclass
class GenealogyView:
    start: str
    direction: Direction
    levels: list[tuple[NodeKind, list[NodeRow]]]
    links: list[Link]

    @property
    def found(self) -> bool:
        """Anything of the walk the viewer may see: a link, or the start's own master data."""
        return bool(self.links) or any(row.detail for _, rows in self.levels for row in rows)


def genealogy_view(engine: Engine, walk: Genealogy) -> GenealogyView:
    """The walk's nodes grouped by kind in the walk's order, each with the links into and out of it."""
    rows: dict[str, NodeRow] = {n.id: NodeRow(n.kind, n.id, n.detail, []) for n in walk.nodes}
    for link in walk.links:
        for node_id in (link.source, link.target):
            row = rows.get(node_id)
            if row is not None and link.site and link.site not in row.sites:
                row.sites.append(link.site)
        if link.source in rows:
            rows[link.source].downstream.append(link)
        if link.target in rows:
            rows[link.target].upstream.append(link)
    for row in rows.values():
        if row.kind == "batch" and len(row.sites) == 1:
            row.batch_url = _batch_url(engine, row)
    order = FORWARD_ORDER if walk.direction == "forward" else tuple(reversed(FORWARD_ORDER))
    levels = [(kind, sorted((r for r in rows.values() if r.kind == kind), key=lambda r: r.id)) for kind in order]
    return GenealogyView(walk.start, walk.direction, [(k, r) for k, r in levels if r], walk.links)


def _batch_url(engine: Engine, row: NodeRow) -> str:
    site = row.sites[0]
    times = [x.ts_us for x in row.upstream + row.downstream if x.ts_us is not None]
    occurrence = queries.occurrence_at(engine, site, row.id, min(times)) if times else None
    url = f"/sites/{quote(site, safe='')}/batches/{quote(row.id, safe='')}"
    return f"{url}?occurrence={occurrence}" if occurrence else url
