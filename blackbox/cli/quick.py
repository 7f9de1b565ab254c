"""``blackbox run``, ``status`` and ``tail`` without typer, for the arguments they are usually given.

An engineer runs ``status`` and ``tail`` by hand and in loops; typer (which validates every option
through pydantic) takes about 0.2 s of CPU to start, several times the rest of the command. The
agent (``run``) runs for months, and typer, click and the other commands' modules would stay in
its memory (about 2.5 MiB) for nothing. So :func:`blackbox.cli.entry.main` first hands their
arguments to :func:`run`, which reads them the way click does — ``--opt value``, ``--opt=value``,
``-o value``, ``-ovalue``, flags, repeatable options, the global ``--log-level``/``--debug`` — and
runs :mod:`blackbox.cli.agent_view`, as the typer commands of :mod:`blackbox.cli.ops` do, or the
agent (:mod:`blackbox.cli.agent_run`). Anything else (``--help``, an unknown or misspelt option, a
missing ``--config``, a value click would refuse, a configuration whose control socket cannot be
read from its ``agent:`` section alone) is left to the typer application, which prints the help or
the usual error. A test checks that the options here are those of the typer commands.

``status`` and ``tail`` log nothing, so for them ``--log-level`` is checked and otherwise has no
effect here; ``run`` sets up logging with it, as the typer application does.
"""

from __future__ import annotations

import sys

from blackbox.cli.agent_socket import quick_control_socket
from blackbox.cli.agent_view import follow_tail, show_status
from blackbox.control_client import AgentUnreachable, CommandFailed

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing or pathlib (as mypy reads it)
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, NoReturn

FLAG, VALUE, MANY, COUNT = "flag", "value", "many", "count"
"""How an option takes its value: none (``True`` when given), one (the last one given wins, as in
click), one per use (a list), a whole number 0 or more."""


class Option:  # a plain class: dataclasses, typing.NamedTuple and pathlib are each a sizeable part of the start-up
    __slots__ = ("dest", "kind", "names")

    def __init__(self, names: tuple[str, ...], dest: str, kind: str) -> None:
        self.names, self.dest, self.kind = names, dest, kind


CONFIG = Option(("--config", "-c"), "config", VALUE)
TAG = Option(("--tag", "-t"), "tags", MANY)
UNIT = Option(("--unit", "-u"), "units", MANY)
JSON = Option(("--json",), "json_out", FLAG)
COMMANDS: dict[str, tuple[Option, ...]] = {
    "run": (CONFIG,),
    "status": (CONFIG, JSON, Option(("--all", "--tags"), "all_tags", FLAG), TAG, UNIT),
    "tail": (CONFIG, TAG, UNIT, Option(("--events",), "events", FLAG), Option(("--count", "-n"), "count", COUNT),
             JSON),
}
"""The options of the commands read here (the typer commands', a test checks)."""
GLOBAL: tuple[Option, ...] = (Option(("--log-level",), "log_level", VALUE), Option(("--debug",), "debug", FLAG))
LOG_LEVELS = frozenset({"DEBUG", "INFO", "WARNING", "ERROR"})


class Invocation:
    """A light command as the arguments give it (the names of :data:`COMMANDS` and :data:`GLOBAL`)."""

    def __init__(self, command: str, config: str, *, json_out: bool = False, all_tags: bool = False,
                 tags: Sequence[str] = (), units: Sequence[str] = (), events: bool = False, count: int = 0,
                 log_level: str = "INFO", debug: bool = False) -> None:
        self.command, self.config, self.json_out, self.all_tags = command, config, json_out, all_tags
        self.tags, self.units, self.events, self.count = list(tags), list(units), events, count
        self.log_level, self.debug = log_level, debug


def parse(args: Sequence[str]) -> Invocation | None:
    """The command and its options, or ``None`` if typer should read these arguments."""
    table = {name: opt for opt in GLOBAL for name in opt.names}
    values: dict[str, Any] = {}
    command = None
    i = 0
    while i < len(args):
        arg = args[i]
        if command is None and not arg.startswith("-"):
            command = arg
            if command not in COMMANDS:
                return None
            table = {name: opt for opt in COMMANDS[command] for name in opt.names}
            i += 1
            continue
        if arg.startswith("--") and len(arg) > 2:
            name, eq, value = arg.partition("=")
            inline: str | None = value if eq else None
        elif arg.startswith("-") and len(arg) > 1 and not arg.startswith("--"):
            name, inline = arg[:2], arg[2:] or None
        else:  # a positional argument, "-" or "--": none of these commands takes one
            return None
        opt = table.get(name)
        if opt is None:
            return None
        if opt.kind == FLAG:
            if inline is not None:
                return None
            values[opt.dest] = True
            i += 1
            continue
        if inline is None:
            if i + 1 >= len(args):
                return None
            inline = args[i + 1]
            i += 1
        i += 1
        if opt.kind == MANY:
            values.setdefault(opt.dest, []).append(inline)
        elif opt.kind == COUNT:
            if not (inline.isascii() and inline.isdigit()):
                return None
            values[opt.dest] = int(inline)
        else:
            values[opt.dest] = inline
    if command is None or "config" not in values:
        return None
    values["log_level"] = values.get("log_level", "INFO").upper()
    if values["log_level"] not in LOG_LEVELS:
        return None
    return Invocation(command, **values)


def run(args: Sequence[str]) -> int | None:
    """Run ``run``, ``status`` or ``tail`` and return the exit status, or ``None`` to leave it to typer."""
    call = parse(args)
    if call is None:
        return None
    if call.command == "run":
        return _run_agent(call)
    socket = quick_control_socket(call.config)
    if socket is None:
        return None
    try:
        if call.command == "status":
            show_status(socket, json_out=call.json_out, all_tags=call.all_tags, patterns=call.tags, units=call.units)
        elif not follow_tail(socket, patterns=call.tags, units=call.units, events=call.events, count=call.count,
                             json_out=call.json_out):
            print("the agent stopped", file=sys.stderr)
    except (AgentUnreachable, CommandFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (Exception, KeyboardInterrupt) as exc:
        _exit_for(call, exc)
    return 0


def _run_agent(call: Invocation) -> int:
    from pathlib import Path

    from blackbox.cli.agent_run import run_agent
    from blackbox.logs import setup_logging

    setup_logging(call.log_level)
    try:
        return run_agent(Path(call.config))
    except (Exception, KeyboardInterrupt) as exc:
        _exit_for(call, exc)


def _exit_for(call: Invocation, exc: BaseException) -> NoReturn:
    """End as the typer application would on an unexpected error (its module loaded only then)."""
    from blackbox.cli.errors import exit_for, set_debug

    set_debug(call.debug)
    exit_for(exc)
