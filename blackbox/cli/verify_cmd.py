"""``blackbox verify-batch``: check exported batch files offline, alone or as a chain.

Uses the same :mod:`blackbox.seal` code as the store. Given several files of one gateway, it also
checks that they link (``prev_hash``, ``batch_seq``, record seqs) and follows key rotations: a
batch signed by a key the operator did not give is accepted only if an earlier batch in the set,
signed by a trusted key, rotated to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer

from blackbox.seal import (
    ChainEnd,
    KeyChain,
    OpenedBatch,
    SealError,
    breaks,
    decode_records,
    genesis_problem,
    link_problems,
    load_public_key,
    open_batch,
)


@dataclass
class _Checked:
    path: Path
    opened: OpenedBatch | None
    problem: str | None


def verify_batch(files: list[Path] = typer.Argument(..., help="Sealed batches as published (binary files)."),
                 key: list[Path] = typer.Option(..., "--key", help="Trusted gateway public key (PEM, hex, base64 or "
                                                "ssh-ed25519); repeat for several."),
                 ) -> None:
    """Verify exported batches offline: format, signature, payload; with several files, the chain too.

    Batches are checked in batch_seq order. Keys rotated to by a trusted key are trusted from the
    rotation on. Exit status 0 when everything verifies, 1 otherwise.

    Example: blackbox verify-batch export/*.bbx --key gateway.pub.pem
    """
    try:
        chain = KeyChain([load_public_key(k) for k in key])
    except SealError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    checked: list[_Checked] = []
    for path in files:
        try:
            checked.append(_Checked(path, open_batch(path.read_bytes()), None))
        except SealError as exc:
            checked.append(_Checked(path, None, f"malformed: {exc}"))
        except OSError as exc:
            checked.append(_Checked(path, None, f"cannot read: {exc.strerror or exc}"))
    checked.sort(key=lambda c: (c.opened is None, c.opened.header.batch_seq if c.opened else 0))

    failures = 0
    previous: OpenedBatch | None = None
    forks = _fork_problems([c.opened for c in checked if c.opened is not None])
    for c in checked:
        if c.opened is not None:
            c.problem = _check(chain, c.opened, previous)
            fork = forks.get(c.opened.hash)
            if fork is not None:
                c.problem = fork if c.problem is None else f"{c.problem}; {fork}"
            previous = c.opened
        if c.problem is not None:
            failures += 1
            typer.echo(f"{c.path}: REJECTED: {c.problem}", err=True)
            continue
        if c.opened is None:
            raise RuntimeError("internal error: expected c.opened is not None")
        h = c.opened.header
        typer.echo(f"{c.path}: OK — {h.site}/{h.gateway} batch {h.batch_seq}, records {h.first_seq}..{h.last_seq}, "
                   f"key {h.key_id}, clock {h.clock}, hash {c.opened.hash}, previous {h.prev_hash}")
    if len(checked) > 1:
        typer.echo(f"{len(checked) - failures} of {len(checked)} batches verified"
                   + ("" if failures else ", chain intact"))
    if failures:
        raise typer.Exit(1)


def _fork_problems(batches: list[OpenedBatch]) -> dict[str, str]:
    """Forks anywhere in the set, by batch hash: two batches naming the same predecessor, or one
    naming a batch of the set that is not numbered one below it (batch 6 naming batch 2)."""
    by_hash = {b.hash: b for b in batches}
    namers: dict[str, list[OpenedBatch]] = {}
    for b in by_hash.values():
        namers.setdefault(b.header.prev_hash, []).append(b)
    problems: dict[str, str] = {}
    for prev, group in namers.items():
        if len(group) > 1:
            names = " and ".join(f"batch {b.header.batch_seq} ({b.hash})" for b in group)
            for b in group:
                problems[b.hash] = f"fork: {names} both name {prev} as their predecessor"
    for b in by_hash.values():
        named = by_hash.get(b.header.prev_hash)
        if named is not None and breaks(ChainEnd.of(named), b.header):  # named at the wrong distance
            problems.setdefault(b.hash, f"fork: batch {b.header.batch_seq} names batch {named.header.batch_seq} "
                                        f"({named.hash}) as its predecessor")
    return problems


def _check(chain: KeyChain, opened: OpenedBatch, previous: OpenedBatch | None) -> str | None:
    """What is wrong with ``opened`` (following ``previous`` in the set), or ``None``."""
    try:
        chain.verify(opened)  # key and signature first: nothing unverified is decoded
        rotation = chain.follow(opened, decode_records(opened))
    except SealError as exc:
        return f"{type(exc).__name__}: {exc}"
    problems = []
    h = opened.header
    genesis = genesis_problem(h)
    if genesis is not None:
        problems.append(genesis)
    if previous is not None:
        if previous.header.batch_seq == opened.header.batch_seq:
            problems.append(f"two files hold batch {opened.header.batch_seq} (a fork or a copy)")
        elif previous.header.batch_seq + 1 == opened.header.batch_seq:
            problems.extend(link_problems(previous, opened))
        else:
            problems.append(f"batches {previous.header.batch_seq + 1}..{opened.header.batch_seq - 1} are missing")
    if problems:
        return "; ".join(problems)
    if rotation is not None:
        typer.echo(f"  batch {opened.header.batch_seq} rotates key {rotation.old_key_id} to {rotation.new_key_id} "
                   f"after record {rotation.seq}")
    return None
