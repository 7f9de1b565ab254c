"""Imports point one way: every import in blackbox/ and drivers/ against the layers drawn in docs/architecture.md."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _layers() -> dict[str, int]:
    """Module name -> layer (0 = top) from the first code block under "## Layers"."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = text.split("## Layers", 1)[1].split("```", 2)[1]
    rank: dict[str, int] = {}
    layer = -1
    for line in block.splitlines():
        names = line.split("(", 1)[0].strip()
        if not names:
            continue
        if not line.startswith(" "):
            layer += 1
        for name in re.split(r",\s*", names.rstrip(",")):
            rank[name] = layer
    return rank


def _owner(module: str, rank: dict[str, int]) -> str | None:
    """The layer entry a dotted module belongs to: its longest listed prefix (``config.load`` before ``config``)."""
    parts = module.split(".")
    if parts[0] == "blackbox":
        parts = parts[1:]
    elif parts[0] != "drivers":
        return None
    for n in range(len(parts), 0, -1):
        name = ".".join(parts[:n])
        if name in rank:
            return name
    return None


def _modules() -> list[tuple[str, Path]]:
    found = []
    for package in ("blackbox", "drivers"):
        for path in (ROOT / package).rglob("*.py"):
            rel = path.relative_to(ROOT).with_suffix("")
            if "migrations" in rel.parts:
                continue
            parts = [p for p in rel.parts if p != "__init__"]
            found.append((".".join(parts), path))
    return found


UNLAYERED = {"blackbox", "blackbox.__main__"}
"""The package itself and ``python -m blackbox``."""
FACADES = {"config": "config.load"}
"""Packages whose ``__init__`` re-exports a higher layer too: ``blackbox.config`` re-exports the loader
with the models, so the ``__init__`` itself sits with the loader (models import their own modules)."""


def test_every_module_has_a_layer() -> None:
    rank = _layers()
    assert [m for m, _ in _modules() if m not in UNLAYERED and _owner(m, rank) is None] == []


def test_imports_point_downwards() -> None:
    rank = _layers()
    upward = []
    for module, path in _modules():
        me = FACADES.get(module.removeprefix("blackbox."), _owner(module, rank))
        if me is None:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            owners = [o for o in (_owner(t, rank) for t in targets) if o is not None]
            target = max(owners, key=len) if owners else None  # the most specific: config.load, not config
            if target is not None and rank[target] < rank[me]:
                upward.append(f"{path.relative_to(ROOT)}:{node.lineno}: {me} imports {target}")
    assert upward == []


RECORD_READERS = ("batch_record", "derive", "genealogy", "ingest", "integrity", "report", "spec_report", "trace",
                  "verify", "verify_log")
"""The store's modules that read what gateways recorded."""


@pytest.mark.parametrize("name", RECORD_READERS)
def test_the_stores_record_readers_import_no_configuration_model(name: str) -> None:
    """Records are read through seal's record format: today's configuration model may refuse what an
    older gateway recorded, and a record must never fail to be read, or be left out, for that."""
    path = ROOT / "blackbox" / "store" / f"{name}.py"
    imported = [node.module if isinstance(node, ast.ImportFrom) else alias.name
                for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, ast.ImportFrom | ast.Import)
                for alias in node.names]
    assert [m for m in imported if m and (m == "blackbox.config" or m.startswith("blackbox.config."))] == []


@pytest.mark.parametrize("path", sorted((ROOT / "blackbox" / "store").glob("*.py"))
                         + sorted((ROOT / "blackbox" / "web").glob("*.py")), ids=lambda p: f"{p.parent.name}.{p.stem}")
def test_the_store_reads_kept_specifications_through_the_record_format(path: Path) -> None:
    """Kept specifications are read by ``seal.spec_record``: today's specification model may refuse a
    document an older one wrote and both parties approved, which must never drop out of a trace."""
    imported = [node.module if isinstance(node, ast.ImportFrom) else alias.name
                for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, ast.ImportFrom | ast.Import)
                for alias in node.names]
    assert "blackbox.spec.model" not in imported
