"""The gateway's log watch against trees built in memory: honest growth, old heads, forks, bad proofs."""

from __future__ import annotations

import base64
from typing import Any

from blackbox.tlog.merkle import MemoryTree
from blackbox.tlog.note import Checkpoint
from blackbox.uplink.logwatch import LogWatch, ProofRequest


def tree(n: int, tag: bytes = b"") -> MemoryTree:
    t = MemoryTree()
    for i in range(n):
        t.append(b"entry %d" % i + (tag if i == 2 else b""))
    return t


def cp(t: MemoryTree, size: int) -> Checkpoint:
    return Checkpoint("log", size, t.root(size))


def answer(t: MemoryTree, req: ProofRequest) -> dict[str, Any]:
    return {"type": "consistency", "old": req.old, "new": req.new,
            "proof": [base64.b64encode(h).decode() for h in t.consistency(req.old, req.new)]}


def test_honest_growth_is_adopted_after_its_proof() -> None:
    t = tree(10)
    w = LogWatch()
    assert w.seen(cp(t, 3), "n3") == (cp(t, 3), "n3")  # the first head is adopted as it is
    for size in (4, 5, 6):
        assert w.seen(cp(t, size), f"n{size}") is None
    req = w.next_request()
    assert req == ProofRequest(3, 6)  # only the largest is proven
    assert w.next_request() is None  # one question at a time
    assert w.answer(answer(t, req)) == (cp(t, 6), "n6")
    assert w.next_request() is None and w.inconsistent == 0


def test_an_older_head_must_be_a_prefix_of_the_kept_one() -> None:
    t = tree(10)
    w = LogWatch((cp(t, 8), "n8"))
    w.seen(cp(t, 5), "n5")
    req = w.next_request()
    assert req == ProofRequest(5, 8)
    assert w.answer(answer(t, req)) is None  # nothing new adopted, nothing wrong
    assert w.latest == (cp(t, 8), "n8") and w.inconsistent == 0


def test_a_rewritten_log_is_inconsistent() -> None:
    honest, forged = tree(10), tree(10, b"!")
    w = LogWatch((cp(honest, 5), "n5"))
    w.seen(cp(forged, 9), "f9")
    req = w.next_request()
    assert req is not None
    assert w.answer(answer(forged, req)) is None
    assert w.inconsistent == 1 and w.latest == (cp(honest, 5), "n5")


def test_a_head_of_the_kept_size_with_another_root_is_inconsistent_at_once() -> None:
    w = LogWatch((cp(tree(6), 5), "n5"))
    w.seen(cp(tree(6, b"!"), 5), "f5")
    assert w.inconsistent == 1 and w.next_request() is None


def test_errors_and_stray_answers() -> None:
    t = tree(10)
    w = LogWatch((cp(t, 4), "n4"))
    w.seen(cp(t, 7), "n7")
    req = w.next_request()
    assert req is not None
    assert w.answer({"type": "consistency", "old": 1, "new": 2, "proof": []}) is None  # not our question
    assert w.inconsistent == 0
    assert w.answer({"type": "consistency", "old": req.old, "new": req.new, "error": "no such size"}) is None
    assert w.inconsistent == 1  # the store cannot prove a head it signed


def test_an_unanswered_question_is_asked_again() -> None:
    t = tree(10)
    w = LogWatch((cp(t, 4), "n4"))
    w.seen(cp(t, 7), "n7")
    first = w.next_request()
    w.retry()
    assert w.next_request() == first
