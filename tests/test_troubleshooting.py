"""docs/troubleshooting.md lists every error and warning the agent and the store can log, and every
reason the store can give for refusing a batch: each with its cause, how to confirm it, and the fix.

The messages are collected from the code (every ``log.error/warning/critical/exception`` call's
format string outside the command line, web pages and simulator); a message is listed when the
longest literal part of its format string appears in the page."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGE = REPO / "docs" / "troubleshooting.md"
NOT_RUNTIME = ("blackbox/cli/", "blackbox/web/", "blackbox/sim/", "blackbox/demo.py", "blackbox/broker.py")
LEVELS = {"error", "warning", "critical", "exception"}


def logged_messages() -> list[tuple[str, str]]:
    """(where, format string) of every error or warning the running agent and store can log."""
    found = []
    for path in sorted([*REPO.glob("blackbox/**/*.py"), *REPO.glob("drivers/**/*.py")]):
        rel = str(path.relative_to(REPO))
        if rel.startswith(NOT_RUNTIME):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and (message := _problem_logged(node)) is not None:
                found.append((f"{rel}:{node.lineno}", message))
    return found


def _problem_logged(node: ast.Call) -> str | None:
    """The format string of ``log.warning("…")`` (error, critical, exception too), or of
    ``log.log(LEVEL, "…")`` whose level expression names a problem's level (``logging.WARNING if
    first else logging.DEBUG``); else ``None``."""
    if not (isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name) and node.func.value.id in ("log", "logger")):
        return None
    if node.func.attr in LEVELS:
        args = node.args
    elif node.func.attr == "log" and node.args and any(
            isinstance(n, ast.Attribute) and n.attr.lower() in LEVELS for n in ast.walk(node.args[0])):
        args = node.args[1:]
    else:
        return None
    if args and isinstance(args[0], ast.Constant) and isinstance(args[0].value, str):
        return args[0].value
    return None


def key_text(message: str) -> str:
    """The longest literal part of a %-format string, whitespace collapsed."""
    parts = re.split(r"%[-#0 +]*\d*(?:\.\d+)?[sdrfxgie]", message)
    return " ".join(max(parts, key=len).split()).strip(" :;,.()")


def page_text() -> str:
    return " ".join(PAGE.read_text(encoding="utf-8").split())


MESSAGES = logged_messages()


def test_messages_are_found() -> None:
    assert len(MESSAGES) > 40  # the collection itself works


@pytest.mark.parametrize(("where", "message"), MESSAGES, ids=[w for w, _ in MESSAGES])
def test_every_logged_problem_is_listed(where: str, message: str) -> None:
    assert key_text(message) in page_text(), (
        f"{where} logs {message!r}: add it to docs/troubleshooting.md (symptom, cause, how to confirm, fix); "
        f"the page must contain {key_text(message)!r}")


def test_every_rejection_reason_is_listed() -> None:
    from blackbox.store.ingest import REASONS

    text = page_text()
    missing = [code for code in REASONS if f"`{code}`" not in text]
    assert not missing, f"rejection reasons missing from docs/troubleshooting.md: {missing}"
