"""Plain-text tables: columns aligned with spaces, the one aligner of the CLI and the printable report.

The CLI's tables use it when piped (drawn by ``rich`` on a terminal, :mod:`blackbox.cli.tables`);
the printable trace report (:mod:`blackbox.store.report`) always uses it, with a rule under the header.
"""

from __future__ import annotations

from collections.abc import Sequence


def plain_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, right: Sequence[int] = (),
                rule: bool = False) -> str:
    """Columns separated by two spaces, each as wide as its widest cell; ``right``: right-aligned
    columns; ``rule``: a line of dashes under the header. No line ends in a space."""
    lines = [list(header), *(list(r) for r in rows)]
    widths = [max(len(r[i]) for r in lines) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    out = [line(r) for r in lines]
    if rule:
        out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)
