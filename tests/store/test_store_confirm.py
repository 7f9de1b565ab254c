"""Stored reading chunks proven by re-encoding them (blackbox.store.confirm) are exactly the chunks derive makes.

The re-verification takes a batch's stored chunks as derived when :func:`derive_confirmed` proves them;
the property that matters: whenever it does, they are the chunks :func:`derive` makes of the signed
document, whatever was done to them. Derive (the full reader and :func:`make_chunks`) is the oracle.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_store_chunks import CASES, polled, row

from blackbox.seal import GENESIS_HASH, OpenedBatch, open_batch, seal_rows
from blackbox.seal.header import encode_header
from blackbox.seal.wire import pack
from blackbox.store.chunks import CHUNK_COLUMNS, make_chunks, pack_chunk
from blackbox.store.confirm import _general, _simple, derive_confirmed
from blackbox.store.derive import derive

KEY = Ed25519PrivateKey.generate()
GID, BATCH_SEQ = 7, 3
SEALABLE = {name: rows for name, rows in CASES.items() if name != "an old quality"}  # the format refuses GOOD


def sealed(rows: list[list[Any]], events: list[list[Any]] | None = None) -> OpenedBatch:
    return open_batch(seal_rows(rows, events or [], site="S", gateway="gw", key=KEY, batch_seq=BATCH_SEQ,
                                prev_hash=GENESIS_HASH, config_hash="c" * 64, sealed_at_us=1).wire)


def with_events(rows: list[list[Any]]) -> tuple[list[list[Any]], list[list[Any]]]:
    """The rows renumbered after an event, and another event between two of them."""
    shifted = [[r[0] + (1 if r[0] < 2 else 2), *r[1:]] for r in rows]
    events = [[1, "batch.started", None, {"batch": "B", "product": "P"}, 5, "B", None],
              [3, "alarm.raised", "T-0", {"tag": "T-0", "level": "H", "value": 1.5}, 6, "B", "mix"]]
    return shifted, events


CONFIRMED = {**SEALABLE, "many tags": polled(100, 50), "many tags, uneven": polled(7, 9)[:-3],
             "a string with escapes": [row(1, "T", 'quote " back \\ tab \t nul-free \x01 é 中')],
             "big and tiny floats": [row(1, "F", 1.7976931348623157e308), row(2, "F", 5e-324), row(3, "F", -1e-7)],
             "an empty reason": [row(1, "R", None, quality="bad", reason="")],
             "one reading": [row(1, "T", 20.5)]}


@pytest.mark.parametrize("rows", CONFIRMED.values(), ids=CONFIRMED.keys())
@pytest.mark.parametrize("events", [False, True], ids=["readings only", "with events"])
def test_the_sealer_s_batches_are_proven_and_derive_the_same(rows: list[list[Any]], events: bool) -> None:
    readings, event_rows = with_events(rows) if events and len(rows) > 2 else (rows, [])
    opened = sealed(readings, event_rows)
    derived = derive(opened, GID)
    assert derive_confirmed(opened, GID, derived.readings) == derived


def test_a_batch_of_events_alone_is_proven() -> None:
    opened = sealed([], [[1, "batch.started", None, {"batch": "B"}, 5, "B", None]])
    derived = derive(opened, GID)
    assert derived.readings == [] and derive_confirmed(opened, GID, []) == derived


@pytest.mark.parametrize("rows", CONFIRMED.values(), ids=CONFIRMED.keys())
def test_both_readers_of_stored_chunks_agree(rows: list[list[Any]]) -> None:
    """The column-wise reader of the usual batch reads what the chunk-by-chunk reader reads, and takes
    every batch of floats without reasons whose chunks have source times for all readings or none."""
    chunks = make_chunks(rows, GID, BATCH_SEQ)
    simple, general = _simple(chunks), _general(chunks, GID, BATCH_SEQ)
    assert general is not None
    sources: dict[tuple[Any, ...], set[bool]] = {}
    for r in rows:
        sources.setdefault((r[1], r[7], r[8]), set()).add(r[6] is None)
    usual = all(type(r[2]) is float and r[4] is None for r in rows) and all(len(s) == 1 for s in sources.values())
    assert (simple is not None) == usual
    assert simple is None or simple == general


def test_a_document_another_sealer_wrote_is_left_to_derive() -> None:
    """Same records, other bytes (a space after each comma): derive reads them, the bytes cannot prove them."""
    rows = polled(3, 2)
    document = orjson.dumps({"e": [], "r": rows}, option=orjson.OPT_SORT_KEYS).replace(b",", b", ")
    header = replace(sealed(rows).header, compression="none", payload_sha256=hashlib.sha256(document).hexdigest())
    signed = pack(encode_header(header), document)
    opened = open_batch(signed + KEY.sign(signed))
    derived = derive(opened, GID)
    assert derived.readings == make_chunks(rows, GID, BATCH_SEQ)
    assert derive_confirmed(opened, GID, derived.readings) is None


MIXED = [row(1, "A", 1.0, source=4), row(2, "B", 7), row(3, "A", 2.0, source=5),
         row(4, "B", None, quality="bad", reason="open circuit"), row(5, "C", "text", phase="heat"),
         row(6, "A", 3.0, quality="uncertain", source=6), row(7, "C", True, phase="heat")]
BATCHES = {"usual": polled(4, 3), "mixed": MIXED, "source times in some": CASES["some source times"]}
_C = {name: i for i, name in enumerate(CHUNK_COLUMNS)}


def _other(value: Any, data: st.DataObject) -> Any:
    """Another value for a chunk's column, of the kinds a DBA (or a bug) could write."""
    if isinstance(value, bytes):
        return data.draw(st.one_of(
            st.just(None), st.just(value[:-1]), st.just(value + b"\x00"), st.binary(max_size=40),
            st.builds(lambda i, b: value[:i] + bytes([b]) + value[i + 1:],
                      st.integers(0, max(0, len(value) - 1)), st.integers(0, 255)),
            st.just(b'["good"]'), st.just(b"[null]"), st.just(orjson.dumps([None] * 3))))
    if isinstance(value, bool) or value is None:
        return data.draw(st.one_of(st.just(b"\x01\x01\x01"), st.just(b"[]"), st.just("x"), st.just(b"null")))
    if isinstance(value, int):
        return value + data.draw(st.sampled_from([-1, 1, -1000, 1000]))
    return data.draw(st.sampled_from([value + "x", "", "A", "B", None, "a\x00b", "x" * 129]))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), name=st.sampled_from(sorted(BATCHES)))
def test_chunks_are_proven_only_if_they_are_what_derive_makes(data: st.DataObject, name: str) -> None:
    opened = sealed(BATCHES[name])
    derived = derive(opened, GID).readings
    stored = [list(c) for c in derived]
    for _ in range(data.draw(st.integers(1, 3))):
        change = data.draw(st.sampled_from(["column", "drop", "repeat", "swap", "repack"]))
        i = data.draw(st.integers(0, len(stored) - 1))
        if change == "column":
            column = data.draw(st.sampled_from(CHUNK_COLUMNS))
            stored[i][_C[column]] = _other(stored[i][_C[column]], data)
        elif change == "drop" and len(stored) > 1:
            del stored[i]
        elif change == "repeat":
            stored.insert(i, list(stored[i]))
        elif change == "swap" and len(stored) > 1:
            j = data.draw(st.integers(0, len(stored) - 1))
            stored[i], stored[j] = stored[j], stored[i]
        else:  # a reading's value changed and the chunk packed again, consistent in itself
            chunk = stored[i]
            seqs = [r[0] for r in BATCHES[name] if (r[1], r[7], r[8]) == tuple(chunk[2:5])]
            rows = [list(r) for r in BATCHES[name] if r[0] in seqs]
            if not rows:
                continue
            rows[0][2] = data.draw(st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                                             st.integers(-5, 5), st.none()))
            stored[i] = list(pack_chunk(list(zip(*rows, strict=True)), GID, BATCH_SEQ))
    tuples = [tuple(c) for c in stored]
    proven = derive_confirmed(opened, GID, tuples)
    assert proven is None or tuples == derived
