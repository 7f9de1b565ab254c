"""Tables on the terminal: one way for every command that prints columns.

On a terminal a table is drawn by ``rich``: it fits the window and wraps
long cells. Piped or redirected, the same rows are plain text aligned with spaces, one row a line,
so that ``grep``, ``awk`` and scripts read them as before (:func:`blackbox.text_table.plain_table`,
which the printable report uses too).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from blackbox.text_table import plain_table

if TYPE_CHECKING:
    from rich.table import Table


def rich_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, right: Sequence[int] = ()) -> Table:
    """The same rows as a ``rich`` table (no frame: columns, a bold header)."""
    from rich.table import Table  # imported to draw only: every command's start and piped tables skip rich

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
        from rich.console import Console

        Console(file=out, force_terminal=True).print(rich_table(header, rows, right=right))
    else:
        out.write(plain_table(header, rows, right=right) + "\n")
