"""Data-driven configuration cases: cases/config/<name>/config.yaml in, expected issues out."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from blackbox.config import ConfigError, load_config

CASES = sorted(p for p in (Path(__file__).parent / "cases" / "config").iterdir() if p.is_dir())


def issues_of(path: Path) -> list[tuple[str, int | None, str]]:
    try:
        load_config(path)
    except ConfigError as exc:
        return [(i.path, i.line, i.message) for i in exc.issues]
    return []


@pytest.mark.parametrize("case_dir", CASES, ids=[c.name for c in CASES])
def test_config_case(case_dir: Path) -> None:
    got = issues_of(case_dir / "config.yaml")
    expected = yaml.safe_load((case_dir / "expected.yaml").read_text())
    assert [(p, line) for p, line, _ in got] == [(e["path"], e["line"]) for e in expected], got
    for (_, _, message), e in zip(got, expected, strict=True):
        assert e["message"] in message


def test_config_check_cli_reports_every_mistake_and_exits_2() -> None:
    path = Path(__file__).parent / "cases" / "config" / "three_mistakes" / "config.yaml"
    proc = subprocess.run([sys.executable, "-m", "blackbox", "config", "check", str(path)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(str(path))]
    assert [ln.split(": ")[1] for ln in lines] == ["site.lnie", "sources.0.tags.0.address", "rules.0.tag"]
    assert f"{path}:5:" in lines[0]


def test_config_check_cli_accepts_a_valid_file() -> None:
    path = Path(__file__).parent / "cases" / "config" / "valid_minimal" / "config.yaml"
    proc = subprocess.run([sys.executable, "-m", "blackbox", "config", "check", str(path)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "OK" in proc.stdout
