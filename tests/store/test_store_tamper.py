"""The tamper matrix: every table edited directly in SQL, one tamper at a time, on SQLite and PostgreSQL.

Each tamper must be reported by ``blackbox store verify`` (a finding with the expected code) and
by the trace report of the production batch it touches (a finding, and a verdict other than
"verified"). The store holds one production batch over three sealed batches, with a key
rotation in the middle (batch 2 hands over to a new key that signs batch 3).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Connection, Engine, select, text, update
from store_synth import GATEWAY, SEC, SITE, T0, Gateway, config_data
from stored import drop_num, insert_readings, rewrite_readings, set_num
from typer.testing import CliRunner

from blackbox.cli.main import app
from blackbox.model import Event, Quality
from blackbox.seal import (
    GENESIS_HASH,
    KEY_ROTATED,
    decode_records,
    key_id,
    open_batch,
    public_key_pem,
    rotation_data,
    seal_batch,
)
from blackbox.store import trace as trace_module
from blackbox.store.chunks import ReadingRow
from blackbox.store.derive import batch_columns
from blackbox.store.findings import Difference
from blackbox.store.gateways import gateway_overview
from blackbox.store.ingest import Ingestor
from blackbox.store.integrity import check_integrity, merge_shares
from blackbox.store.integrity_worker import start_integrity
from blackbox.store.migrate import upgrade_schema
from blackbox.store.schema import events, gateway_keys, sealed_batches, tag_configs, tlog_entries, tlog_state
from blackbox.store.tlog import TransparencyLog
from blackbox.store.trace import BatchNotFound, trace_batch
from blackbox.store.verify import Part, verify_store
from blackbox.store.verify_log import StreamingRoot
from blackbox.tlog.merkle import MemoryTree
from blackbox.tlog.note import Signer

BATCH = "FC050-2026-1204-07"


@dataclass(frozen=True)
class Store:
    engine: Engine
    old_key: str
    new_key: str


def record(gw: Gateway) -> None:
    """Batch 1: configuration, start, a weighing, heat. Batch 2: emulsify, an alarm, the rotation.
    Batch 3 (new key): QC, end."""
    gw.apply_config(T0)
    gw.start_batch(BATCH, T0 + SEC)
    gw.event("material.consumed", {"material": "RM-001", "lot": "LOT-W-0001", "target": 361.5, "actual": 361.2,
                                   "eng_unit": "kg", "tolerance_pct": 0.5, "in_tolerance": True}, T0 + 2 * SEC)
    gw.set_phase("heat", T0 + 3 * SEC)
    for i in range(4):
        gw.reading("EM-01.temperature", 60.0 + i, T0 + (4 + i) * SEC)
    gw.seal()
    gw.set_phase("emulsify", T0 + 10 * SEC)
    for i, v in enumerate([75.0, 86.0, 78.0]):
        gw.reading("EM-01.temperature", v, T0 + (11 + i) * SEC)
    gw.reading("EM-01.vacuum", None, T0 + 14 * SEC, Quality.BAD, "sensor open circuit")
    gw.event("alarm.raised", {"rule": "em-temp", "tag": "EM-01.temperature", "level": "HH", "value": 86.0,
                              "limit": 85.0, "priority": "high"}, T0 + 12 * SEC, subject="EM-01.temperature")
    gw.rotate(T0 + 15 * SEC)
    gw.reading("EM-01.temperature", 50.0, T0 + 20 * SEC)
    gw.event("qc.result", {"test": "pH", "value": 6.1, "spec_low": 5.5, "spec_high": 6.5, "pass": True},
             T0 + 21 * SEC)
    gw.end_batch(T0 + 22 * SEC)
    gw.seal()


@pytest.fixture
def store(empty_engine: Engine) -> Store:
    upgrade_schema(empty_engine)
    gw = Gateway()
    old = gw.public_pem
    ingestor = Ingestor(empty_engine)
    old_id = ingestor.enroll(GATEWAY, SITE, old)
    record(gw)
    for sealed in gw.sealed:
        assert ingestor.handle(sealed.wire, SITE, GATEWAY).status == "stored"
    assert ingestor.revoke(GATEWAY, SITE, old_id)  # retired by the rotation, now revoked too
    assert ingestor.record_status(SITE, GATEWAY, b'{"state": "online"}')
    return Store(empty_engine, old_id, gw.sealed[-1].header.key_id)


def sql(*statements: str, **params: Any) -> Callable[[Connection, Store], None]:
    def apply(conn: Connection, _store: Store) -> None:
        for statement in statements:
            conn.execute(text(statement), params)
    return apply


def edit_json(table: Any, where: Any, change: Callable[[dict[str, Any]], None],
              **columns: Any) -> Callable[[Connection, Store], None]:
    """Rewrite a JSON column the way a DBA would: read it, change it, write it back."""
    def apply(conn: Connection, _store: Store) -> None:
        row_id, data = conn.execute(select(table.c.seq, table.c.data).where(where)).one()
        data = dict(data)
        change(data)
        conn.execute(update(table).where(table.c.seq == row_id).values(data=data, **columns))
    return apply


def rewrite_wire(conn: Connection, _store: Store) -> None:
    wire = bytearray(conn.execute(select(sealed_batches.c.wire).where(sealed_batches.c.batch_seq == 2)).scalar_one())
    wire[-1] ^= 0x01  # the last byte of the signature
    conn.execute(update(sealed_batches).where(sealed_batches.c.batch_seq == 2).values(wire=bytes(wire)))


def replace_key(conn: Connection, store: Store) -> None:
    """A DBA swaps the enrolled key's PEM for one of their own."""
    conn.execute(update(gateway_keys).where(gateway_keys.c.key_id == store.old_key)
                 .values(public_key_pem=public_key_pem(Ed25519PrivateKey.generate())))


def reenrol_key(conn: Connection, store: Store) -> None:
    """A DBA removes the enrolled key and enrols another one as the operator."""
    other = Ed25519PrivateKey.generate()
    conn.execute(update(gateway_keys).where(gateway_keys.c.key_id == store.old_key)
                 .values(key_id=key_id(other), public_key_pem=public_key_pem(other)))


def resign_history(conn: Connection, store: Store) -> None:
    """The DBA's complete forgery: two keys of their own replace the gateway's, every batch re-signed
    and re-chained with the same records (the rotation event renamed), the rows and key table made to match."""
    first, second = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    sb = sealed_batches.c
    prev = GENESIS_HASH
    for batch_seq, wire in conn.execute(select(sb.batch_seq, sb.wire).order_by(sb.batch_seq)).all():
        opened = open_batch(bytes(wire))
        records = decode_records(opened)
        signer = first if opened.header.key_id == store.old_key else second
        for i, rec in enumerate(records):
            if isinstance(rec, Event) and rec.type == KEY_ROTATED:
                records[i] = forged_rotation = replace(rec, data=rotation_data(first, second, "dba"),
                                                       subject=key_id(second))
                conn.execute(update(events).where(events.c.seq == rec.seq)
                             .values(data=forged_rotation.data, subject=forged_rotation.subject))
        h = opened.header
        forged = seal_batch(records, site=h.site, gateway=h.gateway, key=signer, batch_seq=batch_seq, prev_hash=prev,
                            config_hash=h.config_hash, clock=h.clock, compression=h.compression,
                            sealed_at_us=h.sealed_at_us)
        conn.execute(update(sealed_batches).where(sb.batch_seq == batch_seq)
                     .values(wire=forged.wire, **batch_columns(open_batch(forged.wire))))
        prev = forged.hash
    gk = gateway_keys.c
    conn.execute(update(gateway_keys).where(gk.key_id == store.new_key)
                 .values(key_id=key_id(second), public_key_pem=public_key_pem(second), rotated_from=key_id(first)))
    conn.execute(update(gateway_keys).where(gk.key_id == store.old_key)
                 .values(key_id=key_id(first), public_key_pem=public_key_pem(first)))


def set_limit(data: dict[str, Any]) -> None:
    tags = [dict(t) for t in data["tags"]]
    tags[0]["limits"] = [{**lim, "h": 95.0, "hh": 99.0} for lim in tags[0]["limits"]]
    data["tags"] = tags


@dataclass(frozen=True)
class Tamper:
    name: str
    apply: Callable[[Connection, Store], object]
    """Alters the stored data (what it returns is not used)."""
    codes: frozenset[str]
    """Codes that ``store verify`` must report (the trace must report at least one of them)."""


TAMPERS = [
    # one value inside a chunk: the chunk rewritten with it, as a DBA who read docs/store.md would
    Tamper("update a reading value", lambda conn, _s: set_num(86.0, 84.0)(conn), frozenset({"row_altered"})),
    Tamper("delete a reading", lambda conn, _s: drop_num(86.0)(conn), frozenset({"row_missing"})),
    Tamper("insert a reading", lambda conn, _s: insert_readings(conn, [ReadingRow(
        1, 10000, 2, "EM-01.temperature", "float", 77.0, None, "good", None, T0 + 13 * SEC + 1, None, BATCH,
        "emulsify")]), frozenset({"row_unexplained"})),
    Tamper("move a reading to another phase", lambda conn, _s: rewrite_readings(
        conn, lambda r: r._replace(phase="cool") if r.num == 86.0 else r), frozenset({"row_altered"})),
    Tamper("edit a chunk's bytes", sql("UPDATE reading_chunks SET nums = :b WHERE batch_seq = 2 AND n = 3",
                                       b=b"\x00" * 7), frozenset({"row_altered"})),
    Tamper("move a whole chunk to another phase", sql("UPDATE reading_chunks SET phase = 'cool' "
                                                      "WHERE batch_seq = 2 AND n = 3"), frozenset({"row_altered"})),
    Tamper("edit a tag limit in tag_configs", edit_json(tag_configs, tag_configs.c.seq == 1, set_limit),
           frozenset({"row_altered"})),
    Tamper("delete the limits in force", sql("DELETE FROM tag_configs"), frozenset({"row_missing"})),
    Tamper("delete an event", sql("DELETE FROM events WHERE type = 'alarm.raised'"), frozenset({"row_missing"})),
    Tamper("insert an event", sql(
        "INSERT INTO events (gateway_id, seq, batch_seq, type, data, ts_us, batch, phase) "
        "VALUES (1, 10001, 2, 'alarm.acknowledged', '{}', :ts, :batch, 'emulsify')", ts=T0 + 13 * SEC, batch=BATCH),
           frozenset({"row_unexplained"})),
    Tamper("edit a material lot", edit_json(events, events.c.type == "material.consumed",
                                            lambda d: d.update(lot="LOT-W-9999"), ref="LOT-W-9999"),
           frozenset({"row_altered"})),
    Tamper("edit a QC result", edit_json(events, events.c.type == "qc.result", lambda d: d.update(value=6.4)),
           frozenset({"row_altered"})),
    Tamper("move a phase boundary", sql("UPDATE events SET ts_us = ts_us + 5000000 WHERE type = 'batch.phase' "
                                        "AND seq = (SELECT min(seq) FROM events WHERE type = 'batch.phase')"),
           frozenset({"row_altered"})),
    Tamper("delete a sealed batch", sql("DELETE FROM sealed_batches WHERE batch_seq = 2"),
           frozenset({"missing_batch", "row_unexplained"})),
    Tamper("delete a sealed batch and its rows", sql(
        "DELETE FROM sealed_batches WHERE batch_seq = 2", "DELETE FROM reading_chunks WHERE batch_seq = 2",
        "DELETE FROM events WHERE batch_seq = 2"), frozenset({"missing_batch"})),
    Tamper("rewrite a batch's bytes", rewrite_wire, frozenset({"bad_signature"})),
    Tamper("edit a sealed batch's header column", sql("UPDATE sealed_batches SET last_ts_us = last_ts_us + 1 "
                                                      "WHERE batch_seq = 1"), frozenset({"batch_altered"})),
    Tamper("replace an enrolled key", replace_key, frozenset({"key_altered", "unknown_key"})),
    Tamper("re-enrol a different key for the gateway", reenrol_key, frozenset({"unknown_key"})),
    Tamper("edit the rotation in gateway_keys", sql("UPDATE gateway_keys SET valid_from_seq = 99 "
                                                    "WHERE enrolled_by = 'rotation'"),
           frozenset({"key_altered", "unknown_key"})),
    Tamper("delete the rotated-in key", sql("DELETE FROM gateway_keys WHERE enrolled_by = 'rotation'"),
           frozenset({"key_altered", "unknown_key"})),
    Tamper("un-retire the old key", sql("UPDATE gateway_keys SET valid_to_seq = NULL WHERE enrolled_by = 'operator'"),
           frozenset({"key_altered"})),
    Tamper("edit gateway status (last batch time)", sql("UPDATE gateways SET last_batch_at_us = 1"),
           frozenset({"gateway_altered"})),
    Tamper("edit gateway status (online/offline)", sql("UPDATE gateways SET status = 'offline', "
                                                       "status_reason = 'connection lost'"),
           frozenset({"gateway_altered"})),
    Tamper("un-revoke a key", sql("UPDATE gateway_keys SET revoked_at_us = NULL"), frozenset({"key_altered"})),
    # what only the transparency log can tell
    Tamper("delete the newest sealed batch and its rows", sql(
        "DELETE FROM sealed_batches WHERE batch_seq = 3", "DELETE FROM reading_chunks WHERE batch_seq = 3",
        "DELETE FROM events WHERE batch_seq = 3"), frozenset({"batch_missing"})),
    Tamper("edit a batch's arrival time", sql("UPDATE sealed_batches SET received_at_us = received_at_us - 1 "
                                              "WHERE batch_seq = 1"), frozenset({"batch_altered"})),
    Tamper("delete a batch's log entry", sql(
        "DELETE FROM tlog_entries WHERE kind = 'batch' "
        "AND ref = (SELECT hash FROM sealed_batches WHERE batch_seq = 2)"),
           frozenset({"batch_unlogged", "log_altered"})),
    Tamper("move a batch's log entry to another gateway's look-up", sql(
        "UPDATE tlog_entries SET gateway_id = gateway_id + 1000 WHERE kind = 'batch' "
        "AND ref = (SELECT hash FROM sealed_batches WHERE batch_seq = 3)"), frozenset({"log_altered"})),
    Tamper("renumber a batch's log entry in its look-up", sql(
        "UPDATE tlog_entries SET batch_seq = NULL WHERE kind = 'batch' "
        "AND ref = (SELECT hash FROM sealed_batches WHERE batch_seq = 2)"), frozenset({"log_altered"})),
    Tamper("re-enrol other keys and re-sign the whole history", resign_history,
           frozenset({"batch_unlogged", "batch_missing", "key_altered"})),
]


def findings(engine: Engine) -> list[Difference]:
    out: list[Difference] = []
    verify_store(engine, out.append)
    return out


def test_an_untouched_store_verifies_clean(store: Store) -> None:
    assert findings(store.engine) == []
    report = trace_batch(store.engine, BATCH)
    assert report.integrity.verdict == "verified", report.integrity.findings


@pytest.mark.parametrize("tamper", TAMPERS, ids=lambda t: t.name)
def test_every_tamper_is_reported_by_verify_and_by_the_trace(store: Store, tamper: Tamper) -> None:
    with store.engine.begin() as conn:
        tamper.apply(conn, store)
    found = findings(store.engine)
    assert tamper.codes <= {d.code for d in found}, found
    assert all(d.table is not None or d.code == "seq_gap" for d in found)

    report = trace_batch(store.engine, BATCH)
    codes = {f.code for f in report.integrity.findings}
    assert report.integrity.verdict != "verified"
    assert tamper.codes & codes, report.integrity.findings


@pytest.mark.parametrize("tamper", [None, *TAMPERS], ids=lambda t: "untouched" if t is None else t.name)
def test_the_trace_s_worker_process_reports_every_tamper_as_the_report_s_own_process_does(
        store: Store, tamper: Tamper | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A large batch's integrity check runs in a worker process on the report's snapshot
    (``blackbox.store.integrity_worker``): its verdict must be the one the report's process reaches."""
    if store.engine.dialect.name != "postgresql":
        pytest.skip("the worker shares the report's snapshot: PostgreSQL only")
    if tamper is not None:
        with store.engine.begin() as conn:
            tamper.apply(conn, store)
    here = trace_batch(store.engine, BATCH, parallel=False).integrity

    def not_here(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the integrity check ran in the report's own process")

    monkeypatch.setattr(trace_module, "check_integrity", not_here)
    there = trace_batch(store.engine, BATCH, parallel=True).integrity
    assert there == here
    if tamper is None:
        assert there.verdict == "verified", there.findings
    else:
        assert there.verdict != "verified"
        assert tamper.codes & {f.code for f in there.findings}, there.findings


@pytest.mark.parametrize("tamper", [None, *TAMPERS], ids=lambda t: "untouched" if t is None else t.name)
def test_an_integrity_check_cut_into_parts_finds_what_the_whole_check_finds(store: Store,
                                                                             tamper: Tamper | None) -> None:
    """The worker processes each check a slice of the sealed batches (``blackbox.store.verify.Part``):
    merged, the slices' findings must be the whole check's, in its order, however the three batches
    are cut (two and three slices, and more slices than batches)."""
    if tamper is not None:
        with store.engine.begin() as conn:
            tamper.apply(conn, store)
    with store.engine.connect() as conn:
        [(gid, label)] = conn.execute(text("SELECT id, site || '/' || gateway FROM gateways")).all()
        boundaries: dict[int, tuple[int | None, int | None]] = {gid: (1, 3)}
        args = (conn, BATCH, {gid: label}, boundaries)
        whole = merge_shares([check_integrity(*args)])
        for count in (2, 3, 5):
            parts = merge_shares([check_integrity(*args, part=Part(i, count)) for i in range(count)])
            assert parts == whole, count
    assert (whole.verdict == "verified") == (tamper is None), whole.findings


def test_the_worker_process_reads_the_report_s_snapshot(store: Store) -> None:
    """A tamper committed after the report's transaction began is seen neither by the report nor by its worker."""
    if store.engine.dialect.name != "postgresql":
        pytest.skip("the worker shares the report's snapshot: PostgreSQL only")
    clean = trace_batch(store.engine, BATCH, parallel=False).integrity
    with store.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            [(gid, label)] = conn.execute(text("SELECT id, site || '/' || gateway FROM gateways")).all()
            pending = start_integrity(conn, BATCH, {gid: label}, {gid: (1, 3)}, deep=True, lost={}, ranges=None)
            with store.engine.begin() as other:
                set_num(86.0, 84.0)(other)
            assert pending.result(timeout=120) == clean
    assert trace_batch(store.engine, BATCH, parallel=True).integrity.verdict == "failed"


def test_a_reading_edit_names_table_key_and_both_values(store: Store) -> None:
    """One value changed inside a chunk of three readings: the finding names that reading alone."""
    with store.engine.begin() as conn:
        assert set_num(86.0, 84.0)(conn) == 1
    [d] = findings(store.engine)
    seq = 11  # config, start, weighing, phase, four heat readings, phase, 75.0, then 86.0
    assert (d.code, d.table, d.key, d.column, d.stored, d.derived, d.batch_seq) == (
        "row_altered", "reading_chunks", f"seq={seq}", "num", 84.0, 86.0, 2)


def test_an_edited_limit_changes_the_report_and_the_verdict_says_so(store: Store) -> None:
    """The hole of the first audit: raised limits hid the excursion behind a VERIFIED verdict."""
    before = trace_batch(store.engine, BATCH)
    [emulsify] = [p for p in before.parameters if p.tag == "EM-01.temperature" and p.phase == "emulsify"]
    assert emulsify.n_outside_hh_ll == 1
    with store.engine.begin() as conn:
        edit_json(tag_configs, tag_configs.c.seq == 1, set_limit)(conn, store)
    after = trace_batch(store.engine, BATCH)
    assert after.integrity.verdict == "failed"
    assert any(f.code == "row_altered" and "tag_configs" in f.message for f in after.integrity.findings)


def test_deleting_every_row_of_the_batch_is_a_failed_trace_not_no_record(store: Store) -> None:
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM reading_chunks WHERE batch = :b"), {"b": BATCH})
        conn.execute(text("DELETE FROM events WHERE batch = :b OR ref = :b"), {"b": BATCH})
    report = trace_batch(store.engine, BATCH)
    assert report.integrity.verdict == "failed"
    assert "row_missing" in {f.code for f in report.integrity.findings}


@pytest.mark.parametrize("batch_seq", [1, 3])
def test_deleting_the_first_or_last_batch_with_its_rows_is_not_verified(store: Store, batch_seq: int) -> None:
    """The range of a trace is found from the rows left: the gap before it must still show; a deleted
    last batch takes batch.ended with it (the newest batches are the transparency log's job)."""
    first_seq, last_seq = {1: (1, 8), 3: (16, 18)}[batch_seq]
    with store.engine.begin() as conn:
        for table in ("sealed_batches", "reading_chunks", "events"):
            conn.execute(text(f"DELETE FROM {table} WHERE batch_seq = :n"), {"n": batch_seq})
        conn.execute(text("DELETE FROM tag_configs WHERE seq BETWEEN :a AND :b"), {"a": first_seq, "b": last_seq})
    integrity = trace_batch(store.engine, BATCH).integrity
    assert integrity.verdict != "verified"
    if batch_seq == 1:
        assert any(f.code == "missing_batch" and "just before" in f.message for f in integrity.findings), integrity
    else:
        assert "no_end" in {f.code for f in integrity.findings}


def test_deleting_the_batches_and_their_rows_names_the_gap_instead_of_no_record(empty_engine: Engine) -> None:
    upgrade_schema(empty_engine)
    gw = Gateway()
    ingestor = Ingestor(empty_engine)
    ingestor.enroll(GATEWAY, SITE, gw.public_pem)
    gw.apply_config(T0, config_data())
    gw.seal()
    gw.start_batch(BATCH, T0 + SEC)
    gw.reading("EM-01.temperature", 70.0, T0 + 2 * SEC)
    gw.end_batch(T0 + 3 * SEC)
    gw.seal()
    gw.reading("EM-01.temperature", 20.0, T0 + 4 * SEC)
    gw.seal()
    for sealed in gw.sealed:
        assert ingestor.handle(sealed.wire, SITE, GATEWAY).status == "stored"
    with empty_engine.begin() as conn:
        for table in ("sealed_batches", "reading_chunks", "events"):
            conn.execute(text(f"DELETE FROM {table} WHERE batch_seq = 2"))
    with pytest.raises(BatchNotFound, match=r"misses sealed batch\(es\) 2"):
        trace_batch(empty_engine, BATCH)


def test_store_verify_command(store: Store) -> None:
    url = store.engine.url.render_as_string(hide_password=False)
    if store.engine.dialect.name == "postgresql":
        with store.engine.connect() as conn:
            schema = conn.execute(text("SELECT current_schema()")).scalar_one()
        url = f"{url}?options=-csearch_path%3D{schema}"
    runner = CliRunner()
    clean = runner.invoke(app, ["store", "verify", "--db", url])
    assert clean.exit_code == 0, clean.output
    assert "no differences: 3 batch(es) of 1 gateway(s), 9 readings" in clean.stdout
    assert "transparency log: 7 entries, 0 signed checkpoint(s) (signatures not checked" in clean.stdout
    with store.engine.begin() as conn:
        set_num(86.0, 84.0)(conn)
    tampered = runner.invoke(app, ["store", "verify", "--db", url, "--json"])
    assert tampered.exit_code == 1
    *lines, summary = [orjson.loads(line) for line in tampered.stdout.splitlines()]
    assert [(d["code"], d["table"], d["stored"], d["derived"]) for d in lines] == [
        ("row_altered", "reading_chunks", 84.0, 86.0)]
    assert summary["summary"]["findings"] == 1 and summary["summary"]["readings"] == 9
    since = runner.invoke(app, ["store", "verify", "--db", url, "--since", "2099-01-01"])
    assert since.exit_code == 0 and "0 batch(es)" in since.stdout
    bad = runner.invoke(app, ["store", "verify", "--db", url, "--since", "yesterday"])
    assert bad.exit_code == 2


@pytest.mark.parametrize(("tamper", "missing_batches", "records"), [
    # 18 records: 8 in batch 1, 7 in batch 2 (four readings), 3 in batch 3
    ("DELETE FROM sealed_batches WHERE batch_seq = 2", 1, (11, 18)),
    ("DELETE FROM reading_chunks WHERE batch_seq = 2", 0, (18, 14)),
    ("DELETE FROM events WHERE type = 'alarm.raised'", 0, (18, 17)),
    # the newest batch with its rows: no gap below the highest stored batch, but the log accepted it
    ("DELETE FROM sealed_batches WHERE batch_seq = 3; DELETE FROM reading_chunks WHERE batch_seq = 3; "
     "DELETE FROM events WHERE batch_seq = 3", 1, (15, 15)),
])
def test_store_gateways_shows_what_a_deletion_left_missing(store: Store, tamper: str, missing_batches: int,
                                                          records: tuple[int, int]) -> None:
    [before] = gateway_overview(store.engine)
    assert (before.missing_batches, before.records_signed, before.records_stored) == (0, 18, 18)
    with store.engine.begin() as conn:
        for statement in tamper.split("; "):
            conn.execute(text(statement))
    [after] = gateway_overview(store.engine)
    assert (after.missing_batches, (after.records_signed, after.records_stored)) == (missing_batches, records)


def test_the_log_is_held_to_its_signed_checkpoint(store: Store) -> None:
    """A DBA who rewrites a log entry, the batch it records and the log's state to match is caught by
    the checkpoint the store signed before (its key is not in the database)."""
    signer = Signer("blackbox-store", Ed25519PrivateKey.generate())
    TransparencyLog(store.engine, signer).signed_checkpoint(record=True)
    found: list[Difference] = []
    stats = verify_store(store.engine, found.append, store_key=signer.verifier)
    assert found == [] and (stats.checkpoints, stats.checkpoints_signed) == (1, 1)
    wrong = Signer("blackbox-store", Ed25519PrivateKey.generate()).verifier
    verify_store(store.engine, found.append, store_key=wrong)
    assert [d.code for d in found] == ["log_altered"] and "does not verify" in found[0].message

    found.clear()
    e, sb = tlog_entries.c, sealed_batches.c
    with store.engine.begin() as conn:
        idx, data = conn.execute(select(e.idx, e.data).where(e.kind == "batch").order_by(e.idx).limit(1)).one()
        doc = orjson.loads(bytes(data))
        doc["received_at_us"] -= 1
        conn.execute(update(tlog_entries).where(e.idx == idx)
                     .values(data=orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)))
        conn.execute(update(sealed_batches).where(sb.hash == doc["hash"]).values(received_at_us=doc["received_at_us"]))
        tree = MemoryTree()
        for (entry,) in conn.execute(select(e.data).order_by(e.idx)):
            tree.append(bytes(entry))
        conn.execute(update(tlog_state).values(root=tree.root().hex()))
    verify_store(store.engine, found.append, store_key=signer.verifier)
    assert [d.code for d in found] == ["log_altered"], found
    assert "signed checkpoint of size" in found[0].message


@pytest.mark.parametrize("size", [0, 1, 2, 3, 5, 8, 13, 64, 65, 100])
def test_the_streaming_root_is_the_log_s_root(size: int) -> None:
    """verify's O(log n) root against the log's own tree (its RFC 6962 vectors are in the tlog tests)."""
    tree, stream = MemoryTree(), StreamingRoot()
    for i in range(size):
        tree.append(f"entry {i}".encode())
        stream.add(f"entry {i}".encode())
    assert stream.root() == tree.root()


def test_a_store_that_moved_a_fork_aside_verifies_clean(engine: Engine) -> None:
    """A batch moved aside by the genuine chain is gone from the tables but not missing: the log says why."""
    from test_store_forks import forged, genuine_chain
    from test_store_forks import store as ingest

    gw = Gateway()
    ingestor = Ingestor(engine)
    ingestor.enroll(GATEWAY, SITE, gw.public_pem)
    chain = genuine_chain(gw)
    fork = forged(gw, 6, chain[1].hash)
    ingest(ingestor, chain[0])
    ingest(ingestor, fork)
    ingest(ingestor, *chain[1:])
    assert TransparencyLog(engine).find("batch", fork.hash) is not None  # accepted once, then moved aside
    assert findings(engine) == []


def test_verify_of_one_gateway_sees_its_newest_batches_gone(store: Store) -> None:
    with store.engine.begin() as conn:
        for table in ("sealed_batches", "reading_chunks", "events"):
            conn.execute(text(f"DELETE FROM {table} WHERE batch_seq = 3"))
    found: list[Difference] = []
    verify_store(store.engine, found.append, gateway=f"{SITE}/{GATEWAY}")
    assert [(d.code, d.batch_seq) for d in found if d.code == "batch_missing"] == [("batch_missing", 3)]


def test_the_integrity_workers_start_before_the_first_report() -> None:
    """``blackbox store web`` starts them with the application, so that the first large batch page after a
    restart does not wait for them (checked in a fresh interpreter, where nothing started them before)."""
    script = ("import time\n"
              "from blackbox.store.integrity_worker import PARTS, prestart, worker_pids\n"
              "assert worker_pids() == []\n"
              "prestart()\n"
              "deadline = time.monotonic() + 60\n"
              "while len(worker_pids()) < PARTS and time.monotonic() < deadline:\n"
              "    time.sleep(0.05)\n"
              "print(len(worker_pids()) == PARTS)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "True", out.stderr
