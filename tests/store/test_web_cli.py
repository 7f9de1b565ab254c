"""The web window's commands as a user runs them: tokens, users, batch search, reverse lot, store web."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner, Result
from web_support import BATCH, OTHER_BATCH, OTHER_SITE, REFERENCES, REUSED, SITE, build_store

from blackbox.cli.main import app
from blackbox.store.db import make_engine, open_store
from blackbox.store.schema import create_schema
from blackbox.web.auth import check_password, token_principal


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Engine]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('cli')}/store.sqlite"
    engine = open_store(url)
    build_store(engine)
    try:
        yield url, engine
    finally:
        engine.dispose()


def run(*args: str, password: str | None = None) -> Result:
    """The command in-process (typer's runner); ``store web`` below runs as a real process."""
    env = {"BLACKBOX_PASSWORD": password} if password is not None else {"BLACKBOX_PASSWORD": ""}
    return CliRunner().invoke(app, list(args), env=env, input="")


def test_token_add_list_revoke(db: tuple[str, Engine]) -> None:
    url, engine = db
    added = run("store", "token", "add", "lims-sh", "--role", "factory_qa", "--site", SITE, "--db", url)
    assert added.exit_code == 0, added.stderr
    token = added.stdout.strip()
    assert "cannot be shown again" in added.stderr
    principal = token_principal(engine, token)
    assert principal is not None and (principal.role, principal.sites) == ("factory_qa", frozenset({SITE}))
    token_id = token.split("_")[1]
    listed = run("store", "token", "list", "--db", url)
    assert token_id in listed.stdout and "lims-sh" in listed.stdout
    assert token.split("_", 2)[2] not in listed.stdout  # never the secret
    assert run("store", "token", "revoke", token_id, "--db", url).exit_code == 0
    assert token_principal(engine, token) is None
    again = run("store", "token", "revoke", token_id, "--db", url)
    assert again.exit_code == 1 and "no active token" in again.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--role", "factory_qa"], "exactly one site"),
    (["--role", "factory_qa", "--site", "A", "--site", "B"], "exactly one site"),
    (["--role", "admin", "--site", "A"], "no batch data"),
    (["--role", "inspector"], "unknown role"),
])
def test_token_add_refuses_a_bad_role_or_sites(db: tuple[str, Engine], args: list[str], message: str) -> None:
    proc = run("store", "token", "add", "x", *args, "--db", db[0])
    assert proc.exit_code == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_user_add_hashes_the_password(db: tuple[str, Engine]) -> None:
    url, engine = db
    proc = run("store", "user", "add", "auditor.wu", "--role", "regulator", "--db", url, password="a long secret!")
    assert proc.exit_code == 0, proc.stderr
    assert check_password(engine, "auditor.wu", "a long secret!") is not None
    assert check_password(engine, "auditor.wu", "a long secret?") is None
    with engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT password_hash FROM web_users WHERE username='auditor.wu'").scalar_one()
    assert stored.startswith("$argon2id$") and "a long secret!" not in stored
    short = run("store", "user", "add", "x", "--role", "regulator", "--db", url, password="short")
    assert short.exit_code == 2 and "10 characters" in short.stderr
    twice = run("store", "user", "add", "auditor.wu", "--role", "regulator", "--db", url, password="a long secret!")
    assert twice.exit_code == 2 and "already exists" in twice.stderr
    assert run("store", "user", "disable", "auditor.wu", "--db", url).exit_code == 0
    assert check_password(engine, "auditor.wu", "a long secret!") is None


def test_batches_search(db: tuple[str, Engine]) -> None:
    url = db[0]
    proc = run("batches", "--site", SITE, "--product", "FC-050", "--json", "--db", url)
    assert proc.exit_code == 0, proc.stderr
    body = orjson.loads(proc.stdout)
    assert {(i["batch"], i["occurrence"]) for i in body["items"]} == {
        *((b, 1) for b in [*REFERENCES, BATCH, REUSED]), (REUSED, 2)}
    alarms = run("batches", "--with-alarms", "--db", url)
    assert alarms.exit_code == 0
    assert BATCH in alarms.stdout and OTHER_BATCH in alarms.stdout and REUSED not in alarms.stdout
    gaps = run("batches", "--with-gaps", "--db", url)
    assert f"{OTHER_SITE}  {OTHER_BATCH}" in gaps.stdout and BATCH not in gaps.stdout
    bad = run("batches", "--from", "18.11.2026", "--db", url)
    assert bad.exit_code == 2 and "YYYY-MM-DD" in bad.stderr


def test_trace_lot(db: tuple[str, Engine]) -> None:
    url = db[0]
    proc = run("trace", "--lot", "LOT-W-0001", "--db", url)
    assert proc.exit_code == 0, proc.stderr
    assert BATCH in proc.stdout and OTHER_BATCH in proc.stdout
    as_json = orjson.loads(run("trace", "--lot", "LOT-N-7", "--json", "--db", url).stdout)
    assert {u["batch"] for u in as_json} == {BATCH, OTHER_BATCH}
    none = run("trace", "--lot", "NO-SUCH-LOT", "--db", url)
    assert none.exit_code == 1 and "no batch consumed" in none.stderr
    both = run("trace", BATCH, "--lot", "LOT-N-7", "--db", url)
    assert both.exit_code == 2


def test_store_web_refuses_a_store_without_the_current_schema(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/old.sqlite")
    create_schema(engine)  # tables, but no migration stamp
    engine.dispose()
    (tmp_path / "store.yaml").write_text(f"store:\n  database_url: sqlite:///{tmp_path}/old.sqlite\n")
    proc = subprocess.run([sys.executable, "-m", "blackbox", "store", "web", "-c", str(tmp_path / "store.yaml")],
                          capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL, timeout=60)
    assert proc.returncode == 1 and "store migrate" in proc.stderr and "Traceback" not in proc.stderr


def test_golden_set_list_withdraw(db: tuple[str, Engine]) -> None:
    url = db[0]
    chosen = run("store", "golden", "set", SITE, REUSED, "--occurrence", "1", "--reason", "validated", "--db", url)
    assert chosen.exit_code == 0, chosen.stderr
    assert f"golden batch of FC-050 at {SITE}: {REUSED} (occurrence 1" in chosen.stdout
    listed = orjson.loads(run("store", "golden", "list", "--site", SITE, "--json", "--db", url).stdout)
    assert [(c["product"], c["batch"], c["occurrence"], c["role"], c["reason"]) for c in listed] == [
        ("FC-050", REUSED, 1, "admin", "validated")]
    assert listed[0]["chosen_by"].startswith("cli:")
    missing = run("store", "golden", "set", SITE, "NO-SUCH", "--db", url)
    assert missing.exit_code == 1 and "no batch 'NO-SUCH'" in missing.stderr
    assert run("store", "golden", "withdraw", SITE, "FC-050", "--db", url).exit_code == 0
    again = run("store", "golden", "withdraw", SITE, "FC-050", "--db", url)
    assert again.exit_code == 1 and "no golden batch" in again.stderr
    assert run("store", "golden", "list", "--db", url).stdout == ""
    history = run("store", "golden", "list", "--history", "--db", url).stdout.splitlines()
    assert [line.split("  ")[2] for line in history] == ["withdrawn", f"{REUSED} (occurrence 1)"]
