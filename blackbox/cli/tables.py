"""Tables on the terminal: one way for every command that prints columns.

On a terminal a table is drawn by ``rich`` (installed with typer): it fits the window and wraps
long cells. Piped or redirected, the same rows are plain text aligned with spaces, one row a line,
so that ``grep``, ``awk`` and scripts read them as before. The printable report keeps its own
plain-text layout.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from rich.console import Console
from rich.table import Table


def plain_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, right: Sequence[int] = ()) -> str:
    """Columns aligned with two spaces; the last column is not padded; ``right``: right-aligned columns."""
    lines = [list(header), *(list(r) for r in rows)]
    widths = [max(len(r[i]) for r in lines) for i in range(len(header) - 1)]

    def cell(i: int, text: str) -> str:
        if i == len(header) - 1:
            return text
        return text.rjust(widths[i]) if i in right else text.ljust(widths[i])

    return "\n".join("  ".join(cell(i, c) for i, c in enumerate(r)).rstrip() for r in lines)


def rich_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, right: Sequence[int] = ()) -> Table:
    """The same rows as a ``rich`` table (no frame: columns, a bold header)."""
    table = Table(box=None, show_edge=False, pad_edge=False, header_style="bold")
    for i, name in enumerate(header):
        table.add_column(name, justify="right" if i in right else "left", overflow="fold")
    for r in rows:
        table.add_row(*r)
    return table


def echo_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, right: Sequence[int] = (),
               out: TextIO | None = None, terminal: bool | None = None) -> None:
    """Print the rows: drawn by ``rich`` on a terminal, plain text otherwise (``terminal`` overrides)."""
    out = out or sys.stdout
    if terminal if terminal is not None else out.isatty():
        Console(file=out, force_terminal=True).print(rich_table(header, rows, right=right))
    else:
        out.write(plain_table(header, rows, right=right) + "\n")
