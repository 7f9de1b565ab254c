"""Helpers shared by the command modules: loading a configuration with a clear failure."""

from __future__ import annotations

from pathlib import Path

import typer

from blackbox.config import ConfigError, LoadedConfig, load_config

EXIT_CONFIG = 2

ConfigOption = typer.Option(..., "--config", "-c", help="Configuration file (YAML).", exists=False)


def load_or_exit(path: Path) -> LoadedConfig:
    """Load a configuration, or print every problem and exit with status 2."""
    try:
        return load_config(path)
    except ConfigError as exc:
        for issue in exc.issues:
            typer.echo(str(issue), err=True)
        typer.echo(f"{len(exc.issues)} problem(s) in {path}", err=True)
        raise typer.Exit(EXIT_CONFIG) from None
