"""``blackbox keys``: the gateway's Ed25519 signing key."""

from __future__ import annotations

from pathlib import Path

import orjson
import typer

from blackbox.cli.common import load_or_exit
from blackbox.seal import KeyFileExists, fingerprint, generate_key_file, key_id, load_private_key, public_key_pem

app = typer.Typer(help="Create, show and rotate the gateway's signing key.\n\n"
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
    except OSError as exc:
        typer.echo(f"error: cannot create key file {path}: {exc.strerror or exc}"
                   f"{' (' + exc.filename + ')' if exc.filename else ''}", err=True)
        raise typer.Exit(1) from None
    pub = private.public_key()
    typer.echo(f"created {path}\nkey id      {key_id(pub)}\nfingerprint {fingerprint(pub)}\n")
    typer.echo(public_key_pem(pub))


@app.command("show")
def show(config: Path | None = typer.Option(None, "--config", "-c", help="Take the key path from this configuration."),
         key: Path | None = typer.Option(None, "--key", help="Key file to read.")) -> None:
    """Print the public key, its id and fingerprint, for people (a file for enrolment: keys export).

    Example: blackbox keys show -c /etc/blackbox/blackbox.yaml
    """
    pub = load_private_key(_key_path(config, key)).public_key()
    typer.echo(f"key id      {key_id(pub)}\nfingerprint {fingerprint(pub)}\n")
    typer.echo(public_key_pem(pub))


@app.command("export")
def export(public: Path = typer.Option(..., "--public", help="File to write the public key to (PEM); '-' for "
                                       "standard output."),
           config: Path | None = typer.Option(None, "--config", "-c", help="Take the key path from this config."),
           key: Path | None = typer.Option(None, "--key", help="Key file to read.")) -> None:
    """Write the gateway's public key, PEM only, for `blackbox store enroll` and `verify-batch --key`.

    Example: blackbox keys export --public gw-cream-01.pub.pem -c /etc/blackbox/blackbox.yaml
    """
    pub = load_private_key(_key_path(config, key)).public_key()
    pem = public_key_pem(pub)
    if str(public) == "-":
        typer.echo(pem, nl=not pem.endswith("\n"))
        return
    try:
        public.write_text(pem, encoding="ascii")
    except OSError as exc:
        typer.echo(f"error: cannot write {public}: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"wrote the public key {key_id(pub)} to {public}", err=True)


@app.command("rotate")
def rotate(config: Path = typer.Option(..., "--config", "-c", help="The running agent's configuration file."),
           json_out: bool = typer.Option(False, "--json", help="Print one JSON document.")) -> None:
    """Rotate the signing key of the running agent, as an event in its chain.

    The agent writes a new key next to the old one, records a key.rotated event naming it, seals
    that event as the last record signed by the old key, and signs everything after it with the
    new key. The store learns the new key from the chain (no new enrollment needed); the old key
    file is replaced. The agent must be running: the rotation is part of its record.

    Example: blackbox keys rotate -c /etc/blackbox/blackbox.yaml
    """
    from blackbox.cli.common import agent_call

    result = agent_call(config, "keys.rotate")
    if json_out:
        typer.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
        return
    typer.echo(f"rotated key {result['old_key_id']} -> {result['new_key_id']} at record {result['seq']} "
               f"(sealed in batch {result['batch_seq']}); now signing with {result['in_force']}\n"
               f"fingerprint {result['fingerprint']}\n")
    typer.echo(result["public_key_pem"])
