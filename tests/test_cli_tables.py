"""Tables on the terminal (``blackbox.cli.tables``): plain text when piped, drawn by rich on a terminal."""

from __future__ import annotations

import io

from blackbox.cli.tables import echo_table
from blackbox.text_table import plain_table

HEADER = ("starts", "alarm", "priority")
ROWS = [("12", "threshold:EM-01.temperature", "high  CHATTERING"), ("3", "flatline:EM-01.vacuum", "low")]


def test_plain_text_is_aligned_with_two_spaces_and_the_last_column_unpadded() -> None:
    assert plain_table(HEADER, ROWS, right=(0,)).splitlines() == [
        "starts  alarm                        priority",
        "    12  threshold:EM-01.temperature  high  CHATTERING",
        "     3  flatline:EM-01.vacuum        low",
    ]


def test_the_printable_reports_form_has_a_rule_and_may_right_align_the_last_column() -> None:
    assert plain_table(("batch", "n"), [("B-1", "7"), ("B-22", "1234")], right=(1,), rule=True).splitlines() == [
        "batch     n",
        "-----  ----",
        "B-1       7",
        "B-22   1234",
    ]


def test_piped_output_is_the_plain_text() -> None:
    out = io.StringIO()  # not a terminal
    echo_table(HEADER, ROWS, right=(0,), out=out)
    assert out.getvalue() == plain_table(HEADER, ROWS, right=(0,)) + "\n"


def test_on_a_terminal_rich_draws_every_cell() -> None:
    out = io.StringIO()
    echo_table(HEADER, ROWS, right=(0,), out=out, terminal=True)
    text = out.getvalue()
    assert "\x1b[" in text  # rich styled it (bold header): not the plain renderer
    for cell in (*HEADER, *ROWS[0], *ROWS[1]):
        assert cell in text
