"""``blackbox store keys|checkpoint|proof`` on a real store file: what they print verifies independently."""

from __future__ import annotations

import base64
import contextlib
import stat
from collections.abc import Iterator
from pathlib import Path

import orjson
from sqlalchemy import Engine
from store_synth import GATEWAY, SITE, T0, Gateway
from tlog.naive import n_mth
from typer.testing import CliRunner

from blackbox.cli.main import app
from blackbox.store.db import open_store
from blackbox.store.ingest import Ingestor
from blackbox.store.tlog import TransparencyLog, load_signer
from blackbox.tlog.merkle import leaf_hash, verify_consistency, verify_inclusion
from blackbox.tlog.note import open_checkpoint, parse_vkey

ORIGIN = "example.org/blackbox-store"


@contextlib.contextmanager
def engine_ctx(url: str) -> Iterator[Engine]:
    engine = open_store(url)
    try:
        yield engine
    finally:
        engine.dispose()


def run(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result.output


def test_keys_checkpoint_and_proofs(tmp_path: Path) -> None:
    key = tmp_path / "store.key"
    created = run("store", "keys", "init", "--key", str(key), "--origin", ORIGIN)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    vkey = created.strip().splitlines()[-1]
    verifier = parse_vkey(vkey)
    assert verifier.name == ORIGIN
    assert run("store", "keys", "show", "--key", str(key), "--origin", ORIGIN).splitlines()[0] == vkey
    run("store", "keys", "init", "--key", str(key), "--origin", ORIGIN, code=1)  # never overwritten

    url = f"sqlite:///{tmp_path}/store.sqlite"
    engine = open_store(url)
    gw = Gateway()
    ingestor = Ingestor(engine)
    ingestor.enroll(GATEWAY, SITE, gw.public_pem)
    hashes = []
    for i in range(5):
        gw.reading("t", float(i), T0 + i)
        sealed = gw.seal()
        hashes.append(sealed.hash)
        assert ingestor.handle(sealed.wire, SITE, GATEWAY).status == "stored"
    engine.dispose()

    checkpoint = open_checkpoint(run("store", "checkpoint", "--key", str(key), "--origin", ORIGIN, "--db", url),
                                 verifier)
    assert checkpoint.size == 6  # the enrolment and five batches

    proof = orjson.loads(run("store", "proof", "--batch", hashes[2], "--db", url))
    entry = proof["entry"].encode()
    assert orjson.loads(entry)["hash"] == hashes[2]
    verify_inclusion(proof["index"], proof["size"], leaf_hash(entry), [base64.b64decode(h) for h in proof["proof"]],
                     checkpoint.root)

    entries = [orjson.loads(run("store", "proof", "--entry", str(i), "--db", url))["entry"].encode() for i in range(6)]
    assert n_mth(entries) == checkpoint.root
    cons = orjson.loads(run("store", "proof", "--from", "2", "--db", url))
    verify_consistency(2, 6, n_mth(entries[:2]), checkpoint.root, [base64.b64decode(h) for h in cons["proof"]])

    # offline, with files only: the checkpoint, an older one, the proofs
    new_cp, old_cp = tmp_path / "new.txt", tmp_path / "old.txt"
    new_cp.write_text(run("store", "checkpoint", "--key", str(key), "--origin", ORIGIN, "--db", url))
    incl, cons_file = tmp_path / "incl.json", tmp_path / "cons.json"
    incl.write_text(orjson.dumps(proof).decode())
    cons_file.write_text(orjson.dumps(cons).decode())
    assert "included: entry" in run("verify-checkpoint", str(new_cp), "--key", vkey, "--proof", str(incl))
    with engine_ctx(url) as e2:
        old_cp.write_text(TransparencyLog(e2, load_signer(key, ORIGIN)).signed_checkpoint(2))
    assert "consistent" in run("verify-checkpoint", str(new_cp), "--key", vkey, "--previous", str(old_cp),
                               "--proof", str(cons_file))
    forged = dict(cons, proof=[base64.b64encode(bytes(32)).decode()] * len(cons["proof"]))
    cons_file.write_text(orjson.dumps(forged).decode())
    run("verify-checkpoint", str(new_cp), "--key", vkey, "--previous", str(old_cp), "--proof", str(cons_file), code=1)
    other = parse_vkey(run("store", "keys", "init", "--key", str(tmp_path / "other.key"), "--origin", ORIGIN)
                       .strip().splitlines()[-1]).vkey
    run("verify-checkpoint", str(new_cp), "--key", other, code=1)  # another key: the signature does not verify

    assert "no batch with hash" in run("store", "proof", "--batch", "ab" * 32, "--db", url, code=1)
    assert "the log has 6 entries" in run("store", "proof", "--from", "7", "--db", url, code=1)
