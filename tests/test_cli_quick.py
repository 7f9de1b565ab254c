"""``run``, ``status`` and ``tail`` read their arguments without typer exactly as typer (click) reads
them, and leave to typer whatever they are not sure of: they never accept what typer refuses."""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
import typer.main
from agent_helpers import BLACKBOX
from typer.core import TyperGroup
from typer.testing import CliRunner

from blackbox.cli import agent_run, main, ops, root
from blackbox.cli.quick import COMMANDS, GLOBAL, parse


def typer_reads(args: list[str], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any] | None:
    """What the typer commands hand on (the global options, the command's options), or ``None``
    where typer refuses the arguments or prints help instead."""
    seen: dict[str, Any] = {}
    monkeypatch.setattr(root, "set_debug", lambda debug: seen.update(debug=debug))
    monkeypatch.setattr(root, "setup_logging", lambda level: seen.update(log_level=level))
    monkeypatch.setattr(ops, "control_socket", lambda config: seen.update(config=config))
    monkeypatch.setattr(ops, "show_status", lambda _socket, **kw: seen.update(command="status", **kw))
    monkeypatch.setattr(ops, "follow_tail", lambda _socket, **kw: bool(seen.update(command="tail", **kw)) or True)
    monkeypatch.setattr(agent_run, "run_agent", lambda config: seen.update(command="run", config=config) or 0)
    result = CliRunner().invoke(main.app, args)
    if result.exit_code != 0 or "command" not in seen:
        return None
    renamed = {"patterns": "tags", "units": "units"}
    return {renamed.get(k, k): plain(v) for k, v in seen.items()}


def plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple | list):
        return list(value)
    return value


def quick_reads(args: list[str]) -> dict[str, Any] | None:
    got = parse(args)
    return None if got is None else vars(got)


USUAL = [
    "status -c a.yaml",
    "status --config=a.yaml --json",
    "status -ca.yaml --all",
    "status -c a.yaml --tags",
    "status -c a.yaml --tag 'EM-01.*' -t x --unit EM-01 -uOT-01 --tag=y",
    "--log-level DEBUG status -c a.yaml",
    "--log-level=warning --debug status -c a.yaml",
    "status -c a.yaml -c b.yaml",  # the last one wins
    "status -c a.yaml --tag -x",  # an option's value may start with a dash
    "status -c a.yaml --tag=",
    "tail -c a.yaml",
    "tail -c a.yaml -n 5 --events --json -t 'EM-*' -u EM-01",
    "tail --count=0 -c a.yaml -n12",
    "tail -c=a.yaml",  # the value is "=a.yaml", as click reads it
    "run -c a.yaml",
    "--log-level=debug run --config /etc/blackbox/blackbox.yaml",
    "--debug run -c a.yaml -c b.yaml",
]
LEFT_TO_TYPER = [
    "status",  # no --config
    "status -c",
    "status -c a.yaml --help",
    "status --help",
    "status -c a.yaml extra",
    "status -c a.yaml --",
    "status -c a.yaml -",
    "status -c a.yaml --json=true",
    "status -c a.yaml --all --unknown",
    "status -c a.yaml -x",
    "status -c a.yaml --jso",  # click does not complete abbreviations
    "tail -c a.yaml -n -3",
    "tail -c a.yaml -n x",
    "tail -c a.yaml --count 1.5",
    "tail -c a.yaml --events=1",
    "--log-level LOUD status -c a.yaml",
    "--log-level",
    "status -c a.yaml --debug",  # a global option after the command
    "--version",
    "--help status",
    "alarms list -c a.yaml",
    "run",
    "run -c a.yaml --json",
    "run --help",
    "run -c a.yaml extra",
    "",
]


@pytest.mark.parametrize("line", USUAL)
def test_the_usual_arguments_are_read_without_typer_as_typer_reads_them(line: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    args = shlex.split(line)
    expected = typer_reads(args, monkeypatch)
    assert expected is not None, "typer accepts these"
    got = quick_reads(args)
    assert got is not None, "read without typer"
    assert {k: got[k] for k in expected} == expected


@pytest.mark.parametrize("line", LEFT_TO_TYPER)
def test_anything_else_is_left_to_typer(line: str) -> None:
    assert quick_reads(shlex.split(line)) is None


def test_what_typer_refuses_is_never_read_without_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cases left to typer that typer refuses too (the others it reads in full: help, or another
    command): the quick reading does not accept anything typer would not."""
    refused = [line for line in LEFT_TO_TYPER if typer_reads(shlex.split(line), monkeypatch) is None]
    assert len(refused) >= 15 and all(quick_reads(shlex.split(line)) is None for line in refused)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_the_options_are_those_of_the_typer_commands(command: str) -> None:
    group = typer.main.get_command(main.app)
    ctx = group.make_context("blackbox", [command, "--help"], resilient_parsing=True)
    assert isinstance(group, TyperGroup)
    cmd = group.get_command(ctx, command)
    assert cmd is not None
    theirs = {(frozenset(p.opts + p.secondary_opts), p.name) for p in cmd.params if "--help" not in p.opts}
    assert {(frozenset(opt.names), opt.dest) for opt in COMMANDS[command]} == theirs
    # the global options a light command may follow (the others, --version and the shell completion's,
    # are the whole application's: blackbox.cli.entry sends them there)
    globals_theirs = {frozenset(p.opts) for p in group.params if "--help" not in p.opts and p.name not in
                      ("_show_version", "install_completion", "show_completion")}
    assert {frozenset(opt.names) for opt in GLOBAL} == globals_theirs


@pytest.mark.parametrize("debug", [False, True])
def test_an_unexpected_error_without_typer_is_one_line_or_with_debug_the_traceback(tmp_path: Path,
                                                                                  debug: bool) -> None:
    """As through typer's top-level group: here the control socket answers something not JSON."""
    path = tmp_path / "agent.sock"
    (tmp_path / "blackbox.yaml").write_text(f"site: {{id: S1}}\ngateway: {{id: g}}\nagent:\n  control_socket: {path}\n")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen()

        def answer() -> None:
            conn, _ = server.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(b"not json\n")

        with ThreadPoolExecutor(1) as pool:
            answered = pool.submit(answer)
            done = subprocess.run([*BLACKBOX[:3], *(["--debug"] if debug else []), "status", "-c",
                                   str(tmp_path / "blackbox.yaml")], capture_output=True, text=True, timeout=60,
                                  check=False, env={**os.environ, "BLACKBOX_DEBUG": ""})
            answered.result(timeout=10)
    assert done.returncode == 1 and done.stdout == ""
    if debug:
        assert "Traceback" in done.stderr and "JSONDecodeError" in done.stderr
    else:
        [line] = done.stderr.splitlines()
        assert line.startswith("error: unexpected JSONDecodeError: ") and "blackbox --debug" in line
