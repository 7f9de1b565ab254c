"""``blackbox config``: check configuration files."""

from __future__ import annotations

from pathlib import Path

import typer

from blackbox.cli.common import load_or_exit

app = typer.Typer(help="Check configuration files and print their reference.\n\n"
                  "Example: blackbox config check config/demo.yaml", no_args_is_help=True)


@app.command("check")
def check(file: Path = typer.Argument(..., help="Configuration file to check.")) -> None:
    """Validate FILE and report every problem at once (file:line: field.path: reason); exit 2 if any.

    Example: blackbox config check config/demo.yaml
    """
    loaded = load_or_exit(file)
    cfg = loaded.config
    n_tags = sum(len(s.tags) for s in cfg.sources)
    typer.echo(f"{file}: OK — site {cfg.site.id}, gateway {cfg.gateway.id}, {len(cfg.sources)} sources, "
               f"{n_tags} tags, {len(cfg.rules)} rules (sha256 {loaded.sha256[:16]}…)")


@app.command("reference")
def reference() -> None:
    """Print the reference of every configuration field (Markdown), generated from the models.

    Example: blackbox config reference > docs/config-reference.md
    """
    from blackbox.config_reference import reference as generate

    typer.echo(generate(), nl=False)
