"""Fuzzing the decoder: 10,000 generated malformed or mutated batches (fuzz_batches.py).

For every one: no exception but :class:`MalformedBatch` (or :class:`BadSignature` when bytes were
changed after signing), each with a specific reason; and whatever is accepted reads exactly as an
independent JSON reader reads the document (types and integers included). Derandomized: the same
10,000 batches on every run. Each Hypothesis example checks ten batches made from its seed (the
per-example bookkeeping of Hypothesis would otherwise cost more than the checks).
"""

from __future__ import annotations

import os
import random
from collections import Counter
from typing import Any

from fuzz_batches import KEY, exact_json, make_wire, payload_document, tagged
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blackbox.seal import BadSignature, MalformedBatch, decode_records, decode_rows, open_batch, verify_batch

EXAMPLES = int(os.environ.get("BLACKBOX_FUZZ_EXAMPLES", "10000"))
PER_SEED = 10


def test_the_decoder_gives_a_reason_for_every_malformed_batch_and_reads_the_rest_exactly() -> None:
    outcomes: Counter[str] = Counter()

    @settings(max_examples=EXAMPLES // PER_SEED, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(st.integers(0, 2**63))
    def check(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(PER_SEED):
            check_one(make_wire(rng))

    def check_one(wire: bytes) -> None:
        try:
            opened = open_batch(wire)
            verify_batch(opened, KEY.public_key())
            records = decode_records(opened)
            readings, events = decode_rows(opened)
        except (MalformedBatch, BadSignature) as exc:
            assert exc.reason and exc.reason == str(exc), repr(exc)
            assert not exc.reason.startswith(("TypeError", "KeyError", "IndexError", "AttributeError")), exc.reason
            outcomes[type(exc).__name__] += 1
            return
        outcomes["accepted"] += 1
        doc: Any = exact_json(payload_document(wire))
        assert tagged([readings, events]) == tagged([doc["r"], doc["e"]])
        assert [r.seq for r in records] == sorted(row[0] for row in readings + events)

    check()
    assert sum(outcomes.values()) == EXAMPLES
    print(f"decoder fuzz: {dict(outcomes)}")
    assert outcomes["MalformedBatch"] + outcomes["BadSignature"] >= 0.8 * EXAMPLES, outcomes
    assert outcomes["accepted"] > 0  # the generator also reaches valid batches, so the checks are not vacuous
