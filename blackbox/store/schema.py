"""Tables of the traceability store (SQLAlchemy Core, portable between SQLite and PostgreSQL).

A gateway is identified by ``(site, gateway)``: gateway ids are only unique within a site
(see :class:`blackbox.config.GatewayConfig`), so every per-gateway table refers to the integer
``gateways.id`` instead of repeating both strings on millions of rows.

Sequence numbers and timestamps (integer microseconds, UTC) are ``BigInteger``. Values keep their
Python type through ``kind``: ``float``/``int``/``bool`` go to ``num`` (and ``int`` also to ``text``
so that integers beyond 2**53 stay exact), ``str`` to ``text``, ``None`` to neither.

Reading chunks and events carry no foreign keys: the ingest path is their only writer, their integrity is
proven by the signed wire bytes kept in ``sealed_batches`` (the trace re-verifies them), and a
foreign-key check per row would cost insert throughput on PostgreSQL.

The Alembic migrations under ``migrations/`` must stay equivalent to this module; a test compares
them.
"""

from __future__ import annotations

from sqlalchemy import (
    DDL,
    JSON,
    BigInteger,
    Boolean,
    Column,
    Engine,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    event,
)
from sqlalchemy.dialects.postgresql import JSONB

from blackbox.store.partitions import DEFAULT_PARTITION

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)

# SQLite only makes INTEGER PRIMARY KEY an auto-incrementing rowid alias; BIGINT elsewhere.
Id = BigInteger().with_variant(Integer(), "sqlite")
Json = JSON().with_variant(JSONB(), "postgresql")
ExactJson = JSON()
"""Signed record data: ``json`` (text) on PostgreSQL, not ``jsonb``, which rewrites numbers (``1e16``
comes back as the integer 10000000000000000, ``-0.0`` as ``0.0``) and so would hold values that
differ from the signed ones while comparing equal in Python."""
Hash = String(64)
Name = String(128)

gateways = Table(
    "gateways",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("site", Name, nullable=False),
    Column("gateway", Name, nullable=False),
    Column("created_at_us", BigInteger, nullable=False),
    Column("last_batch_at_us", BigInteger, nullable=True, comment="Last time a verified batch came in."),
    Column("status", String(16), nullable=True, comment="online/offline, from the gateway's status topic."),
    Column("status_at_us", BigInteger, nullable=True, comment="When the status was received."),
    Column("status_reason", Text, nullable=True),
    UniqueConstraint("site", "gateway"),
)

gateway_keys = Table(
    "gateway_keys",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("gateway_id", Id, ForeignKey("gateways.id"), nullable=False),
    Column("key_id", Name, nullable=False),
    Column("public_key_pem", Text, nullable=False),
    Column("enrolled_at_us", BigInteger, nullable=False),
    Column("revoked_at_us", BigInteger, nullable=True),
    Column("enrolled_by", String(16), nullable=False, server_default="operator",
           comment="operator (blackbox store enroll) or rotation (a key.rotated event in the chain)."),
    Column("rotated_from", Name, nullable=True, comment="Key id that handed over to this key."),
    Column("valid_from_seq", BigInteger, nullable=True, comment="First record seq this key may sign (rotation)."),
    Column("valid_to_seq", BigInteger, nullable=True, comment="Last record seq this key may sign (retired)."),
    UniqueConstraint("gateway_id", "key_id"),
)

sealed_batches = Table(
    "sealed_batches",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("gateway_id", Id, ForeignKey("gateways.id"), nullable=False),
    Column("batch_seq", BigInteger, nullable=False),
    Column("hash", Hash, nullable=False),
    Column("prev_hash", Hash, nullable=False),
    Column("key_id", Name, nullable=False),
    Column("version", Integer, nullable=False),
    Column("header", Json, nullable=False),
    Column("first_seq", BigInteger, nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("first_ts_us", BigInteger, nullable=False),
    Column("last_ts_us", BigInteger, nullable=False),
    Column("n_readings", Integer, nullable=False),
    Column("n_events", Integer, nullable=False),
    Column("config_hash", String(128), nullable=False),
    Column("clock", String(32), nullable=False),
    Column("sealed_at_us", BigInteger, nullable=False),
    Column("received_at_us", BigInteger, nullable=False),
    Column("wire", LargeBinary, nullable=False, comment="Exact bytes received, for re-verification."),
    UniqueConstraint("gateway_id", "batch_seq"),
    Index(None, "hash", "gateway_id"),  # a batch by hash (the log), or by gateway and hash
    Index(None, "gateway_id", "prev_hash"),
)

reading_chunks = Table(
    "reading_chunks",
    metadata,
    Column("gateway_id", Id, primary_key=True, autoincrement=False),
    Column("first_seq", BigInteger, primary_key=True, autoincrement=False, comment="Seq of the chunk's first reading."),
    Column("first_ts_us", BigInteger, primary_key=True, autoincrement=False,
           comment="Earliest reading time in the chunk; the partition key on PostgreSQL (monthly partitions)."),
    Column("last_seq", BigInteger, nullable=False),
    Column("last_ts_us", BigInteger, nullable=False, comment="Latest reading time in the chunk."),
    Column("batch_seq", BigInteger, nullable=False, comment="Sealed batch that carried the readings."),
    Column("tag", Name, nullable=False),
    Column("batch", Name, nullable=True),
    Column("phase", Name, nullable=True),
    Column("n", Integer, nullable=False, comment="Number of readings in the chunk."),
    Column("seqs", LargeBinary, nullable=False, comment="int64 little-endian, one per reading, ascending."),
    Column("ts", LargeBinary, nullable=False, comment="int64 little-endian reading times (us)."),
    Column("kinds", LargeBinary, nullable=False,
           comment="One ASCII byte per reading: f(loat) i(nt) b(ool) s(tr) n(ull)."),
    Column("nums", LargeBinary, nullable=False, comment="float64 little-endian; 0 where the kind has no number."),
    Column("texts", LargeBinary, nullable=True, comment="JSON list: the text of each int and str value, in order."),
    Column("qualities", LargeBinary, nullable=False, comment="One ASCII byte per reading: g(ood) u(ncertain) b(ad)."),
    Column("reasons", LargeBinary, nullable=True, comment="JSON list of each reading's reason; null if none has one."),
    Column("source_ts", LargeBinary, nullable=True, comment="int64 little-endian source times; null if none."),
    Column("source_mask", LargeBinary, nullable=True, comment="0/1 per reading with a source time; null if all."),
    Index(None, "batch", "tag"),
    Index(None, "tag", "first_ts_us"),
    Index(None, "gateway_id", "last_seq"),
    postgresql_partition_by="RANGE (first_ts_us)",
)
"""The readings, as column chunks (:mod:`blackbox.store.chunks`): one row per sealed batch, tag,
production batch and phase. The primary key includes ``first_ts_us`` because PostgreSQL requires
the partition key in every unique constraint of a partitioned table. Indexes: the key serves look-
ups by gateway and seq range, (gateway, last_seq) the replay check of ingest (chunks overlapping a
new batch's records), (tag, first_ts_us) a tag over time, (batch, tag) a production batch."""

event.listen(reading_chunks, "after_create",
             DDL(f"CREATE TABLE {DEFAULT_PARTITION} PARTITION OF reading_chunks DEFAULT")  # type: ignore[no-untyped-call]  # DDL() is unannotated
             .execute_if(dialect="postgresql"))

events = Table(
    "events",
    metadata,
    Column("gateway_id", Id, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("batch_seq", BigInteger, nullable=False),
    Column("type", String(64), nullable=False),
    Column("subject", Text, nullable=True),
    Column("data", ExactJson, nullable=False),
    Column("ts_us", BigInteger, nullable=False),
    Column("batch", Name, nullable=True),
    Column("phase", Name, nullable=True),
    Column(
        "ref",
        Name,
        nullable=True,
        comment="Lookup key from data: the supplier lot of material.consumed, the batch of batch.* events.",
    ),
    Index(None, "batch", "type"),
    Index(None, "ref", "type"),
)

rejections = Table(
    "rejections",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("received_at_us", BigInteger, nullable=False),
    Column("topic", Text, nullable=True),
    Column("site", Name, nullable=True, comment="As claimed by the topic."),
    Column("gateway", Name, nullable=True, comment="As claimed by the topic."),
    Column("batch_seq", BigInteger, nullable=True, comment="As claimed by the header, if it could be read."),
    Column("hash", Hash, nullable=True),
    Column("reason", String(32), nullable=False),
    Column("detail", Text, nullable=True),
    Column("raw_sha256", Hash, nullable=False),
    Column("raw_size", BigInteger, nullable=False),
    Column("raw", LargeBinary, nullable=False, comment="The bytes received, capped."),
    Column("raw_truncated", Boolean, nullable=False),
    Column("conflict_batch_seq", BigInteger, nullable=True,
           comment="The stored batch this one conflicts with (fork, chain_broken, replay), if any."),
    Column("conflict_hash", Hash, nullable=True, comment="Hash of that stored batch."),
    Index(None, "received_at_us"),
    Index(None, "gateway", "reason"),
)

tag_configs = Table(
    "tag_configs",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("gateway_id", Id, ForeignKey("gateways.id"), nullable=False),
    Column("seq", BigInteger, nullable=False, comment="Seq of the config.applied event."),
    Column("config_sha256", String(128), nullable=False),
    Column("effective_from_us", BigInteger, nullable=False),
    Column("data", ExactJson, nullable=False,
           comment="The config.applied event data: site, gateway, tags, limits."),
    UniqueConstraint("gateway_id", "seq"),
    Index(None, "gateway_id", "effective_from_us"),
)

tlog_entries = Table(
    "tlog_entries",
    metadata,
    Column("idx", BigInteger, primary_key=True, autoincrement=False, comment="Leaf index in the log, from 0."),
    Column("kind", String(32), nullable=False, comment="batch, key.enrolled, key.rotated, key.revoked, rejection…"),
    Column("ref", Name, nullable=True, comment="Lookup key: the batch hash, key id or raw SHA-256 it records."),
    Column("data", LargeBinary, nullable=False, comment="The entry's canonical bytes; the leaf hash covers them."),
    Column("created_at_us", BigInteger, nullable=False),
    Column("gateway_id", Id, nullable=True,
           comment="A batch entry's gateway, as its bytes name it (null for other kinds): a gateway's entries "
                   "looked up without reading the whole log; store verify holds it to the bytes."),
    Column("batch_seq", BigInteger, nullable=True, comment="A batch entry's batch_seq, as its bytes say."),
    Index(None, "ref", "kind"),
    Index(None, "gateway_id", "batch_seq"),
)

tlog_nodes = Table(
    "tlog_nodes",
    metadata,
    Column("level", Integer, primary_key=True, autoincrement=False),
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary, nullable=False, comment="Hash of the complete subtree of 2**level leaves."),
)

tlog_state = Table(
    "tlog_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False, comment="Always 1: the row appends lock."),
    Column("size", BigInteger, nullable=False),
    Column("root", Hash, nullable=False, comment="Root hash (hex) of the tree of this size."),
)

tlog_checkpoints = Table(
    "tlog_checkpoints",
    metadata,
    Column("size", BigInteger, primary_key=True, autoincrement=False),
    Column("note", Text, nullable=False, comment="The signed checkpoint (C2SP signed note) published for it."),
    Column("created_at_us", BigInteger, nullable=False),
)

TLOG_EMPTY_ROOT = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
event.listen(tlog_state, "after_create",
             DDL(f"INSERT INTO tlog_state (id, size, root) VALUES (1, 0, '{TLOG_EMPTY_ROOT}')"))  # type: ignore[no-untyped-call]  # DDL() is unannotated


approver_keys = Table(
    "approver_keys",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("site", Name, nullable=False),
    Column("role", String(16), nullable=False, comment="qa (the factory's quality assurance) or regulator."),
    Column("key_id", Name, nullable=False),
    Column("public_key_pem", Text, nullable=False),
    Column("enrolled_at_us", BigInteger, nullable=False),
    UniqueConstraint("site", "key_id"),
)

specifications = Table(
    "specifications",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("site", Name, nullable=False),
    Column("spec_id", Name, nullable=False),
    Column("product", Name, nullable=False),
    Column("version", Integer, nullable=False),
    Column("sha256", Hash, nullable=False, comment="Canonical hash of the document."),
    Column("document", Json, nullable=False),
    Column("signatures", Json, nullable=False, comment="The sidecar signature file, as received."),
    Column("status", String(16), nullable=False, comment="approved or refused, when it was received."),
    Column("detail", Text, nullable=True, comment="Why it was refused."),
    Column("received_at_us", BigInteger, nullable=False),
    Column("source", String(64), nullable=False, comment="gateway site/id (spec.applied) or operator."),
    UniqueConstraint("site", "sha256"),
    Index(None, "site", "spec_id", "version"),
)

joint_actions = Table(
    "joint_actions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("at_us", BigInteger, nullable=False),
    Column("action", String(32), nullable=False, comment="reenroll, revoke or purge."),
    Column("site", Name, nullable=True),
    Column("gateway", Name, nullable=True),
    Column("sha256", Hash, nullable=True, comment="Canonical hash of the action document."),
    Column("document", Json, nullable=True),
    Column("signatures", Json, nullable=True),
    Column("outcome", String(16), nullable=False, comment="done or refused."),
    Column("detail", Text, nullable=True),
    Column("actor", Name, nullable=True, comment="OS account that ran the command."),
    Index(None, "site", "at_us"),
)


# -- the web window (blackbox.web): principals, sessions, and the record of who looked at what --------

web_users = Table(
    "web_users",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("username", Name, nullable=False),
    Column("password_hash", Text, nullable=False, comment="argon2id (argon2-cffi), never the password."),
    Column("role", String(16), nullable=False, comment="regulator, factory_qa or admin."),
    Column("sites", Json, nullable=True, comment="Sites the user may see; null: every site (regulator only)."),
    Column("created_at_us", BigInteger, nullable=False),
    Column("disabled_at_us", BigInteger, nullable=True),
    UniqueConstraint("username"),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("token_id", String(32), nullable=False, comment="Public part of the token (shown in lists)."),
    Column("secret_sha256", Hash, nullable=False, comment="SHA-256 of the secret part; the secret is shown once."),
    Column("name", Name, nullable=False, comment="Who holds it (person or system)."),
    Column("role", String(16), nullable=False),
    Column("sites", Json, nullable=True),
    Column("created_at_us", BigInteger, nullable=False),
    Column("expires_at_us", BigInteger, nullable=True),
    Column("revoked_at_us", BigInteger, nullable=True),
    UniqueConstraint("token_id"),
)

web_sessions = Table(
    "web_sessions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("session_sha256", Hash, nullable=False, comment="SHA-256 of the cookie value."),
    Column("user_id", Id, ForeignKey("web_users.id"), nullable=False),
    Column("csrf", String(64), nullable=False, comment="Token every form of the session must carry."),
    Column("created_at_us", BigInteger, nullable=False),
    Column("expires_at_us", BigInteger, nullable=False),
    UniqueConstraint("session_sha256"),
)

access_log = Table(
    "access_log",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("at_us", BigInteger, nullable=False),
    Column("principal", Name, nullable=False, comment="user:<name> or token:<id> (<name>)."),
    Column("role", String(16), nullable=False),
    Column("action", String(64), nullable=False, comment="What was read, e.g. batch.report, batch.series."),
    Column("site", Name, nullable=True),
    Column("batch", Name, nullable=True),
    Column("detail", Text, nullable=True),
    Column("client", String(64), nullable=True, comment="Client address as seen by the web process."),
    Index(None, "site", "batch"),
    Index(None, "at_us"),
)

golden_batches = Table(
    "golden_batches",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("site", Name, nullable=False),
    Column("product", Name, nullable=False),
    Column("batch", Name, nullable=True, comment="Null: the choice was withdrawn (compare with the last batches)."),
    Column("occurrence", Integer, nullable=True, comment="Which run of a reused batch number (1, 2, ...)."),
    Column("started_at_us", BigInteger, nullable=True,
           comment="Start of the chosen occurrence: pins the run even if the number was reused."),
    Column("chosen_at_us", BigInteger, nullable=False),
    Column("chosen_by", Name, nullable=False, comment="user:<name>, token:<id> (<name>) or cli:<OS account>."),
    Column("role", String(16), nullable=False),
    Column("reason", Text, nullable=True),
    Index(None, "site", "product", "id"),
)


def create_schema(engine: Engine) -> None:
    """Create every table that does not exist yet (tests and throwaway stores).

    Long-lived stores use :func:`blackbox.store.migrate.upgrade_schema` so that later schema
    changes can be applied in place.
    """
    metadata.create_all(engine)
