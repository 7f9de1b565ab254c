"""Ingest on SQLite files and on PostgreSQL: verification, chain checks, idempotence, rejections."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, delete, func, select, text
from sqlalchemy.exc import DBAPIError, OperationalError
from store_synth import GATEWAY, SITE, T0, Gateway, config_data
from stored import readings_of

from blackbox.model import Event, Quality, Reading, Value
from blackbox.seal import GENESIS_HASH, BatchHeader, key_id, public_key_pem
from blackbox.seal.header import encode_header
from blackbox.seal.wire import pack
from blackbox.store.db import make_engine
from blackbox.store.ingest import REASONS, EnrollmentError, Ingestor, IngestResult, Prepared, decode_value
from blackbox.store.schema import (
    create_schema,
    events,
    gateway_keys,
    reading_chunks,
    rejections,
    sealed_batches,
    tag_configs,
)


def counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        out = {
            t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in (sealed_batches, events, rejections, tag_configs)
        }
        out["readings"] = len(readings_of(conn))
        out["reading_chunks"] = conn.execute(select(func.count()).select_from(reading_chunks)).scalar_one()
        return out


def stored_state(engine: Engine) -> list[Any]:
    """Everything ingest may write except rejections, to prove a rejection left it untouched."""
    with engine.connect() as conn:
        return [
            conn.execute(select(sealed_batches.c.batch_seq, sealed_batches.c.hash).order_by("batch_seq")).all(),
            readings_of(conn),
            conn.execute(select(events.c.seq, events.c.type, events.c.batch_seq).order_by(events.c.seq)).all(),
        ]


def last_rejection(engine: Engine) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(rejections).order_by(rejections.c.id.desc()).limit(1)).one()


@pytest.fixture
def gw() -> Gateway:
    return Gateway()


@pytest.fixture
def ingestor(engine: Engine, gw: Gateway) -> Ingestor:
    ing = Ingestor(engine)
    ing.enroll(GATEWAY, SITE, gw.public_pem)
    return ing


def simple_batch(gw: Gateway, n: int = 3, t: int = T0) -> None:
    for i in range(n):
        gw.reading("EM-01.temperature", 70.0 + i, t + i)


def handle(ing: Ingestor, wire: bytes, site: str = SITE, gateway: str = GATEWAY) -> IngestResult:
    return ing.handle(wire, site, gateway, topic=f"bb/{site}/{gateway}/batches")


def assert_rejected(engine: Engine, result: IngestResult, reason: str, wire: bytes) -> None:
    assert result.status == "rejected", result
    assert result.reason == reason, result
    assert reason in REASONS
    row = last_rejection(engine)
    assert row.reason == reason
    assert row.raw_sha256 == hashlib.sha256(wire).hexdigest()
    assert row.raw_size == len(wire)
    assert bytes(row.raw) == wire[: len(row.raw)]
    assert row.detail


def test_store_then_duplicate_is_idempotent(engine: Engine, ingestor: Ingestor, gw: Gateway) -> None:
    simple_batch(gw)
    gw.event("alarm.raised", {"tag": "x", "level": "H"}, T0 + 10)
    sealed = gw.seal()
    first = handle(ingestor, sealed.wire)
    assert (first.status, first.reason, first.batch_seq, first.hash) == ("stored", None, 1, sealed.hash)
    assert first.log is not None and (first.log.index, first.log.size) == (1, 2)  # entry 0: the key enrolment
    assert first.ack() == {"batch_seq": 1, "hash": sealed.hash, "status": "stored", "reason": None}
    before = counts(engine)
    assert before["readings"] == 3 and before["events"] == 1 and before["sealed_batches"] == 1
    again = handle(ingestor, sealed.wire)
    assert (again.status, again.reason, again.batch_seq, again.hash) == ("duplicate", None, 1, sealed.hash)
    assert again.log == first.log and again.received_at_us == first.received_at_us  # the same entry, not a new one
    assert counts(engine) == before
    with engine.connect() as conn:
        wire = conn.execute(select(sealed_batches.c.wire)).scalar_one()
    assert bytes(wire) == sealed.wire


def test_values_round_trip_with_their_types(engine: Engine, ingestor: Ingestor, gw: Gateway) -> None:
    values: list[Value] = [True, False, 0, -7, 2**62 + 1, 2**64 - 1, 3.25, -0.0, 1e-300, "lot 42 é", None]
    for i, v in enumerate(values):
        gw.reading(f"tag{i}", v, T0 + i, Quality.BAD if v is None else Quality.GOOD, "no value" if v is None else None)
    assert handle(ingestor, gw.seal().wire).status == "stored"
    with engine.connect() as conn:
        rows = readings_of(conn)
    back = [decode_value(r.kind, r.num, r.text) for r in rows]
    assert back == values
    assert [type(v) for v in back] == [type(v) for v in values]
    assert rows[-1].quality == "bad" and rows[-1].reason == "no value"
    assert rows[0].source_ts_us == T0 - 1000


def test_fork_is_rejected_and_stored_data_untouched(engine: Engine, ingestor: Ingestor, gw: Gateway) -> None:
    simple_batch(gw)
    original = gw.seal()
    assert handle(ingestor, original.wire).status == "stored"
    state = stored_state(engine)
    other = gw.seal_raw(
        [Reading(1, "EM-01.temperature", 99.0, Quality.GOOD, None, T0, None, None, None)],
        batch_seq=1,
        prev_hash=GENESIS_HASH,
    )
    assert other.hash != original.hash
    result = handle(ingestor, other.wire)
    assert_rejected(engine, result, "fork", other.wire)
    assert result.batch_seq == 1 and result.hash == other.hash
    assert stored_state(engine) == state


def test_bad_signature_is_rejected(engine: Engine, ingestor: Ingestor, gw: Gateway) -> None:
    simple_batch(gw)
    wire = bytearray(gw.seal().wire)
    wire[-1] ^= 0x01  # the last byte belongs to the signature
    result = handle(ingestor, bytes(wire))
    assert_rejected(engine, result, "bad_signature", bytes(wire))
    assert counts(engine)["sealed_batches"] == 0


def test_unknown_key_and_unknown_gateway_are_rejected(engine: Engine, ingestor: Ingestor, gw: Gateway) -> None:
    stranger = Ed25519PrivateKey.generate()
    simple_batch(gw)
    forged = gw.seal_raw(gw.pending, batch_seq=1, prev_hash=GENESIS_HASH, key=stranger)
    assert_rejected(engine, handle(ingestor, forged.wire), "unknown_key", forged.wire)
    other_gw = gw.seal_raw(gw.pending, batch_seq=1, prev_hash=GENESIS_HASH, gateway="gw-99")
    assert_rejected(engine, handle(ingestor, other_gw.wire, gateway="gw-99"), "unknown_gateway", other_gw.wire)
    # the same gateway id at another site is another gateway
    assert_rejected(engine, handle(ingestor, forged.wire, site="BJ-01"), "topic_mismatch", forged.wire)
    assert counts(engine)["sealed_batches"] == 0


def test_revoked_key_is_rejected(engine: Engine, ingestor: Ingestor, gw: Gateway) -> None:
    kid = ingestor.enroll(GATEWAY, SITE, gw.public_pem)  # enrolling again is a no-op
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(gateway_keys)).scalar_one() == 1
    assert ingestor.revoke(GATEWAY, SITE, kid)
    simple_batch(gw)
    sealed = gw.seal()
    assert_rejected(engine, handle(ingestor, sealed.wire), "revoked_key", sealed.wire)


def _revoke_here(engine: Engine, ingestor: Ingestor, kid: str) -> None:
    assert ingestor.revoke(GATEWAY, SITE, kid)


def _revoke_elsewhere(engine: Engine, ingestor: Ingestor, kid: str) -> None:
    assert Ingestor(engine).revoke(GATEWAY, SITE, kid)  # another process: `blackbox store keys revoke`


def _delete_key_row(engine: Engine, ingestor: Ingestor, kid: str) -> None:
    with engine.begin() as conn:
        assert conn.execute(delete(gateway_keys).where(gateway_keys.c.key_id == kid)).rowcount == 1


@pytest.mark.parametrize(("withdraw", "bad_signature", "between", "reason"), [
    (_revoke_here, False, False, "revoked_key"),
    (_revoke_elsewhere, False, False, "revoked_key"),
    (_revoke_elsewhere, True, False, "revoked_key"),
    (_revoke_elsewhere, False, True, "revoked_key"),
    (_delete_key_row, False, False, "unknown_key"),
    (_delete_key_row, False, True, "unknown_key"),
], ids=["revoked", "revoked-by-another-ingestor", "revoked-and-bad-signature", "revoked-after-verification",
        "key-row-deleted", "key-row-deleted-after-verification"])
def test_a_key_withdrawn_after_it_was_used_signs_nothing_more(
        engine: Engine, ingestor: Ingestor, gw: Gateway, withdraw: Any, bad_signature: bool, between: bool,
        reason: str) -> None:
    """The ingestor verifies signatures with keys it found enrolled before without asking the database again:
    a revocation or a removed key row must still refuse the next batch, also when it comes between the
    signature check and the insert (the store transaction reads the key under the gateway's lock)."""
    simple_batch(gw)
    first = gw.seal()
    assert handle(ingestor, first.wire).status == "stored"
    simple_batch(gw, t=T0 + 100)
    wire = bytearray(gw.seal().wire)
    if bad_signature:
        wire[-1] ^= 0x01  # the last byte belongs to the signature
    state = stored_state(engine)
    if between:
        prepared = ingestor.prepare(bytes(wire), SITE, GATEWAY, topic=f"bb/{SITE}/{GATEWAY}/batches")
        withdraw(engine, ingestor, first.header.key_id)
        assert not isinstance(prepared, IngestResult), prepared
        result = ingestor.store(prepared)
    else:
        withdraw(engine, ingestor, first.header.key_id)
        result = handle(ingestor, bytes(wire))
    assert_rejected(engine, result, reason, bytes(wire))
    assert stored_state(engine) == state


def test_enroll_refuses_what_is_not_a_public_key(engine: Engine) -> None:
    ing = Ingestor(engine)
    with pytest.raises(EnrollmentError):
        ing.enroll(GATEWAY, SITE, "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    pem = public_key_pem(Ed25519PrivateKey.generate())
    assert len(ing.enroll(GATEWAY, SITE, pem)) == 16


@pytest.mark.parametrize(
    "garbage",
    [b"", b"garbage", b"BBX1" + b"\xff" * 100, b'{"batch_seq": 1}'],
    ids=["empty", "text", "bad-lengths", "json"],
)
def test_malformed_bytes_are_rejected(engine: Engine, ingestor: Ingestor, garbage: bytes) -> None:
    result = handle(ingestor, garbage)
    assert_rejected(engine, result, "malformed", garbage)
    assert result.batch_seq is None and result.hash is None


def test_truncated_and_oversized_raw_is_capped(engine: Engine, gw: Gateway) -> None:
    ing = Ingestor(engine, raw_cap=100)
    ing.enroll(GATEWAY, SITE, gw.public_pem)
    simple_batch(gw, 50)
    wire = gw.seal().wire[:-10]
    assert_rejected(engine, handle(ing, wire), "malformed", wire)
    row = last_rejection(engine)
    assert len(row.raw) == 100 and row.raw_truncated and row.raw_size == len(wire)


def test_topic_mismatch_is_rejected(engine: Engine, ingestor: Ingestor, gw: Gateway) -> None:
    simple_batch(gw)
    sealed = gw.seal()
    assert_rejected(engine, handle(ingestor, sealed.wire, gateway="gw-02"), "topic_mismatch", sealed.wire)


def test_chain_broken_is_rejected(engine: Engine, ingestor: Ingestor, gw: Gateway) -> None:
    simple_batch(gw)
    first = gw.seal()
    # batch 1 not starting at genesis
    bad_start = gw.seal_raw(
        [Reading(1, "t", 1.0, Quality.GOOD, None, T0, None, None, None)], batch_seq=1, prev_hash="ab" * 32
    )
    assert_rejected(engine, handle(ingestor, bad_start.wire), "chain_broken", bad_start.wire)
    assert handle(ingestor, first.wire).status == "stored"
    # batch 2 that does not link to the stored batch 1
    simple_batch(gw, t=T0 + 100)
    second = gw.seal_raw(gw.pending, batch_seq=2, prev_hash="ab" * 32)
    state = stored_state(engine)
    assert_rejected(engine, handle(ingestor, second.wire), "chain_broken", second.wire)
    assert stored_state(engine) == state


def test_chain_broken_against_a_stored_successor(engine: Engine, ingestor: Ingestor, gw: Gateway) -> None:
    simple_batch(gw)
    b1 = gw.seal()
    simple_batch(gw, t=T0 + 10)
    records_2 = list(gw.pending)
    b2 = gw.seal()
    simple_batch(gw, t=T0 + 20)
    b3 = gw.seal()
    assert handle(ingestor, b3.wire).status == "stored"
    # a forged batch 2 that does not link to a stored predecessor either: the stored batch 3 stays
    forged = gw.seal_raw(records_2, batch_seq=2, prev_hash="ab" * 32)
    state = stored_state(engine)
    assert_rejected(engine, handle(ingestor, forged.wire), "chain_broken", forged.wire)
    assert (last_rejection(engine).conflict_batch_seq, last_rejection(engine).conflict_hash) == (3, b3.hash)
    assert stored_state(engine) == state
    assert [handle(ingestor, b.wire).status for b in (b2, b1)] == ["stored", "stored"]


def test_out_of_order_arrival_with_gap_then_filled(engine: Engine, ingestor: Ingestor, gw: Gateway) -> None:
    sealed = []
    for k in range(4):
        simple_batch(gw, t=T0 + 10 * k)
        sealed.append(gw.seal())
    order = [0, 2, 3, 1]  # batch 2 arrives last
    results = [handle(ingestor, sealed[i].wire) for i in order]
    assert [r.status for r in results] == ["stored"] * 4
    assert [r.batch_seq for r in results] == [1, 3, 4, 2]
    with engine.connect() as conn:
        seqs = [r.seq for r in readings_of(conn)]
    assert seqs == list(range(1, 13))


def test_replayed_record_seqs_are_rejected(engine: Engine, ingestor: Ingestor, gw: Gateway) -> None:
    simple_batch(gw)
    b1 = gw.seal()
    assert handle(ingestor, b1.wire).status == "stored"
    replay = gw.seal_raw(
        [Reading(2, "EM-01.temperature", 1.0, Quality.GOOD, None, T0 + 50, None, None, None)],
        batch_seq=2,
        prev_hash=b1.hash,
    )
    state = stored_state(engine)
    result = handle(ingestor, replay.wire)
    assert_rejected(engine, result, "replay", replay.wire)
    assert "seq 2" in (result.detail or "")
    assert stored_state(engine) == state


def test_config_applied_is_kept_as_tag_config(engine: Engine, ingestor: Ingestor, gw: Gateway) -> None:
    ev: Event = gw.apply_config(T0)
    simple_batch(gw, t=T0 + 1)
    assert handle(ingestor, gw.seal().wire).status == "stored"
    with engine.connect() as conn:
        row = conn.execute(select(tag_configs)).one()
    assert row.config_sha256 == ev.data["sha256"]
    assert row.effective_from_us == T0 and row.seq == ev.seq
    assert row.data["tags"][0]["limits"][2]["products"] == ["FC-050"]
    assert row.data["site"]["licence"] == "沪妆20160012"


def forge_document(gw: Gateway, document: bytes, n_readings: int = 1) -> bytes:
    """A batch signed by the gateway's key around a records document the sealer would refuse."""
    header = BatchHeader(version=1, gateway=GATEWAY, site=SITE, key_id=key_id(gw.key.public_key()), batch_seq=1,
                         first_seq=1, last_seq=n_readings, first_ts_us=T0, last_ts_us=T0, n_readings=n_readings,
                         n_events=0, prev_hash=GENESIS_HASH, config_hash="c" * 64, clock="ok", compression="none",
                         payload_sha256=hashlib.sha256(document).hexdigest(), sealed_at_us=T0)
    signed = pack(encode_header(header), document)
    return signed + gw.key.sign(signed)


@pytest.mark.parametrize(("value", "reason"), [
    (b"18446744073709551616", "integer 18446744073709551616, outside"),  # orjson alone reads a float
    (b"-9223372036854775809", "integer -9223372036854775809, outside"),
    (b'"a\\u0000b"', "NUL character"),  # PostgreSQL cannot store it: the batch would never be acknowledged
])
def test_a_value_that_cannot_be_stored_exactly_is_malformed(engine: Engine, ingestor: Ingestor, gw: Gateway,
                                                            value: bytes, reason: str) -> None:
    wire = forge_document(gw, b'{"e":[],"r":[[1,"T",' + value + b',"good",null,' + str(T0).encode()
                          + b',null,null,null]]}')
    result = handle(ingestor, wire)
    assert_rejected(engine, result, "malformed", wire)
    assert reason in (result.detail or "")
    assert counts(engine)["readings"] == 0


def test_integers_at_the_boundaries_are_stored_exactly(engine: Engine, ingestor: Ingestor, gw: Gateway) -> None:
    values = [2**64 - 1, -(2**63), 2**53 + 1]
    rows = b",".join(b'[%d,"T%d",%d,"good",null,%d,null,null,null]' % (i + 1, i, v, T0) for i, v in enumerate(values))
    wire = forge_document(gw, b'{"e":[],"r":[' + rows + b"]}", n_readings=3)
    assert handle(ingestor, wire).status == "stored"
    with engine.connect() as conn:
        back = [decode_value(r.kind, r.num, r.text) for r in readings_of(conn)]
    assert back == values and all(type(v) is int for v in back)


def test_event_data_is_stored_with_its_exact_numbers(engine: Engine, ingestor: Ingestor, gw: Gateway) -> None:
    """PostgreSQL's jsonb would give 1e16 back as an integer and -0.0 as 0.0: equal in Python, not signed."""
    data = {"f": 1e16, "z": -0.0, "one": 1.0, "tiny": 5e-324, "huge": 1e300, "big": 2**64 - 1, "neg": -(2**63),
            "nested": [{"x": 2.5e-7}, True, None, "é"]}
    ev = gw.apply_config(T0, {**config_data(), "extra": data})
    gw.event("qc.result", data, T0 + 1)
    assert handle(ingestor, gw.seal().wire).status == "stored"
    with engine.connect() as conn:
        stored = conn.execute(select(events.c.data).order_by(events.c.seq)).scalars().all()
        config = conn.execute(select(tag_configs.c.data)).scalar_one()
    for got in (stored[1], stored[0]["extra"], config["extra"]):
        # JSON text tells 1e16 from 10000000000000000 and -0.0 from 0.0 (== does not)
        assert json.dumps(got, sort_keys=True) == json.dumps(data, sort_keys=True)
    assert config["sha256"] == ev.data["sha256"]


def _stored_first_prepared_second(engine: Engine, gw: Gateway) -> tuple[Ingestor, Prepared]:
    create_schema(engine)
    ingestor = Ingestor(engine)
    ingestor.enroll(GATEWAY, SITE, gw.public_pem)
    simple_batch(gw)
    assert handle(ingestor, gw.seal().wire).status == "stored"
    simple_batch(gw, t=T0 + 100)
    prepared = ingestor.prepare(gw.seal().wire, SITE, GATEWAY)
    assert isinstance(prepared, Prepared), prepared
    return ingestor, prepared


def test_a_database_connection_lost_between_batches_is_a_database_error(pg_engine: Engine, gw: Gateway) -> None:
    """A lost connection comes out as SQLAlchemy's DBAPIError (which the service retries, never acknowledging),
    and the retry stores the batch."""
    ingestor, prepared = _stored_first_prepared_second(pg_engine, gw)
    with pg_engine.connect() as conn:  # the pool's one connection, the ingestor's
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    killer = make_engine(pg_engine.url.render_as_string(hide_password=False))
    with killer.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()
    killer.dispose()
    with pytest.raises(DBAPIError):
        ingestor.store(prepared)
    assert ingestor.store(prepared).status == "stored"


def test_a_statement_sent_past_sqlalchemy_fails_as_a_database_error(pg_engine: Engine, gw: Gateway) -> None:
    """On PostgreSQL the chain's lock and state go to psycopg directly (a pipeline): its errors must still be
    SQLAlchemy's (here OperationalError: the gateway's row stays locked beyond the session's lock_timeout),
    which the service retries, instead of a driver error that would leave the batch unacknowledged."""
    ingestor, prepared = _stored_first_prepared_second(pg_engine, gw)
    with pg_engine.connect() as conn:  # the pool's one connection, the ingestor's
        schema = conn.execute(text("SELECT current_schema()")).scalar_one()
        conn.execute(text("SET lock_timeout = '200ms'"))
        conn.commit()
    holder = make_engine(pg_engine.url.render_as_string(hide_password=False))
    try:
        with holder.begin() as conn:
            conn.execute(text(f'UPDATE "{schema}".gateways SET last_batch_at_us = 0'))
            with pytest.raises(OperationalError, match="lock timeout"):
                ingestor.store(prepared)
    finally:
        holder.dispose()
    assert ingestor.store(prepared).status == "stored"
