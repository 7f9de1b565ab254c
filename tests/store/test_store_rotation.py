"""Key rotation at the store, on SQLite and PostgreSQL: the chain vouches for the new key, and each
key signs only its own stretch of records."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, select
from store_synth import GATEWAY, SITE, T0, Gateway
from test_store_ingest import assert_rejected, handle, simple_batch, stored_state

from blackbox.model import Event, Reading
from blackbox.seal import KEY_ROTATED, key_id, rotation_data, seal_batch
from blackbox.store.gateways import gateway_overview
from blackbox.store.ingest import Ingestor
from blackbox.store.schema import gateway_keys
from blackbox.store.trace import trace_batch


def keys(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        return {row.key_id: row for row in conn.execute(select(gateway_keys))}


def enrolled(engine: Engine, gw: Gateway) -> Ingestor:
    ing = Ingestor(engine)
    ing.enroll(GATEWAY, SITE, gw.public_pem)
    return ing


def test_the_store_learns_the_new_key_from_the_chain(engine: Engine) -> None:
    gw = Gateway()
    old = key_id(gw.key)
    ing = enrolled(engine, gw)
    simple_batch(gw)
    assert handle(ing, gw.seal().wire).status == "stored"
    simple_batch(gw, t=T0 + 10)
    rotation = gw.rotate(T0 + 20)  # records 4..6 and the rotation at 7, signed by the old key
    assert rotation.header.key_id == old and rotation.header.last_seq == 7
    assert handle(ing, rotation.wire).status == "stored"
    new = key_id(gw.key)
    simple_batch(gw, t=T0 + 30)
    after = gw.seal()
    assert after.header.key_id == new
    assert handle(ing, after.wire).status == "stored"  # nobody enrolled the new key by hand

    k = keys(engine)
    assert (k[old].enrolled_by, k[old].valid_from_seq, k[old].valid_to_seq) == ("operator", None, 7)
    assert (k[new].enrolled_by, k[new].rotated_from, k[new].valid_from_seq, k[new].valid_to_seq) == (
        "rotation", old, 8, None)
    (info,) = gateway_overview(engine)
    assert [x.key_id for x in info.keys] == [old, new] and info.batches == 3 and info.missing_batches == 0


def test_a_batch_of_the_new_key_before_its_rotation_arrived_is_refused_then_accepted(engine: Engine) -> None:
    gw = Gateway()
    ing = enrolled(engine, gw)
    simple_batch(gw)
    rotation = gw.rotate(T0 + 5)
    simple_batch(gw, t=T0 + 10)
    early = gw.seal()
    assert_rejected(engine, handle(ing, early.wire), "unknown_key", early.wire)
    assert handle(ing, rotation.wire).status == "stored"
    assert handle(ing, early.wire).status == "stored"  # the gateway's re-send


def test_the_old_key_cannot_sign_records_after_the_rotation(engine: Engine) -> None:
    gw = Gateway()
    old_key = gw.key
    ing = enrolled(engine, gw)
    simple_batch(gw)
    assert handle(ing, gw.rotate(T0 + 5).wire).status == "stored"
    state = stored_state(engine)
    simple_batch(gw, t=T0 + 10)
    forged = gw.seal_raw(gw.pending, batch_seq=gw.batch_seq, prev_hash=gw.prev_hash, key=old_key)
    assert_rejected(engine, handle(ing, forged.wire), "key_not_in_force", forged.wire)
    assert stored_state(engine) == state


def test_the_new_key_cannot_sign_records_before_the_rotation(engine: Engine) -> None:
    gw = Gateway()
    ing = enrolled(engine, gw)
    first_records = [gw.reading("EM-01.temperature", 70.0, T0)]
    first = gw.seal()
    gw.reading("EM-01.temperature", 71.0, T0 + 1)
    gw.seal()  # batch 2 never arrives: batch 1 has no stored neighbour to link to
    new_key = Ed25519PrivateKey.generate()
    assert handle(ing, gw.rotate(T0 + 5, new_key).wire).status == "stored"
    state = stored_state(engine)
    # batch 1 re-signed by the new key: its seqs precede the rotation that brought the key in
    resigned = gw.seal_raw(first_records, batch_seq=1, prev_hash=first.header.prev_hash, key=new_key)
    assert_rejected(engine, handle(ing, resigned.wire), "key_not_in_force", resigned.wire)
    assert stored_state(engine) == state
    assert handle(ing, first.wire).status == "stored"


def _rotation_event(gw: Gateway, data: dict[str, Any], ts: int) -> Event:
    return gw.event(KEY_ROTATED, data, ts, subject=data.get("new_key_id"))


def test_a_rotation_that_breaks_the_rules_is_refused(engine: Engine) -> None:
    gw = Gateway()
    ing = enrolled(engine, gw)
    new_key, stranger = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    cases: dict[str, tuple[dict[str, Any], bool]] = {
        "not last": (rotation_data(gw.key, new_key, "x"), True),
        "wrong old key": (rotation_data(stranger, new_key, "x"), False),
        "key id does not match": ({**rotation_data(gw.key, new_key, "x"), "new_key_id": key_id(stranger)}, False),
        "no public key": ({**rotation_data(gw.key, new_key, "x"), "new_public_key": "zz"}, False),
    }
    for name, (data, reading_after) in cases.items():
        records: list[Reading | Event] = [_rotation_event(gw, data, T0)]
        if reading_after:
            records.append(gw.reading("EM-01.temperature", 1.0, T0 + 1))
        gw.pending = []
        wire = gw.seal_raw(records, batch_seq=1, prev_hash=gw.prev_hash).wire
        result = handle(ing, wire)
        assert result.reason == "key_rotation", (name, result)
        assert_rejected(engine, result, "key_rotation", wire)
        gw.seq = 1
    assert stored_state(engine) == [[], [], []]
    assert list(keys(engine)) == [key_id(gw.key)]


def test_the_trace_verifies_a_production_batch_across_a_rotation(engine: Engine) -> None:
    gw = Gateway()
    ing = enrolled(engine, gw)
    gw.apply_config(T0)
    gw.start_batch("FC050-ROT-01", T0 + 1)
    simple_batch(gw, t=T0 + 2)
    wires = [gw.rotate(T0 + 5).wire]
    simple_batch(gw, t=T0 + 6)
    gw.end_batch(T0 + 9)
    wires.append(gw.seal().wire)
    assert [handle(ing, w).status for w in wires] == ["stored", "stored"]
    report = trace_batch(engine, "FC050-ROT-01")
    assert report.integrity.verdict == "verified", report.integrity.findings


def test_a_stored_batch_outside_its_keys_range_fails_the_trace(engine: Engine) -> None:
    gw = Gateway()
    ing = enrolled(engine, gw)
    gw.apply_config(T0)
    gw.start_batch("FC050-ROT-02", T0 + 1)
    wires = [gw.rotate(T0 + 2).wire]
    gw.end_batch(T0 + 3)
    wires.append(gw.seal().wire)
    assert [handle(ing, w).status for w in wires] == ["stored", "stored"]
    with engine.begin() as conn:  # someone edits the key table after the fact
        conn.execute(gateway_keys.update().where(gateway_keys.c.key_id == key_id(gw.key)).values(valid_from_seq=99))
    report = trace_batch(engine, "FC050-ROT-02")
    assert report.integrity.verdict == "failed"
    # the edited row no longer matches the rotation in the chain, so the new key is not trusted
    assert {"key_altered", "unknown_key"} <= {f.code for f in report.integrity.findings}


def test_seal_batch_records_the_rotation_the_agent_way(engine: Engine) -> None:
    """What the agent's sealer writes: the rotation event as the batch's last record, old key."""
    gw = Gateway()
    ing = enrolled(engine, gw)
    new_key = Ed25519PrivateKey.generate()
    records: list[Reading | Event] = [gw.reading("EM-01.temperature", 1.0, T0),
                                      _rotation_event(gw, rotation_data(gw.key, new_key, "op"), T0 + 1)]
    wire = seal_batch(records, site=SITE, gateway=GATEWAY, key=gw.key, batch_seq=1, prev_hash=gw.prev_hash,
                      config_hash=gw.config_hash).wire
    assert handle(ing, wire).status == "stored"
    assert keys(engine)[key_id(new_key)].valid_from_seq == 3
