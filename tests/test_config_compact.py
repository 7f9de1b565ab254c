"""Equal values of a loaded configuration shared as one object (memory at 10,000 tags), values unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from blackbox.config import load_config, parse_config
from blackbox.config.compact import share_equal_values

EXAMPLE = Path(__file__).parents[1] / "blackbox" / "examples" / "cream-line.yaml"

TAGS = "\n".join(f"      - {{name: T{i}, address: 'hr:{2 * i}', type: float32, category: process, unit: U1}}"
                 for i in range(3))
DOC = f"""\
site: {{id: S1, name: Site, licence: L-1}}
gateway: {{id: gw-1, key_file: gateway.key}}
sources:
  - name: plc
    protocol: modbus
    host: 127.0.0.1
    port: 5020
    tags:
{TAGS}
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "blackbox.yaml"
    path.write_text(DOC)
    return path


def test_tags_share_their_fields_set_and_equal_texts(config_file: Path) -> None:
    tags = load_config(config_file).config.sources[0].tags
    assert tags[0].__pydantic_fields_set__ is tags[1].__pydantic_fields_set__ is tags[2].__pydantic_fields_set__
    assert tags[0].__pydantic_fields_set__ == {"name", "address", "type", "category", "unit"}
    assert tags[0].type is tags[2].type
    assert tags[0].unit is tags[1].unit
    assert [t.name for t in tags] == ["T0", "T1", "T2"]


def test_an_unshared_parse_dumps_the_same() -> None:
    text = EXAMPLE.read_text()
    shared, plain = parse_config(text, str(EXAMPLE)), parse_config(text, str(EXAMPLE))
    share_equal_values(shared)
    assert shared.model_dump() == plain.model_dump()
    assert shared.model_dump(exclude_unset=True) == plain.model_dump(exclude_unset=True)


def test_a_copy_with_an_update_leaves_the_other_tags_fields_set_alone(config_file: Path) -> None:
    tags = load_config(config_file).config.sources[0].tags
    changed = tags[0].model_copy(update={"description": "new"})
    assert "description" in changed.model_fields_set
    assert "description" not in tags[1].model_fields_set
    assert "description" not in tags[0].model_fields_set


def test_a_model_that_is_not_frozen_is_left_alone() -> None:
    class Loose(BaseModel):
        model_config = ConfigDict(frozen=False)
        a: str

    class Holder(BaseModel):
        model_config = ConfigDict(frozen=True)
        items: list[Loose]

    holder = Holder(items=[Loose(a="".join(["x", "y"])), Loose(a="".join(["x", "y"]))])
    share_equal_values(holder)
    first, second = holder.items
    assert first.__pydantic_fields_set__ is not second.__pydantic_fields_set__
    assert first.a is not second.a
    second.a = "z"
    assert first.a == "xy"
