"""The chain-link rules of blackbox.seal.links, which the sealer, the store and the verifiers share."""

from __future__ import annotations

import pytest

from blackbox.seal import GENESIS_HASH, ChainEnd, breaks, link_faults, successor
from blackbox.seal.links import Successor

A, B = "a" * 64, "b" * 64
END = ChainEnd(batch_seq=4, hash=A, last_seq=100)


class _Link:
    def __init__(self, batch_seq: int, prev_hash: str, first_seq: int) -> None:
        self.batch_seq, self.prev_hash, self.first_seq = batch_seq, prev_hash, first_seq


@pytest.mark.parametrize(("current", "faults", "broken"), [
    (_Link(5, A, 101), set(), False),
    (_Link(5, A, 150), {"seq_gap"}, False),          # records dropped: the chain still links
    (_Link(5, B, 101), {"prev_hash"}, True),
    (_Link(6, A, 101), {"batch_seq"}, True),
    (_Link(3, B, 90), {"prev_hash", "batch_seq", "seq_gap"}, True),
])
def test_link_faults(current: _Link, faults: set[str], broken: bool) -> None:
    assert set(link_faults(END, current)) == faults
    assert breaks(END, current) is broken


def test_unknown_last_seq_checks_only_the_chain() -> None:
    purged_end = ChainEnd(batch_seq=4, hash=A, last_seq=None)
    assert link_faults(purged_end, _Link(5, A, 7)) == {}
    assert breaks(purged_end, _Link(5, B, 7))
    with pytest.raises(ValueError, match="unknown"):
        successor(purged_end)


@pytest.mark.parametrize(("end", "expected"), [
    (None, Successor(batch_seq=1, prev_hash=GENESIS_HASH, after_seq=0)),
    (END, Successor(batch_seq=5, prev_hash=A, after_seq=100)),
])
def test_successor(end: ChainEnd | None, expected: Successor) -> None:
    assert successor(end) == expected
