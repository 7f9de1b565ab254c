"""The package as users get it: a wheel that runs without the source tree, pinned as CI tested it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parent.parent
SKIP = {".git", ".venv", "build", "dist", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", "var"}


def pins() -> dict[str, str]:
    """constraints.txt as {normalised name: version}."""
    out = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            out[re.sub(r"[-_.]+", "-", name).lower()] = version
    return out


def test_every_dependency_is_pinned_within_its_range() -> None:
    """A dependency added or raised in pyproject.toml must be pinned in constraints.txt too: CI and
    the install guides install with it, so an unpinned one would go untested at its newest version."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        requirements += [Requirement(r) for r in extra]
    pinned = pins()
    for req in requirements:
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        assert name in pinned, f"{req.name} is not pinned in constraints.txt"
        assert req.specifier.contains(pinned[name], prereleases=True), \
            f"constraints.txt pins {req.name}=={pinned[name]}, outside {req.specifier} of pyproject.toml"


@pytest.mark.slow
def test_the_wheel_runs_the_demo_outside_the_source_tree(tmp_path: Path) -> None:
    """Build the wheel from a copy of the tree, install it with the demo extra into a fresh venv, and
    run it from a directory that has nothing of the source: --version, config check of the installed
    examples, and the demo to a verified trace."""
    source = tmp_path / "source"
    shutil.copytree(REPO, source, symlinks=True, ignore=lambda _d, names: [n for n in names if n in SKIP
                                                                            or n.endswith(".egg-info")])

    def run(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False, timeout=600)

    built = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"),
                 str(source)])
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = next((tmp_path / "dist").glob("blackbox-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    installed = run([str(venv / "bin" / "pip"), "install", "-q", "-c", str(REPO / "constraints.txt"),
                     f"{wheel}[demo]"])
    assert installed.returncode == 0, installed.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    blackbox = str(venv / "bin" / "blackbox")

    version = run([blackbox, "--version"], cwd=elsewhere)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert version.stdout.strip() == f"blackbox {project['version']}", version.stderr

    examples = run([str(venv / "bin" / "python"), "-c", "from importlib.resources import files; "
                    "print(files('blackbox') / 'examples')"], cwd=elsewhere)
    folder = Path(examples.stdout.strip())
    assert not folder.is_relative_to(REPO) and (folder / "demo.yaml").is_file(), examples.stdout
    assert sorted(p.name for p in folder.glob("*.yaml")) == sorted(p.name for p in (REPO / "config").glob("*.yaml"))
    for example in sorted(folder.glob("*.yaml")):
        checked = run([blackbox, "config", "check", str(example)], cwd=elsewhere)
        assert checked.returncode == 0, checked.stderr

    demo = run([blackbox, "--log-level", "WARNING", "demo", "--dir", str(tmp_path / "demo"), "--speed", "1200"],
               cwd=elsewhere)
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert "Integrity: VERIFIED" in demo.stdout
    assert not list(elsewhere.iterdir()), "the demo wrote into the current directory"
