"""Key rotation in the chain, as the offline verifier follows it (``KeyChain``, ``blackbox verify-batch``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from blackbox.cli.main import app
from blackbox.model import Event, Quality, Reading
from blackbox.seal import (
    GENESIS_HASH,
    KEY_ROTATED,
    BadSignature,
    KeyChain,
    KeyNotInForce,
    RotationError,
    SealedBatch,
    UnknownKey,
    decode_records,
    genesis_problem,
    key_range_breach,
    open_batch,
    public_key_pem,
    rotation_data,
    seal_batch,
)

from .helpers import CONFIG_HASH, T0, craft_document


class Chain:
    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.seq, self.batch_seq, self.prev = 1, 1, GENESIS_HASH
        self.batches: list[SealedBatch] = []

    def seal(self, n: int = 2, *, rotate_to: Ed25519PrivateKey | None = None, key: Any = None) -> SealedBatch:
        records: list[Reading | Event] = [Reading(self.seq + i, "T", 1.0 + i, Quality.GOOD, None, T0 + self.seq + i,
                                                  None, None, None) for i in range(n)]
        if rotate_to is not None:
            records.append(Event(self.seq + n, KEY_ROTATED, None, rotation_data(self.key, rotate_to, "test"),
                                 T0 + self.seq + n, None, None))
        sealed = seal_batch(records, site="S-1", gateway="gw-1", key=key or self.key, batch_seq=self.batch_seq,
                            prev_hash=self.prev, config_hash=CONFIG_HASH)
        self.seq += len(records)
        self.batch_seq += 1
        self.prev = sealed.hash
        self.batches.append(sealed)
        if rotate_to is not None:
            self.key = rotate_to
        return sealed


def check(chain: KeyChain, sealed: SealedBatch) -> Any:
    opened = open_batch(sealed.wire)
    return chain.check(opened, decode_records(opened))


def test_the_chain_vouches_for_the_new_key() -> None:
    c = Chain()
    trusted = KeyChain([c.key.public_key()])
    new = Ed25519PrivateKey.generate()
    assert check(trusted, c.seal()) is None
    rotation = check(trusted, c.seal(rotate_to=new))
    assert rotation is not None and rotation.seq == 5
    assert check(trusted, c.seal()) is None  # signed by the new key, which nobody gave the verifier


def test_a_key_nobody_vouched_for_is_unknown() -> None:
    c = Chain()
    with pytest.raises(UnknownKey):
        check(KeyChain([Ed25519PrivateKey.generate().public_key()]), c.seal())


def test_the_old_key_is_retired_by_its_rotation() -> None:
    c = Chain()
    old = c.key
    trusted = KeyChain([old.public_key()])
    check(trusted, c.seal(rotate_to=Ed25519PrivateKey.generate()))
    with pytest.raises(KeyNotInForce, match="retired"):
        check(trusted, c.seal(key=old))


def test_a_forged_signature_under_a_trusted_key_id_fails() -> None:
    c = Chain()
    trusted = KeyChain([c.key.public_key()])
    sealed = c.seal()
    forged = sealed.wire[:-64] + Ed25519PrivateKey.generate().sign(sealed.wire[:-64])
    with pytest.raises(BadSignature):
        trusted.check(open_batch(forged), decode_records(open_batch(forged)))


@pytest.mark.parametrize("problem", ["not last", "signed by another key", "id of another key", "twice"])
def test_rotations_that_break_the_rules(problem: str) -> None:
    c = Chain()
    new, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    data = rotation_data(c.key, new, "test")
    records: list[Reading | Event] = [Event(1, KEY_ROTATED, None, data, T0, None, None)]
    if problem == "not last":
        records.append(Reading(2, "T", 1.0, Quality.GOOD, None, T0, None, None, None))
    elif problem == "signed by another key":
        records = [Event(1, KEY_ROTATED, None, rotation_data(other, new, "x"), T0, None, None)]
    elif problem == "id of another key":
        records = [Event(1, KEY_ROTATED, None, {**data, "new_key_id": "0" * 16}, T0, None, None)]
    else:
        records.append(Event(2, KEY_ROTATED, None, rotation_data(c.key, other, "x"), T0, None, None))
    sealed = seal_batch(records, site="S-1", gateway="gw-1", key=c.key, batch_seq=1, prev_hash=GENESIS_HASH,
                        config_hash=CONFIG_HASH)
    with pytest.raises(RotationError):
        check(KeyChain([c.key.public_key()]), sealed)


def export(tmp_path: Path, chain: Chain, skip: tuple[int, ...] = ()) -> list[str]:
    files = []
    for b in chain.batches:
        if b.header.batch_seq in skip:
            continue
        f = tmp_path / f"b{b.header.batch_seq:04d}.bbx"
        f.write_bytes(b.wire)
        files.append(str(f))
    return files


def pem_file(tmp_path: Path, key: Ed25519PrivateKey) -> str:
    f = tmp_path / "gateway.pub.pem"
    f.write_text(public_key_pem(key.public_key()))
    return str(f)


def test_verify_batch_checks_a_chain_across_a_rotation(tmp_path: Path) -> None:
    c = Chain()
    first_key = c.key
    c.seal()
    c.seal(rotate_to=Ed25519PrivateKey.generate())
    c.seal()
    result = CliRunner().invoke(app, ["verify-batch", *reversed(export(tmp_path, c)), "--key",
                                      pem_file(tmp_path, first_key)])
    assert result.exit_code == 0, result.output
    assert "3 of 3 batches verified, chain intact" in result.output
    assert "batch 2 rotates key" in result.output


@pytest.mark.parametrize(("damage", "expected"), [
    ("missing", "batches 2..2 are missing"),
    ("fork", "two files hold batch 2"),
    ("tampered", "BadSignature"),
    ("untrusted", "UnknownKey"),
])
def test_verify_batch_says_what_is_wrong(tmp_path: Path, damage: str, expected: str) -> None:
    c = Chain()
    for _ in range(3):
        c.seal()
    files = export(tmp_path, c, skip=(2,) if damage == "missing" else ())
    key = c.key
    if damage == "fork":
        twin = seal_batch([Reading(3, "T", 9.0, Quality.GOOD, None, T0, None, None, None)], site="S-1",
                          gateway="gw-1", key=c.key, batch_seq=2, prev_hash=c.batches[0].hash, config_hash=CONFIG_HASH)
        (tmp_path / "twin.bbx").write_bytes(twin.wire)
        files.append(str(tmp_path / "twin.bbx"))
    elif damage == "tampered":
        wire = bytearray(Path(files[1]).read_bytes())
        wire[-80] ^= 0xFF
        Path(files[1]).write_bytes(bytes(wire))
    elif damage == "untrusted":
        key = Ed25519PrivateKey.generate()
    result = CliRunner().invoke(app, ["verify-batch", *files, "--key", pem_file(tmp_path, key)])
    assert result.exit_code == 1
    assert expected in result.output


def test_verify_batch_finds_a_fork_through_a_non_adjacent_batch(tmp_path: Path) -> None:
    """Batch 6 naming batch 2 while batch 3 names it too; batches 4 and 5 are not in the set."""
    c = Chain()
    for _ in range(3):
        c.seal()
    files = export(tmp_path, c)
    fork = seal_batch([Reading(100, "T", 9.0, Quality.GOOD, None, T0, None, None, None)], site="S-1",
                      gateway="gw-1", key=c.key, batch_seq=6, prev_hash=c.batches[1].hash, config_hash=CONFIG_HASH)
    (tmp_path / "fork.bbx").write_bytes(fork.wire)
    result = CliRunner().invoke(app, ["verify-batch", *files, str(tmp_path / "fork.bbx"), "--key",
                                      pem_file(tmp_path, c.key)])
    assert result.exit_code == 1
    both = f"batch 3 ({c.batches[2].hash}) and batch 6 ({fork.hash}) both name {c.batches[1].hash}"
    assert result.output.count(both) == 2, result.output  # reported on each of the two batches


def test_verify_batch_refuses_an_integer_it_cannot_read_exactly(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    document = b'{"e":[],"r":[[1,"T",18446744073709551616,"good",null,10,null,null,null]]}'
    (tmp_path / "big.bbx").write_bytes(craft_document(document, key, site="S-1", gateway="gw-1"))
    result = CliRunner().invoke(app, ["verify-batch", str(tmp_path / "big.bbx"), "--key", pem_file(tmp_path, key)])
    assert result.exit_code == 1
    assert "integer 18446744073709551616, outside" in result.output


def test_verify_batch_says_only_batch_1_names_genesis(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    record = [Reading(1, "T", 1.0, Quality.GOOD, None, T0, None, None, None)]
    files = []
    for batch_seq, prev in ((1, "ab" * 32), (4, GENESIS_HASH)):
        sealed = seal_batch(record, site="S-1", gateway="gw-1", key=key, batch_seq=batch_seq, prev_hash=prev,
                            config_hash=CONFIG_HASH)
        (tmp_path / f"{batch_seq}.bbx").write_bytes(sealed.wire)
        files.append(str(tmp_path / f"{batch_seq}.bbx"))
    for f in files:
        result = CliRunner().invoke(app, ["verify-batch", f, "--key", pem_file(tmp_path, key)])
        assert result.exit_code == 1 and "batch 1, and only batch 1, names genesis" in result.output, result.output


@pytest.mark.parametrize(("valid_from", "valid_to", "expected"), [
    (None, None, None),  # an enrolled key never rotated: unbounded
    (3, None, None),     # rotated in at the batch's first record
    (None, 6, None),     # retired after the batch's last record
    (3, 6, None),
    (4, None, "before"),  # rotated in after the batch starts
    (None, 5, "after"),   # retired before the batch ends
    (7, 9, "before"),
])
def test_key_range_breach(valid_from: int | None, valid_to: int | None, expected: str | None) -> None:
    chain = Chain()
    chain.seal(2)  # records 1..2
    header = chain.seal(4).header  # records 3..6
    assert (header.first_seq, header.last_seq) == (3, 6)
    assert key_range_breach(header, valid_from, valid_to) == expected


@pytest.mark.parametrize(("batch_seq", "prev_hash", "ok"), [
    (1, GENESIS_HASH, True),
    (2, "ab" * 32, True),
    (1, "ab" * 32, False),     # batch 1 must name genesis
    (2, GENESIS_HASH, False),  # and only batch 1 may
])
def test_genesis_rule(batch_seq: int, prev_hash: str, ok: bool) -> None:
    header = dataclasses.replace(Chain().seal(2).header, batch_seq=batch_seq, prev_hash=prev_hash)
    problem = genesis_problem(header)
    assert (problem is None) == ok
    if not ok:
        assert problem == (f"batch {batch_seq} with prev_hash {prev_hash}: batch 1, and only batch 1, "
                           f"names genesis")
