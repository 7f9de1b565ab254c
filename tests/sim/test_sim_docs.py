"""docs/simulator.md documents every tag at the address the simulator serves it."""

from __future__ import annotations

from pathlib import Path

from blackbox.sim.tags import NAMESPACE_URI, TAGS

DOC = Path(__file__).resolve().parents[2] / "docs" / "simulator.md"


def test_every_tag_has_a_row_with_its_address_and_type() -> None:
    rows = {line.split("|")[1].strip(): line for line in DOC.read_text(encoding="utf-8").splitlines()
            if line.startswith("| ") and line.count("|") >= 4}
    for tag in TAGS:
        assert tag.name in rows, f"{tag.name} is not documented"
        cells = [c.strip() for c in rows[tag.name].split("|")]
        assert f"`{tag.address}`" in cells and tag.type in cells, rows[tag.name]
        if tag.length is not None:
            assert any(c.startswith(f"{tag.length} ") or c == str(tag.length) for c in cells), rows[tag.name]


def test_the_namespace_uri_is_documented() -> None:
    assert f"`{NAMESPACE_URI}`" in DOC.read_text(encoding="utf-8")
