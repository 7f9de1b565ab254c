"""The ``blackbox`` command: ``run``, ``status`` and ``tail`` without typer when their arguments allow it
(:mod:`blackbox.cli.quick`), else the light application for ``status`` and ``tail``, the full one otherwise."""

from __future__ import annotations

import sys
from collections.abc import Sequence

LIGHT = frozenset({"status", "tail"})
"""The commands of :data:`blackbox.cli.root.app` (a test checks), named here so as not to import it for the others."""
QUICK = LIGHT | {"run"}
"""The commands :mod:`blackbox.cli.quick` runs without typer when it can read their arguments."""


def main() -> None:
    command = command_of(sys.argv[1:])
    if command in QUICK:
        from blackbox.cli.quick import run

        code = run(sys.argv[1:])
        if code is not None:
            sys.exit(code)
    if command in LIGHT:
        from blackbox.cli.root import app
    else:
        from blackbox.cli.main import app
    app()


def command_of(args: Sequence[str]) -> str | None:
    """The command ``args`` name, or ``None`` when the global options ask for the whole application
    (``--help``, ``--version``, anything unknown: its error message lists every command)."""
    value_next = False
    for arg in args:
        if value_next:
            value_next = False
        elif arg == "--log-level":
            value_next = True
        elif arg.startswith("--log-level=") or arg == "--debug":
            continue
        elif arg.startswith("-"):
            return None
        else:
            return arg
    return None
