"""The decoder's shortcut (msgspec) against its full reader (orjson, exactness check, column checks).

The shortcut may only say "I cannot vouch" (``None``) and leave the document to the full reader:
it must never accept what the full reader refuses, nor read a value differently. Checked on the
fuzz generator's documents (valid, mutated, broken) and on the shortcut's boundaries one by one.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import Any, get_args

import pytest
from fuzz_batches import documents, tagged

from blackbox.model import Quality
from blackbox.seal.fast_records import Quality as FastQuality
from blackbox.seal.fast_records import fast_readings, read_document
from blackbox.seal.records import RecordError, parse_document

R = [1, "T", 1.5, "good", None, 10, None, None, None]
E = [2, "qc.result", "pH", {"value": 5.5}, 11, "B1", "fill"]


def full(raw: bytes) -> Any:
    """What the full reader makes of ``raw``: the rows (types made explicit), or ``"refused"``."""
    try:
        readings, events = parse_document(raw)
    except RecordError:
        return "refused"
    return tagged([[list(r) for r in readings], events])


def shortcut(raw: bytes) -> Any:
    """What :func:`read_document` (shortcut first) makes of ``raw``, in the same form."""
    try:
        readings, events = read_document(raw)
    except RecordError:
        return "refused"
    return tagged([[list(r) for r in readings], events])


def test_the_shortcut_reads_every_generated_document_as_the_full_reader_does() -> None:
    outcomes: Counter[str] = Counter()
    for seed in range(3000):
        raw = documents(random.Random(seed))[0]
        expected = full(raw)
        fast = fast_readings(raw)
        vouched = fast is not None
        if fast is not None and expected == "refused":  # then the events alone must be what is refused
            assert full(b'{"e":' + fast[1] + b',"r":[]}') == "refused", raw
        assert shortcut(raw) == expected, raw
        outcomes["shortcut" if vouched else ("full" if expected != "refused" else "refused")] += 1
    print(f"shortcut vs full reader: {dict(outcomes)}")
    assert outcomes["shortcut"] > 300 and outcomes["full"] > 100 and outcomes["refused"] > 300, outcomes


MUTATION_PIECES = [b"", b"\\", b"\\u0000", b'"', b"1", b"9" * 20, b"-", b".", b"E9", b"null", b"true", b",", b"[", b"]",
                   b"{", b"}", b":", b" ", b"\xff", b"\xc3\xa9", b"\xed\xa0\x80", b"1e400", b"9223372036854775808",
                   b'"r":[]', b'"e":[]', b"\x00", b"\t"]


def test_the_shortcut_reads_every_mutated_document_as_the_full_reader_does() -> None:
    """Byte edits of a realistic document (mixed values, reasons, context; with and without events)."""
    rows = [[seq, f"L1-{seq % 4}.pv", value, quality, reason, 1_790_000_000_000_000 + seq, None if seq % 2 else seq,
             "FC050-2026-1125-01", "emulsify"]
            for seq, (value, quality, reason) in enumerate(
                [(1.5, "good", None), (-7, "good", None), (True, "good", None), ("RUN", "good", None),
                 (None, "bad", "timeout: no response"), (2.5e-7, "uncertain", "stale"), (0, "good", None)], 1)]
    bases = [doc(rows), doc(rows, [[8, "qc.result", None, {"a": [1, {"b": 2.5}]}, 5, None, None]])]
    rng = random.Random(7)
    outcomes: Counter[str] = Counter()
    for _ in range(5000):
        raw = bytearray(rng.choice(bases))
        for _ in range(rng.randrange(1, 3)):
            at = rng.randrange(len(raw) + 1)
            raw[at:at + rng.randrange(3)] = rng.choice(MUTATION_PIECES)
        expected = full(bytes(raw))
        assert shortcut(bytes(raw)) == expected, bytes(raw)
        outcomes["shortcut" if fast_readings(bytes(raw)) else "full" if expected != "refused" else "refused"] += 1
    assert outcomes["shortcut"] > 500 and outcomes["refused"] > 500, outcomes


def doc(r: list[Any] | None = None, e: list[Any] | None = None) -> bytes:
    return json.dumps({"e": [] if e is None else e, "r": [R] if r is None else r}, separators=(",", ":"),
                      ensure_ascii=False).encode()


def r_at(field: int, value: Any) -> list[Any]:
    """The reading rows of a document: one, ``R`` with its field ``field`` set to ``value``."""
    row = list(R)
    row[field] = value
    return [row]


def data_deep(n: int) -> list[Any]:
    """The event rows of a document: one, ``E`` with data ``n`` objects deep."""
    row = list(E)
    row[3] = json.loads('{"a":' * n + "1" + "}" * n)
    return [row]


BOUNDARIES = [
    # (case, document, whether the shortcut vouches for it)
    ("canonical", doc(), True),
    ("r first", b'{"r":' + doc()[12:-1] + b',"e":[]}', True),
    ("events read by the full reader", doc(e=[E]), True),
    ("escaped quote and backslash", doc(r_at(1, 'T"\\')), True),
    ("NUL escaped", doc(r_at(1, "T\x00")), False),
    ("any \\u escape", doc().replace(b'"T"', b'"\\u00e9"'), False),
    ("lone surrogate", doc().replace(b'"T"', b'"\\ud800"'), False),
    ("whitespace", json.dumps({"e": [], "r": [R]}, indent=1).encode(), False),
    ("trailing newline", doc() + b"\n", False),
    ("key twice", b'{"e":[],"r":[],' + doc()[8:], False),
    ("third key", doc()[:-1] + b',"x":1}', False),
    ("events after the readings too", doc()[:-1] + b',"e":[]}', False),
    ("a brace too many", doc() + b"}", False),
    ("space before the last brace", doc()[:-1] + b" }", True),
    ("value 2**63 (legal, beyond int64)", doc(r_at(2, 2**63)), False),
    ("value 2**64 - 1", doc(r_at(2, 2**64 - 1)), False),
    ("value 2**64", doc(r_at(2, 2**64)), False),
    ("value -2**63 - 1", doc(r_at(2, -(2**63) - 1)), False),
    ("value -2**63", doc(r_at(2, -(2**63))), True),
    ("value 1e400", doc().replace(b"1.5", b"1e400"), False),
    ("value true", doc(r_at(2, True)), True),
    ("value 1 (int)", doc(r_at(2, 1)), True),
    ("value 1.0 (float)", doc(r_at(2, 1.0)), True),
    ("seq true", doc(r_at(0, True)), False),
    ("seq -1", doc(r_at(0, -1)), False),
    ("tag empty", doc(r_at(1, "")), False),
    ("tag 128 characters", doc(r_at(1, "é" * 128)), True),
    ("tag 129 characters", doc(r_at(1, "é" * 129)), False),
    ("quality GOOD", doc(r_at(3, "GOOD")), False),
    ("row of 8", doc([R[:8]]), False),
    ("row of 10", doc([[*R, None]]), False),
    ("value a list", doc(r_at(2, [1])), False),
    ("deep event data", doc(e=data_deep(251)), True),
    ("event data too deep", doc(e=data_deep(252)), True),
    ("event data key twice", doc(e=[E]).replace(b'{"value":5.5}', b'{"value":5.5,"value":6}'), True),
    ("invalid UTF-8", doc(r_at(1, "T")).replace(b'"T"', b'"\xff"'), False),
    ("encoded surrogate", doc(r_at(1, "T")).replace(b'"T"', b'"\xed\xa0\x80"'), False),
]


@pytest.mark.parametrize(("case", "raw", "vouched"), BOUNDARIES, ids=[c[0] for c in BOUNDARIES])
def test_the_shortcut_vouches_only_inside_its_bounds_and_agrees_with_the_full_reader(
        case: str, raw: bytes, vouched: bool) -> None:
    assert (fast_readings(raw) is not None) == vouched
    assert shortcut(raw) == full(raw)


FLOATS = ["0.1", "-0.0", "5e-324", "2.2250738585072011e-308", "1.7976931348623157e308", "9007199254740993.0",
          "0.1000000000000000055511151231257827021181583404541015625", "1e-400", "123456789012345678901234.5",
          "1E5", "1e+16", "4.9406564584124654e-324", "2.4703282292062327e-324", "0.30000000000000004"]


@pytest.mark.parametrize("spelling", FLOATS)
def test_floats_read_to_the_same_bits_either_way(spelling: str) -> None:
    raw = doc().replace(b"1.5", spelling.encode())
    assert fast_readings(raw) is not None
    assert shortcut(raw) == full(raw) != "refused"


def test_the_shortcut_knows_the_qualities_of_the_model() -> None:
    assert set(get_args(FastQuality)) == {q.value for q in Quality}
