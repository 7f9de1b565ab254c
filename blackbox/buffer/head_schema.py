"""The buffer's schema at its head revision, as SQLite stores it (generated: do not edit).

A new buffer is made from these statements (:mod:`blackbox.buffer.migrate`), without importing
Alembic. Made by :func:`blackbox.buffer.upgrade.head_schema_source`, which runs every revision on an
empty file; the tests fail when this file differs from what it makes.
"""

# ruff: noqa: E501

SCHEMA_REVISION = '0005'
"""The head of the buffer's Alembic revisions."""

STATEMENTS = (
    'CREATE TABLE alembic_version (\n\tversion_num VARCHAR(32) NOT NULL, \n\tCONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)\n)',
    'CREATE TABLE events (\n\tseq INTEGER NOT NULL, \n\tts_us BIGINT NOT NULL, \n\ttype VARCHAR NOT NULL, \n\tsubject VARCHAR, \n\tdata TEXT NOT NULL, \n\tbatch VARCHAR, \n\tphase VARCHAR, \n\tPRIMARY KEY (seq)\n)',
    'CREATE TABLE sealed_batches (\n\tbatch_seq INTEGER NOT NULL, \n\tfirst_seq BIGINT NOT NULL, \n\tlast_seq BIGINT NOT NULL, \n\thash VARCHAR(64) NOT NULL, \n\twire BLOB NOT NULL, \n\tsealed_at_us BIGINT NOT NULL, \n\tdelivered_at_us BIGINT, dropped_at_us BIGINT, \n\tPRIMARY KEY (batch_seq)\n)',
    'CREATE TABLE meta (\n\t"key" VARCHAR NOT NULL, \n\tvalue TEXT NOT NULL, \n\tPRIMARY KEY ("key")\n)',
    'CREATE TABLE reading_blocks (\n    first_seq INTEGER NOT NULL, last_seq BIGINT NOT NULL, ts_us BIGINT NOT NULL, batch VARCHAR, phase VARCHAR,\n    tags TEXT NOT NULL, vals TEXT NOT NULL, qualities TEXT, reasons TEXT, source_ts_us TEXT, PRIMARY KEY (first_seq))',
    "CREATE VIEW readings AS\nSELECT b.first_seq + v.key AS seq, b.ts_us AS ts_us, json_extract(b.tags, v.fullkey) AS tag,\n       CASE v.type WHEN 'null' THEN NULL\n            ELSE substr(json_extract(b.vals, v.fullkey, v.fullkey), 2,\n                        (length(json_extract(b.vals, v.fullkey, v.fullkey)) - 3) / 2) END AS value,\n       coalesce(json_extract(b.qualities, v.fullkey), 'good') AS quality,\n       json_extract(b.reasons, v.fullkey) AS reason,\n       json_extract(b.source_ts_us, v.fullkey) AS source_ts_us,\n       b.batch AS batch, b.phase AS phase\nFROM reading_blocks AS b, json_each(b.vals) AS v",
    'CREATE TABLE receipts (\n\tbatch_seq INTEGER NOT NULL, \n\thash VARCHAR(64) NOT NULL, \n\tstatus VARCHAR(16) NOT NULL, \n\tlog_index BIGINT NOT NULL, \n\ttree_size BIGINT NOT NULL, \n\treceived_at_us BIGINT NOT NULL, \n\treceipt TEXT NOT NULL, \n\tcheckpoint TEXT NOT NULL, \n\tinclusion TEXT NOT NULL, \n\taccepted_at_us BIGINT NOT NULL, \n\tPRIMARY KEY (batch_seq)\n)',
    'CREATE TABLE rule_state (\n\t"key" VARCHAR NOT NULL, \n\tstate TEXT NOT NULL, \n\tPRIMARY KEY ("key")\n)',
)
