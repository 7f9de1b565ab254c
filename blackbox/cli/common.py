"""Helpers shared by the command modules: loading a configuration, calling the running agent."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from blackbox.cli.agent_socket import quick_control_socket
from blackbox.cli.config_errors import EXIT_CONFIG, report_config_error
from blackbox.control_client import AgentUnreachable, CommandFailed, call

if TYPE_CHECKING:  # the configuration models load in a fraction of a second: only the commands that need them do
    from blackbox.config import LoadedConfig, StoreConfig

ConfigOpt = typer.Option(..., "--config", "-c", help="The agent's configuration file.")


def load_or_exit(path: Path) -> LoadedConfig:
    """Load a configuration, or print every problem and exit with status 2."""
    from blackbox.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        report_config_error(path, exc)
        raise typer.Exit(EXIT_CONFIG) from None


def store_config_or_exit(path: Path) -> StoreConfig:
    """The ``store:`` section of a store file (only that section) or a full one; exit 2 if unusable."""
    from blackbox.config import ConfigError, load_store_config

    try:
        return load_store_config(path)
    except ConfigError as exc:
        report_config_error(path, exc)
        raise typer.Exit(EXIT_CONFIG) from None


def agent_call(config: Path, cmd: str, args: dict[str, Any] | None = None, user: str | None = None) -> Any:
    """Call the agent of ``config``; exit 1 with the reason if it cannot be reached or refuses."""
    socket_path = control_socket(config)
    try:
        return call(socket_path, cmd, args, user=user)
    except (AgentUnreachable, CommandFailed) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def control_socket(config: Path) -> Path:
    """The control socket of the agent of ``config``: read from its ``agent:`` section alone when the
    file allows it (:mod:`blackbox.cli.agent_socket`), else from the whole validated file (exit 2 if unusable)."""
    found = quick_control_socket(config)
    return Path(found) if found is not None else load_or_exit(config).config.agent.control_socket
