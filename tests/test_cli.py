"""The command line: every command explains itself with an example; the demo runs end to end."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main

from blackbox.cli.main import app


def command_paths() -> list[list[str]]:
    """Every command and group of the app, as argument lists."""
    root = typer.main.get_command(app)
    paths: list[list[str]] = []

    def walk(cmd: Any, path: list[str]) -> None:
        paths.append(path)
        for name, sub in getattr(cmd, "commands", {}).items():  # a group
            walk(sub, [*path, name])

    walk(root, [])
    return paths


@pytest.mark.parametrize("path", command_paths(), ids=lambda p: " ".join(p) or "blackbox")
def test_every_command_has_help_with_an_example(path: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "blackbox", *path, "--help"], capture_output=True, text=True,
                          check=False, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout
    assert "Example" in proc.stdout, f"blackbox {' '.join(path)} --help shows no example"


@pytest.mark.slow
def test_demo_exits_0_with_a_verified_trace(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "blackbox", "--log-level", "WARNING", "demo", "--dir",
                           str(tmp_path), "--speed", "1200"], capture_output=True, text=True, check=False, timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "Integrity: VERIFIED" in out
    for section in ("Materials (genealogy)", "Process parameters against the limits in force", "QC results"):
        assert section in out
    assert out.count("RM-0") >= 10  # the recipe's materials with their lots
    assert "emulsify" in out and "pH" in out.replace("ph ", "pH ")
    # joint control: the demo makes a QA and a regulator key and runs under the specification they approved
    assert "Judged against specification FC-050 v1" in out and "UNAPPROVED" not in out
    # the batch record: cleaning verdict, verified weighings, finished lot with packaging, release, signatures
    for section in ("Cleaning of the equipment", "Weighings: second-person verification", "Finished-goods lots",
                    "Release: RELEASED", "Electronic signatures"):
        assert section in out
    assert "Released by Wu Qing (wu.qing)" in out and "JAR-2611-0042" in out and "Li Na      li.na      verifier" in out
    assert "Verdict: VALID" in out and "FG-2026-1125-01" in out and "Every QC result preceded the release" in out
    assert "QC specifications: specification FC-050 v1" in out  # the release's QC tests: the approved ones
    signatures = out[out.index("Electronic signatures"):]
    for meaning in ("verified", "performed", "approved"):  # name, time and meaning of each signature
        assert re.search(rf"\d{{4}}-\d\d-\d\dT\S+Z\s+\S+ \S+\s+\S+\s+\S+\s+{meaning}\s", signatures), meaning
    assert "PROBLEM" not in out and "NOT RECORDED" not in out
    assert "approved by factory QA Demo QA (factory) on" in out and ", regulator Demo inspector (regulator) on" in out
