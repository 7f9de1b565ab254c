"""``blackbox spec``: specifications co-signed by the factory QA and the regulator (docs/joint-control.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
import yaml

from blackbox.seal import (
    KeyFileError,
    KeyFileExists,
    SealError,
    fingerprint,
    generate_key_file,
    key_id,
    load_private_key,
    load_public_key,
    public_key_pem,
)
from blackbox.spec.approval import (
    ROLE_NAMES,
    ROLES,
    ApprovalError,
    KeyRing,
    Role,
    add_signature,
    read_signatures,
    sign,
    signature_path,
    write_signatures,
)
from blackbox.spec.diff import diff, flatten
from blackbox.spec.model import SpecDocument, SpecError, approve, load_spec

app = typer.Typer(help="Write, compare, sign and verify specifications: the limits and rules a line is judged "
                  "against, approved by the factory QA and the regulator.\n\n"
                  "Example: blackbox spec verify FC-050.yaml -c /etc/blackbox/blackbox.yaml", no_args_is_help=True)
keys_app = typer.Typer(help="Approval keys of the factory QA and the regulator.\n\n"
                       "Example: blackbox spec keys init --role qa --key qa.key", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

RoleOpt = typer.Option(..., "--role", help="qa (the factory's quality assurance) or regulator.")


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _role(role: str) -> Role:
    if role not in ROLES:
        raise _fail(f"--role must be qa or regulator, not {role!r}", 2)
    return role


def _load(path: Path) -> SpecDocument:
    try:
        return load_spec(path)
    except SpecError as exc:
        raise _fail(str(exc), 2) from None


def _value(v: Any) -> str:
    return "(none)" if v is None else json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else str(v)


def _ring(config: Path | None, qa_keys: list[Path], regulator_keys: list[Path]) -> KeyRing:
    ring = KeyRing()
    if config is not None:
        from blackbox.cli.common import load_or_exit
        from blackbox.spec.enforce import pinned

        spec_cfg = load_or_exit(config).config.specification
        if spec_cfg is None:
            raise _fail(f"{config} has no specification: section (give --qa-key and --regulator-key)", 2)
        try:
            ring = pinned(spec_cfg)[0]
        except SpecError as exc:
            raise _fail(str(exc), 2) from None
    try:
        keys: tuple[tuple[Role, list[Path]], ...] = (("qa", qa_keys), ("regulator", regulator_keys))
        for role, paths in keys:
            for p in paths:
                ring.add(role, load_public_key(p))
    except (SealError, ApprovalError) as exc:
        raise _fail(str(exc), 2) from None
    if not ring:
        raise _fail("give the keys to verify with: --config (its specification: section) or --qa-key and "
                    "--regulator-key", 2)
    return ring


@app.command("new")
def new(file: Path = typer.Argument(..., help="Specification file to write (YAML)."),
        spec_id: str | None = typer.Option(None, "--id", help="Specification id, e.g. FC-050."),
        product: str | None = typer.Option(None, "--product", help="Product code."),
        reason: str = typer.Option(..., "--reason", help="Why this version: the change and its justification."),
        previous: Path | None = typer.Option(None, "--from", help="Start from this version (version + 1, "
                                             "supersedes its hash)."),
        config: Path | None = typer.Option(None, "--from-config", help="Take the limits and quality rules "
                                           "configured in this gateway configuration.")) -> None:
    """Write a new specification (version 1, or the next version of --from) to FILE; then edit and sign it.

    Example: blackbox spec new FC-050.v2.yaml --from FC-050.v1.yaml --reason "emulsify HH 85 -> 84 (CAPA-17)"
    """
    if file.exists():
        raise _fail(f"{file} exists; refusing to overwrite it")
    doc: dict[str, Any]
    if previous is not None:
        prev = _load(previous)
        doc = {**prev.data, "version": prev.spec.version + 1, "supersedes": prev.sha256}
    else:
        if spec_id is None or product is None:
            raise _fail("give --id and --product (or --from a previous version)", 2)
        doc = {"id": spec_id, "product": product, "version": 1}
        if config is not None:
            from blackbox.cli.common import load_or_exit
            from blackbox.spec.enforce import judged

            doc |= judged(load_or_exit(config).config)
        else:
            doc |= {"parameters": {}, "rules": []}
    if spec_id is not None:
        doc["id"] = spec_id
    if product is not None:
        doc["product"] = product
    doc["reason"] = reason
    file.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=120), encoding="utf-8")
    written = _load(file)
    typer.echo(f"wrote {file}: {written.spec.ref()} (sha256 {written.sha256}); edit it, then have it signed: "
               f"blackbox spec sign {file} --role qa --key qa.key")


@app.command("show")
def show(file: Path = typer.Argument(..., help="Specification file."),
         against: Path | None = typer.Option(None, "--against", help="Also list what changed since this version."),
         canonical: bool = typer.Option(False, "--canonical", help="Print only the canonical bytes that are "
                                        "hashed and signed."),
         json_out: bool = typer.Option(False, "--json", help="Print one JSON document.")) -> None:
    """Print a specification: identity, hash, signatures present, every parameter (and changes --against).

    Example: blackbox spec show FC-050.v2.yaml --against FC-050.v1.yaml
    """
    from blackbox.spec.canonical import canonical_bytes

    doc = _load(file)
    if canonical:
        typer.echo(canonical_bytes(doc.data).decode())
        return
    sig_path = signature_path(file)
    try:
        sigs = [s.__dict__ for s in read_signatures(sig_path, "specification").signatures] if sig_path.exists() else []
    except ApprovalError as exc:
        raise _fail(str(exc)) from None
    changes = diff(_load(against).data, doc.data) if against is not None else None
    if json_out:
        typer.echo(json.dumps({"id": doc.spec.id, "product": doc.spec.product, "version": doc.spec.version,
                               "reason": doc.spec.reason, "sha256": doc.sha256, "signatures": sigs,
                               "parameters": flatten(doc.data),
                               "changes": None if changes is None else [c.to_json() for c in changes]},
                              indent=2, ensure_ascii=False))
        return
    s = doc.spec
    typer.echo(f"specification {s.id} v{s.version} for product {s.product}\nsha256  {doc.sha256}\n"
               f"reason  {s.reason}" + (f"\nsupersedes {s.supersedes}" if s.supersedes else ""))
    typer.echo(f"signatures ({sig_path}): " + (", ".join(f"{ROLE_NAMES[x['role']]} {x['signer']} key {x['key_id']} "
                                                          f"at {x['signed_at']}" for x in sigs) or "none"))
    typer.echo("")
    for path, value in flatten(doc.data).items():
        if "." in path:
            typer.echo(f"  {path} = {_value(value)}")
    if changes is not None:
        typer.echo(f"\nchanges since {against}:")
        for c in changes:
            typer.echo(f"  {c.path}: {_value(c.old)} -> {_value(c.new)}")
        if not changes:
            typer.echo("  (none)")


@app.command("diff")
def diff_cmd(old: Path = typer.Argument(..., help="The older version."),
             new_file: Path = typer.Argument(..., help="The newer version."),
             json_out: bool = typer.Option(False, "--json", help="Print one JSON document.")) -> None:
    """Print every parameter that differs between two specifications, with its old and new value.

    Example: blackbox spec diff FC-050.v1.yaml FC-050.v2.yaml
    """
    a, b = _load(old), _load(new_file)
    changes = diff(a.data, b.data)
    if json_out:
        typer.echo(json.dumps({"old": {"ref": a.spec.ref(), "sha256": a.sha256},
                               "new": {"ref": b.spec.ref(), "sha256": b.sha256, "reason": b.spec.reason},
                               "changes": [c.to_json() for c in changes]}, indent=2, ensure_ascii=False))
        return
    typer.echo(f"{a.spec.ref()} -> {b.spec.ref()}: {b.spec.reason}")
    for c in changes:
        typer.echo(f"  {c.path}: {_value(c.old)} -> {_value(c.new)}")
    if not changes:
        typer.echo("  no parameter changed")


@app.command("sign")
def sign_cmd(file: Path = typer.Argument(..., help="Specification file to approve."),
             role: str = RoleOpt,
             key: Path = typer.Option(..., "--key", help="Your approval private key (blackbox spec keys init)."),
             signer: str = typer.Option(..., "--signer", help="Your name, as the reports show it.")) -> None:
    """Approve FILE: add your signature to FILE.sig (over its canonical hash, your role, name and the time).

    Read `blackbox spec show` / `blackbox spec diff` first: you sign exactly the hash printed.

    Example: blackbox spec sign FC-050.v2.yaml --role regulator --key regulator.key --signer "Wang Fang"
    """
    r = _role(role)
    doc = _load(file)
    try:
        private = load_private_key(key)
    except KeyFileError as exc:
        raise _fail(str(exc)) from None
    sig_path = signature_path(file)
    try:
        existing = read_signatures(sig_path, "specification") if sig_path.exists() else None
    except ApprovalError as exc:
        raise _fail(str(exc)) from None
    sig = sign("specification", doc.sha256, r, private, signer)
    write_signatures(sig_path, add_signature(existing, "specification", doc.sha256, sig))
    typer.echo(f"signed {doc.spec.ref()} (sha256 {doc.sha256}) as {ROLE_NAMES[r]} {signer}, key {sig.key_id}, "
               f"at {sig.signed_at}; signatures in {sig_path}")


@app.command("verify")
def verify_cmd(file: Path = typer.Argument(..., help="Specification file."),
               config: Path | None = typer.Option(None, "--config", "-c", help="Verify with the keys this gateway "
                                                  "configuration pins."),
               qa_key: list[Path] = typer.Option([], "--qa-key", help="A factory QA public key (PEM)."),
               regulator_key: list[Path] = typer.Option([], "--regulator-key", help="A regulator public key (PEM)."),
               json_out: bool = typer.Option(False, "--json", help="Print one JSON document.")) -> None:
    """Check that FILE is approved: a valid factory QA and a valid regulator signature, nothing else; exit 1 if not.

    Example: blackbox spec verify FC-050.v2.yaml --qa-key qa.pub.pem --regulator-key regulator.pub.pem
    """
    ring = _ring(config, qa_key, regulator_key)
    doc = _load(file)
    try:
        approved = approve(doc, read_signatures(signature_path(file), "specification"), ring)
    except ApprovalError as exc:
        if json_out:
            typer.echo(json.dumps({"approved": False, "sha256": doc.sha256, "reason": str(exc)}, indent=2))
            raise typer.Exit(1) from None
        raise _fail(f"{doc.spec.ref()} is NOT approved: {exc}") from None
    if json_out:
        typer.echo(json.dumps({"approved": True, **approved.reference()}, indent=2, ensure_ascii=False))
        return
    typer.echo(f"{doc.spec.ref()} (sha256 {doc.sha256}) is approved by:")
    for a in approved.approvals:
        typer.echo(f"  {a.describe()}")


@keys_app.command("init")
def keys_init(role: str = RoleOpt,
              key: Path = typer.Option(..., "--key", help="Private key file to create (mode 0600); the public key "
                                       "goes next to it as <name>.pub.pem.")) -> None:
    """Create an approval key pair for a role. Keep the private key with its holder (never on a gateway).

    Example: blackbox spec keys init --role regulator --key ~/.blackbox/regulator.key
    """
    r = _role(role)
    try:
        private = generate_key_file(key)
    except KeyFileExists as exc:
        raise _fail(str(exc)) from None
    pub = private.public_key()
    pub_path = key.with_name(key.stem + ".pub.pem")
    pub_path.write_text(public_key_pem(pub), encoding="ascii")
    typer.echo(f"created {ROLE_NAMES[r]} key {key} (keep it private)\npublic key {pub_path}\n"
               f"key id      {key_id(pub)}\nfingerprint {fingerprint(pub)}")
