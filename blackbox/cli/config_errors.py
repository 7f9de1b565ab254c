"""How every command reports a configuration that does not load (typer-free: ``blackbox run`` uses it too)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from blackbox.config import ConfigError

EXIT_CONFIG = 2
"""Exit status of a configuration that does not load."""


def report_config_error(path: Path, exc: ConfigError) -> None:
    """Every problem, one per line (file:line: field: reason, as compilers do), then how many if more than one."""
    for issue in exc.issues:
        print(issue, file=sys.stderr)
    if len(exc.issues) > 1:
        print(f"{len(exc.issues)} problems in {path}", file=sys.stderr)
