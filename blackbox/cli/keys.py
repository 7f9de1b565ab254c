"""``blackbox keys``: the gateway's Ed25519 signing key."""

from __future__ import annotations

from pathlib import Path

import typer

from blackbox.cli.common import load_or_exit
from blackbox.seal import KeyFileExists, fingerprint, generate_key_file, key_id, load_private_key, public_key_pem

app = typer.Typer(help="Create and show the gateway's signing key.\n\n"
                  "Example: blackbox keys init -c /etc/blackbox/blackbox.yaml", no_args_is_help=True)


def _key_path(config: Path | None, key: Path | None) -> Path:
    if key is not None:
        return key
    if config is not None:
        return load_or_exit(config).config.gateway.key_file
    raise typer.BadParameter("give --config or --key")


@app.command("init")
def init(config: Path | None = typer.Option(None, "--config", "-c", help="Take the key path from this configuration."),
         key: Path | None = typer.Option(None, "--key", help="Key file to create.")) -> None:
    """Create the gateway's Ed25519 key (mode 0600); refuses to overwrite an existing key.

    Example: blackbox keys init -c /etc/blackbox/blackbox.yaml
    """
    path = _key_path(config, key)
    try:
        private = generate_key_file(path)
    except KeyFileExists as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    pub = private.public_key()
    typer.echo(f"created {path}\nkey id      {key_id(pub)}\nfingerprint {fingerprint(pub)}\n")
    typer.echo(public_key_pem(pub))


@app.command("show")
def show(config: Path | None = typer.Option(None, "--config", "-c", help="Take the key path from this configuration."),
         key: Path | None = typer.Option(None, "--key", help="Key file to read.")) -> None:
    """Print the public key, its id and fingerprint (to enroll the gateway in the store).

    Example: blackbox keys show -c /etc/blackbox/blackbox.yaml
    """
    pub = load_private_key(_key_path(config, key)).public_key()
    typer.echo(f"key id      {key_id(pub)}\nfingerprint {fingerprint(pub)}\n")
    typer.echo(public_key_pem(pub))
