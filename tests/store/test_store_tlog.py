"""The store's transparency log in SQLite and PostgreSQL: what is logged, proofs, concurrent appends.

Roots are checked against the naive RFC 9162 implementation over the stored entry bytes, and
entries against the canonical JSON built here by hand, never against the code under test.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, select, text
from store_synth import GATEWAY, SITE, T0, Gateway
from tlog.naive import n_mth

from blackbox.seal import key_id
from blackbox.store.ingest import Ingestor
from blackbox.store.migrate import upgrade_schema
from blackbox.store.schema import tlog_entries
from blackbox.store.tlog import LogError, TransparencyLog, append_entry
from blackbox.tlog.merkle import ProofError, leaf_hash, verify_consistency, verify_inclusion
from blackbox.tlog.note import Signer, open_checkpoint


def entries(engine: Engine) -> list[tuple[int, str, dict[str, Any]]]:
    with engine.connect() as conn:
        rows = conn.execute(select(tlog_entries.c.idx, tlog_entries.c.kind, tlog_entries.c.data)
                            .order_by(tlog_entries.c.idx)).all()
    return [(r.idx, r.kind, orjson.loads(r.data)) for r in rows]


def all_data(engine: Engine) -> list[bytes]:
    with engine.connect() as conn:
        return [bytes(d) for d in conn.execute(select(tlog_entries.c.data).order_by(tlog_entries.c.idx)).scalars()]


def canonical(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def test_every_decision_is_an_entry_in_order(engine: Engine) -> None:
    ingestor = Ingestor(engine, clock=lambda: 5_000)
    gw = Gateway()
    kid = ingestor.enroll(GATEWAY, SITE, gw.public_pem)
    gw.reading("t", 1.5, T0)
    first = gw.seal()
    stored = ingestor.handle(first.wire, SITE, GATEWAY)
    forged = bytearray(first.wire)
    forged[-1] ^= 1
    rejected = ingestor.handle(bytes(forged), SITE, GATEWAY)
    assert ingestor.revoke(GATEWAY, SITE, kid)
    kinds = [(i, k) for i, k, _ in entries(engine)]
    assert kinds == [(0, "key.enrolled"), (1, "batch"), (2, "rejection"), (3, "key.revoked")]
    data = all_data(engine)
    assert data[1] == canonical({"kind": "batch", "site": SITE, "gateway": GATEWAY, "batch_seq": 1,
                                 "hash": first.hash, "received_at_us": stored.received_at_us})
    with engine.connect() as conn:  # a batch entry is found by its gateway and batch_seq, other kinds are not
        lookup = conn.execute(text("SELECT e.idx, g.site, g.gateway, e.batch_seq FROM tlog_entries e "
                                   "LEFT JOIN gateways g ON g.id = e.gateway_id ORDER BY e.idx")).all()
    assert [tuple(r) for r in lookup] == [(0, None, None, None), (1, SITE, GATEWAY, 1), (2, None, None, None),
                                          (3, None, None, None)]
    assert data[2] == canonical({"kind": "rejection", "site": SITE, "gateway": GATEWAY,
                                 "batch_seq": rejected.batch_seq, "hash": rejected.hash,
                                 "reason": rejected.reason, "raw_sha256": hashlib.sha256(forged).hexdigest(),
                                 "at_us": rejected.received_at_us})
    assert data[3] == canonical({"kind": "key.revoked", "site": SITE, "gateway": GATEWAY, "key_id": kid,
                                 "at_us": 5_000})
    assert orjson.loads(data[0])["key_id"] == kid == key_id(gw.key.public_key())
    size, root = TransparencyLog(engine).head()
    assert (size, root) == (4, n_mth(data))
    assert stored.log is not None and (stored.log.index, stored.log.size, stored.log.root) == (1, 2, n_mth(data[:2]))
    assert rejected.log is not None and rejected.log.index == 2


def test_a_rotation_is_logged_before_the_batch_that_carries_it(engine: Engine) -> None:
    ingestor = Ingestor(engine)
    gw = Gateway()
    ingestor.enroll(GATEWAY, SITE, gw.public_pem)
    gw.reading("t", 1.0, T0)
    assert ingestor.handle(gw.seal().wire, SITE, GATEWAY).status == "stored"
    new_key = Ed25519PrivateKey.generate()
    assert ingestor.handle(gw.rotate(T0 + 10, new_key).wire, SITE, GATEWAY).status == "stored"
    kinds = [k for _, k, _ in entries(engine)]
    assert kinds == ["key.enrolled", "batch", "key.rotated", "batch"]
    rotated = entries(engine)[2][2]
    assert rotated["new_key_id"] == key_id(new_key.public_key())


def test_proofs_from_the_stored_nodes_verify(engine: Engine) -> None:
    with engine.begin() as conn:
        for i in range(37):
            append_entry(conn, "test", {"n": i})
    data = all_data(engine)
    tlog = TransparencyLog(engine)
    for size in (1, 2, 7, 8, 9, 36, 37):
        root = n_mth(data[:size])
        assert tlog.root(size) == root
        for index in range(size):
            verify_inclusion(index, size, leaf_hash(data[index]), tlog.inclusion(index, size), root)
        for old in range(1, size + 1):
            verify_consistency(old, size, n_mth(data[:old]), root, tlog.consistency(old, size))
    with pytest.raises(LogError):
        tlog.inclusion(37, 37)
    with pytest.raises(LogError):
        tlog.consistency(5, 38)


def test_the_proof_an_append_returns_is_the_entrys_audit_path(engine: Engine) -> None:
    """The receipt's inclusion proof comes from the append itself, without a read: it must verify as one
    read from the stored nodes does, against the naive tree hash, at every size (odd, even, powers of two)."""
    positions = []
    for i in range(37):
        with engine.begin() as conn:
            positions.append(append_entry(conn, "test", {"n": i}))
    data = all_data(engine)
    for i, pos in enumerate(positions):
        assert (pos.index, pos.size) == (i, i + 1)
        assert pos.proof is not None
        verify_inclusion(i, i + 1, leaf_hash(data[i]), list(pos.proof), n_mth(data[: i + 1]))
        with pytest.raises(ProofError):
            verify_inclusion(i, i + 1, leaf_hash(b"another entry"), list(pos.proof), n_mth(data[: i + 1]))


def test_signed_checkpoints_verify_and_are_kept(engine: Engine) -> None:
    signer = Signer("example.org/blackbox-store", Ed25519PrivateKey.generate())
    with engine.begin() as conn:
        for i in range(5):
            append_entry(conn, "test", {"n": i})
    tlog = TransparencyLog(engine, signer)
    note = tlog.signed_checkpoint(record=True)
    cp = open_checkpoint(note, signer.verifier)
    assert (cp.size, cp.root) == (5, n_mth(all_data(engine)))
    assert open_checkpoint(tlog.signed_checkpoint(3), signer.verifier).root == n_mth(all_data(engine)[:3])
    with engine.connect() as conn:
        assert conn.execute(text("SELECT size, note FROM tlog_checkpoints")).all() == [(5, note)]


def test_a_rewritten_entry_breaks_consistency_with_an_earlier_checkpoint(engine: Engine) -> None:
    """A DBA rewrites entry 3 and rebuilds the tree: the old tree head is not a prefix of the new one."""
    with engine.begin() as conn:
        for i in range(10):
            append_entry(conn, "test", {"n": i})
    tlog = TransparencyLog(engine)
    old_size, old_root = tlog.head()
    data = all_data(engine)
    data[3] = canonical({"kind": "test", "n": 333})
    with engine.begin() as conn:  # rebuild the whole log from the rewritten entries
        conn.execute(text("DELETE FROM tlog_entries"))
        conn.execute(text("DELETE FROM tlog_nodes"))
        conn.execute(text(f"UPDATE tlog_state SET size = 0, root = '{hashlib.sha256(b'').hexdigest()}'"))
        for payload in [{"n": 333 if i == 3 else i} for i in range(11)]:
            append_entry(conn, "test", payload)
    assert all_data(engine)[:10] == data
    new_size, new_root = tlog.head()
    assert new_size == 11
    with pytest.raises(ProofError):
        verify_consistency(old_size, new_size, old_root, new_root, tlog.consistency(old_size, new_size))


@pytest.mark.parametrize("workers", [4])
def test_concurrent_appends_make_one_consistent_log(engine: Engine, workers: int) -> None:
    per_worker = 30
    errors: list[BaseException] = []
    start = threading.Barrier(workers)

    def work(w: int) -> None:
        try:
            start.wait(10)
            for i in range(per_worker):
                with engine.begin() as conn:
                    append_entry(conn, "test", {"worker": w, "n": i})
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    got = entries(engine)
    assert [i for i, _, _ in got] == list(range(workers * per_worker))
    assert sorted((e["worker"], e["n"]) for _, _, e in got) == [(w, i) for w in range(workers)
                                                                for i in range(per_worker)]
    assert TransparencyLog(engine).head() == (workers * per_worker, n_mth(all_data(engine)))


def test_upgrading_a_store_logs_what_it_already_held(empty_engine: Engine) -> None:
    upgrade_schema(empty_engine, "0002")
    gw = Gateway()
    rows_0002 = [
        "INSERT INTO gateways (id, site, gateway, created_at_us) VALUES (1, 'S', 'gw', 10)",
        f"INSERT INTO gateway_keys (gateway_id, key_id, public_key_pem, enrolled_at_us) "
        f"VALUES (1, 'k1', '{gw.public_pem}', 20)",
    ]
    with empty_engine.begin() as conn:
        for sql in rows_0002:
            conn.execute(text(sql))
        wire = b"\x00"
        conn.execute(text(
            "INSERT INTO sealed_batches (gateway_id, batch_seq, hash, prev_hash, key_id, version, header, first_seq, "
            "last_seq, first_ts_us, last_ts_us, n_readings, n_events, config_hash, clock, sealed_at_us, "
            "received_at_us, wire) VALUES (1, 1, :h, :p, 'k1', 1, '{}', 1, 1, 1, 1, 1, 0, 'c', 'ok', 25, 30, :w)"),
            {"h": "a" * 64, "p": "0" * 64, "w": wire})
        conn.execute(text(
            "INSERT INTO rejections (received_at_us, site, gateway, reason, raw_sha256, raw_size, raw, raw_truncated) "
            "VALUES (25, 'S', 'gw', 'malformed', :s, 1, :w, false)"), {"s": "b" * 64, "w": wire})
    upgrade_schema(empty_engine)
    got = entries(empty_engine)
    assert [k for _, k, _ in got] == ["key.enrolled", "rejection", "batch"]
    assert all_data(empty_engine)[2] == canonical({"kind": "batch", "site": "S", "gateway": "gw", "batch_seq": 1,
                                                   "hash": "a" * 64, "received_at_us": 30})
    with empty_engine.connect() as conn:  # 0012 fills the batch entry's look-up columns from its bytes
        lookup = conn.execute(text("SELECT idx, gateway_id, batch_seq FROM tlog_entries ORDER BY idx")).all()
    assert [tuple(r) for r in lookup] == [(0, None, None), (1, None, None), (2, 1, 1)]
    assert TransparencyLog(empty_engine).head() == (3, n_mth(all_data(empty_engine)))
    # and the log goes on from there
    with empty_engine.begin() as conn:
        append_entry(conn, "test", {})
    assert TransparencyLog(empty_engine).head() == (4, n_mth(all_data(empty_engine)))
