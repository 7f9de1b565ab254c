"""docs/configuration.md carries the reference generated from the models, up to date."""

from pathlib import Path

from blackbox.config_reference import reference

DOC = Path(__file__).parent.parent / "docs" / "configuration.md"


def test_reference_in_docs_is_current() -> None:
    generated = reference()
    assert generated in DOC.read_text(encoding="utf-8"), (
        "docs/configuration.md is out of date: run `make docs`")


def test_reference_names_every_section_and_driver() -> None:
    text = reference()
    for heading in ("### site", "### rules[] (type: threshold)", "### sources[] with protocol: modbus",
                    "### sources[].tags[] with protocol: opcua"):
        assert heading in text
