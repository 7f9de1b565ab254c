"""``blackbox store keys|checkpoint|proof``: the store's key and its transparency log."""

from __future__ import annotations

import base64
from pathlib import Path

import orjson
import typer

from blackbox.cli.common import load_or_exit, store_config_or_exit
from blackbox.cli.store_cmd import database_errors, open_reader
from blackbox.tlog.note import NoteError, Signer, Verifier, parse_vkey

keys_app = typer.Typer(help="The store's Ed25519 key, which signs receipts and checkpoints.\n\n"
                       "Example: blackbox store keys init -c /etc/blackbox/store.yaml", no_args_is_help=True)

CONFIG = typer.Option(None, "--config", "-c", help="Configuration with a store: section.")
KEY = typer.Option(None, "--key", help="The store key file (instead of store.key_file of --config).")
ORIGIN = typer.Option(None, "--origin", help="The log's name (instead of store.log_origin of --config).")
DB = typer.Option(None, "--db", help="Database URL (instead of --config).")


def _key_and_origin(config: Path | None, key: Path | None, origin: str | None) -> tuple[Path, str]:
    if config is not None:
        store = store_config_or_exit(config)
        return key or store.key_file, origin or store.log_origin
    if key is None or origin is None:
        raise typer.BadParameter("give --config, or both --key and --origin")
    return key, origin


def _signer(config: Path | None, key: Path | None, origin: str | None) -> Signer:
    from blackbox.seal import SealError
    from blackbox.store.tlog import load_signer

    path, name = _key_and_origin(config, key, origin)
    try:
        signer = load_signer(path, name)
        signer.verifier  # noqa: B018 - checks the name
    except (SealError, NoteError, OSError) as exc:
        typer.echo(f"error: cannot use the store key {path}: {exc}", err=True)
        raise typer.Exit(1) from None
    return signer


@keys_app.command("init")
def keys_init(config: Path | None = CONFIG, key: Path | None = KEY, origin: str | None = ORIGIN) -> None:
    """Create the store's Ed25519 key (mode 0600; never overwrites one) and print its verifier key.

    Example: blackbox store keys init -c /etc/blackbox/store.yaml
    """
    from blackbox.seal import KeyFileExists, generate_key_file

    path, name = _key_and_origin(config, key, origin)
    try:
        private = generate_key_file(path)
    except KeyFileExists as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"created {path}\nverifier key (pin it as uplink.store_key on every gateway):\n"
               f"{Verifier(name, private.public_key()).vkey}")


@keys_app.command("show")
def keys_show(config: Path | None = CONFIG, key: Path | None = KEY, origin: str | None = ORIGIN) -> None:
    """Print the store's verifier key (for uplink.store_key and for witnesses) and its public key PEM.

    Example: blackbox store keys show -c /etc/blackbox/store.yaml
    """
    from blackbox.seal import public_key_pem

    signer = _signer(config, key, origin)
    typer.echo(f"{signer.verifier.vkey}\n")
    typer.echo(public_key_pem(signer.private_key.public_key()))


def checkpoint(config: Path | None = CONFIG, key: Path | None = KEY, origin: str | None = ORIGIN,
               db: str | None = DB) -> None:
    """Print the log's current tree head as a signed checkpoint (C2SP tlog-checkpoint note).

    Example: blackbox store checkpoint -c /etc/blackbox/store.yaml > checkpoint.txt
    """
    from blackbox.store.tlog import TransparencyLog

    signer = _signer(config, key, origin)
    with database_errors():
        typer.echo(TransparencyLog(open_reader(config, db), signer).signed_checkpoint(), nl=False)


def proof(batch: str | None = typer.Option(None, "--batch", help="Inclusion proof of the batch with this hash."),
          entry: int | None = typer.Option(None, "--entry", help="Inclusion proof of the entry at this index."),
          old: int | None = typer.Option(None, "--from", help="Consistency proof from this tree size…"),
          size: int | None = typer.Option(None, "--size", help="…to this tree size (default: the log's size now); "
                                          "also the tree of an inclusion proof."),
          config: Path | None = CONFIG, db: str | None = DB) -> None:
    """Print an inclusion proof (--batch or --entry) or a consistency proof (--from) as JSON.

    Hashes are base64, as in checkpoints. Check an inclusion proof against a checkpoint of the
    same size, a consistency proof against two checkpoints (docs/transparency.md).

    Example: blackbox store proof --batch 3f5a…e1 -c /etc/blackbox/store.yaml
    """
    from blackbox.store.tlog import LogError, TransparencyLog

    if sum(x is not None for x in (batch, entry, old)) != 1:
        raise typer.BadParameter("give exactly one of --batch, --entry, --from")
    with database_errors():
        tlog = TransparencyLog(open_reader(config, db))
        current, _ = tlog.head()
        tree = current if size is None else size
        try:
            if old is not None:
                doc: dict[str, object] = {"from": old, "to": tree, "old_root": _b64(tlog.root(old)),
                                          "new_root": _b64(tlog.root(tree)),
                                          "proof": [_b64(h) for h in tlog.consistency(old, tree)]}
            else:
                if batch is not None:
                    found = tlog.find("batch", batch.lower())
                    if found is None:
                        typer.echo(f"error: no batch with hash {batch} in the log", err=True)
                        raise typer.Exit(1)
                    index, data = found
                else:
                    if entry is None:
                        raise RuntimeError("internal error: expected entry is not None")
                    index, data = entry, tlog.entry(entry) or b""
                doc = {"index": index, "size": tree, "root": _b64(tlog.root(tree)),
                       "entry": data.decode("utf-8", "replace"),
                       "proof": [_b64(h) for h in tlog.inclusion(index, tree)]}
        except LogError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
    typer.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def receipts(config: Path = typer.Option(..., "--config", "-c", help="The agent's configuration (its buffer)."),
             export: Path | None = typer.Option(None, "--export", help="Write every receipt, with the store key and "
                                                "the latest checkpoint, to this JSON file."),
             after: int = typer.Option(0, "--after", help="Only batches after this batch_seq.")) -> None:
    """List the store's signed receipts this gateway verified and kept, or export them for an auditor.

    Each says the store accepted a batch (its hash) as entry INDEX of its transparency log, under a
    signed tree head; the export can be checked without blackbox (docs/transparency.md).

    Example: blackbox receipts -c /etc/blackbox/blackbox.yaml --export receipts.json
    """
    import sqlite3

    from blackbox.model import iso
    from blackbox.sqlite import BUFFER_BUSY_TIMEOUT_MS, connect_readonly
    from blackbox.uplink.forwarder import CHECKPOINT_KEY

    loaded = load_or_exit(config).config
    path = loaded.buffer.path
    if not path.is_file():
        typer.echo(f"error: no buffer at {path}", err=True)
        raise typer.Exit(1)
    try:
        db = connect_readonly(path, BUFFER_BUSY_TIMEOUT_MS)
        db.row_factory = sqlite3.Row
        rows = [dict(r) for r in db.execute("SELECT * FROM receipts WHERE batch_seq > ? ORDER BY batch_seq",
                                            (after,))]
        latest = db.execute("SELECT value FROM meta WHERE key = ?", (CHECKPOINT_KEY,)).fetchone()
        db.close()
    except sqlite3.Error as exc:
        typer.echo(f"error: cannot read the receipts in {path}: {exc} (an agent older than receipts?)", err=True)
        raise typer.Exit(1) from None
    if export is not None:
        doc = {"site": loaded.site.id, "gateway": loaded.gateway.id, "store_key": loaded.uplink.store_key,
               "latest_checkpoint": latest[0] if latest else None,
               "receipts": [{**r, "inclusion": orjson.loads(r["inclusion"])} for r in rows]}
        export.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
        typer.echo(f"wrote {len(rows)} receipt(s) to {export}")
        return
    for r in rows:
        typer.echo(f"batch {r['batch_seq']}  {r['hash'][:16]}…  {r['status']:9s}  log entry {r['log_index']} "
                   f"of {r['tree_size']}  accepted by the store {iso(r['received_at_us'])}")
    typer.echo(f"{len(rows)} receipt(s)" + (f"; latest store tree head: {latest[0].splitlines()[1]} entries"
                                            if latest else ""), err=True)


def verify_checkpoint(checkpoint: Path = typer.Argument(..., help="A signed checkpoint (a file)."),
                      key: str = typer.Option(..., "--key", help="The store's verifier key (name+hash+base64)."),
                      previous: Path | None = typer.Option(None, "--previous", help="An older signed checkpoint "
                                                           "of the same log, to check CHECKPOINT extends it."),
                      proof: Path | None = typer.Option(None, "--proof", help="The JSON of `blackbox store proof "
                                                        "--from OLD --size NEW` (with --previous), or of `store proof "
                                                        "--batch/--entry --size NEW`.")) -> None:
    """Check a store checkpoint offline: its signature, and with a proof, consistency or inclusion.

    Needs no database and no store key, only the verifier key the store published. Exit 0 when
    everything verifies, 1 otherwise.

    Example: blackbox verify-checkpoint new.txt --key "$VKEY" --previous old.txt --proof consistency.json
    """
    from blackbox.tlog.merkle import ProofError, leaf_hash, verify_consistency, verify_inclusion
    from blackbox.tlog.note import open_checkpoint

    def fail(message: str) -> typer.Exit:
        typer.echo(f"FAILED: {message}", err=True)
        return typer.Exit(1)

    try:
        verifier = parse_vkey(key)
        new = open_checkpoint(checkpoint.read_bytes(), verifier)
        old = open_checkpoint(previous.read_bytes(), verifier) if previous is not None else None
        doc = orjson.loads(proof.read_bytes()) if proof is not None else None
    except OSError as exc:
        raise fail(f"cannot read {exc.filename}: {exc.strerror}") from None
    except NoteError as exc:
        raise fail(str(exc)) from None
    except orjson.JSONDecodeError as exc:
        raise fail(f"{proof} is not JSON: {exc}") from None
    typer.echo(f"checkpoint of {new.origin}: {new.size} entries, signed by {verifier.name}")
    if doc is None:
        if old is not None:
            raise fail("--previous needs --proof (`blackbox store proof --from OLD --size NEW`)")
        return
    try:
        hashes = [base64.b64decode(h, validate=True) for h in doc["proof"]]
        if old is not None:
            if (doc.get("from"), doc.get("to")) != (old.size, new.size):
                raise fail(f"the proof is from {doc.get('from')} to {doc.get('to')}, not {old.size} to {new.size}")
            verify_consistency(old.size, new.size, old.root, new.root, hashes)
            typer.echo(f"consistent: the log of {old.size} entries is a prefix of the log of {new.size}")
        else:
            if doc.get("size") != new.size:
                raise fail(f"the inclusion proof is for a tree of {doc.get('size')}, the checkpoint has {new.size}")
            verify_inclusion(int(doc["index"]), new.size, leaf_hash(str(doc["entry"]).encode()), hashes, new.root)
            typer.echo(f"included: entry {doc['index']} is in the log: {doc['entry']}")
    except ProofError as exc:
        raise fail(str(exc)) from None
    except (KeyError, TypeError, ValueError) as exc:
        raise fail(f"{proof} is not a proof of `blackbox store proof` ({exc})") from None
