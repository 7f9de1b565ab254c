"""The user documentation stands on its own: it cites no file outside the repository (the project's
internal notes) and no section of an internal specification, and every repository path it names in
backticks exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGES = sorted([*REPO.glob("docs/*.md"), REPO / "README.md", *REPO.glob("config/*.yaml")])
FORBIDDEN = [
    (re.compile(r"\.\./shared\b"), "a file outside the repository"),
    (re.compile(r"\bSPEC\s*§"), "a section of the internal specification"),
    (re.compile(r"\b(LIBRARY-NOTES|REFERENCE-LINE)(\.md)?\b"), "an internal note"),
    (re.compile(r"\b[Ii]ssue\s+#?\d+\b"), "an issue number"),
]
PATH = re.compile(r"`((?:docs|config|deploy|benchmarks|tests|blackbox|drivers)/[\w./-]+)`")


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_a_page_cites_only_what_users_have(page: Path) -> None:
    problems = []
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        problems += [f"{page.name}:{number}: cites {what}: {line.strip()}" for pattern, what in FORBIDDEN
                     if pattern.search(line)]
        problems += [f"{page.name}:{number}: names {path}, which does not exist" for path in PATH.findall(line)
                     if not (REPO / path.rstrip(".")).exists() and "*" not in path]
    assert not problems, "\n".join(problems)
