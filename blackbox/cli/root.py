"""The ``blackbox`` application's top level: its global options, and the commands light enough to
start without loading the rest (``status``, ``tail``).

An engineer runs ``status`` and ``tail`` by hand and in loops, so they start in a fraction of the
time the full application takes to import (the configuration models, the drivers, the store):
:func:`blackbox.cli.entry.main` runs this application alone for them, and
:mod:`blackbox.cli.main` adds every other command to it.
"""

from __future__ import annotations

import enum

import typer

from blackbox.cli import ops
from blackbox.cli.errors import BlackboxGroup, set_debug
from blackbox.logs import setup_logging

app = typer.Typer(
    help="blackbox — a flight recorder for cosmetics factories: records PLC data, warns early, "
         "seals it signed and hash-chained, and lets regulators trace every batch.\n\n"
         "Example: blackbox demo",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=BlackboxGroup,
)
app.command("status")(ops.status)
app.command("tail")(ops.tail)


def plain_help(typer_app: typer.Typer) -> None:
    """Plain click help for every group: typer's rich help shows flags as ``--json <bool>``, as if
    they took a value."""
    typer_app.rich_markup_mode = None
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            plain_help(group.typer_instance)


class LogLevel(enum.StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


def _version(value: bool) -> None:
    if value:
        from blackbox import __version__

        typer.echo(f"blackbox {__version__}")
        raise typer.Exit()


@app.callback()
def _main(log_level: LogLevel = typer.Option(LogLevel.INFO, "--log-level", case_sensitive=False,
                                             help="How much the agent and store log."),
          debug: bool = typer.Option(False, "--debug", help="Show the traceback of an unexpected error "
                                     "(also BLACKBOX_DEBUG=1)."),
          _show_version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                             help="Print the version and exit.")) -> None:
    set_debug(debug)
    setup_logging(log_level.value)


plain_help(app)
