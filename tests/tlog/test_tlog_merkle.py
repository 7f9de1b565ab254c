"""Merkle hashing and proofs against the published RFC 6962 vectors and a naive second implementation.

The vectors (``tests/cases/tlog/rfc6962_vectors.json``) are copied from transparency-dev/merkle (the
Certificate Transparency reference tree and its proof-verification test data); the file names its
commit. The naive implementation below follows RFC 9162 §2.1 literally on lists of entries
(recursive ``MTH``, ``PATH``, ``SUBPROOF`` and a recursive verifier that rebuilds the root), sharing
no code with :mod:`blackbox.tlog.merkle`.
"""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path
from typing import Any

import pytest

from blackbox.tlog.merkle import (
    EMPTY_ROOT,
    MemoryTree,
    ProofError,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from tlog.naive import n_mth, n_path, n_subproof, naive_inclusion_ok

VECTORS = json.loads((Path(__file__).parent.parent / "cases" / "tlog" / "rfc6962_vectors.json").read_text())
LEAVES = [bytes.fromhex(x) for x in VECTORS["leaf_inputs"]]


def b64(x: str | None) -> bytes:
    return base64.b64decode(x) if x is not None else b""


def b64list(xs: list[str] | None) -> list[bytes]:
    return [base64.b64decode(x) for x in xs or []]


# -- vectors ------------------------------------------------------------------------------------------

def test_root_of_every_prefix_of_the_reference_tree() -> None:
    tree = MemoryTree()
    assert tree.root() == EMPTY_ROOT == bytes.fromhex(VECTORS["root_hashes"][0])
    for n, data in enumerate(LEAVES, start=1):
        tree.append(data)
        assert tree.root().hex() == VECTORS["root_hashes"][n]
        assert n_mth(LEAVES[:n]).hex() == VECTORS["root_hashes"][n]


def test_stored_subtree_hashes_are_the_reference_node_hashes() -> None:
    tree = MemoryTree()
    for data in LEAVES:
        tree.append(data)
    assert [[h.hex() for h in level] for level in tree.levels] == VECTORS["node_hashes"]


@pytest.mark.parametrize("case", VECTORS["inclusion"], ids=lambda c: c["file"].removeprefix("testdata/"))
def test_inclusion_vector(case: dict[str, Any]) -> None:
    args = (case["leafIdx"], case["treeSize"], b64(case["leafHash"]), b64list(case["proof"]), b64(case["root"]))
    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)
    assert naive_inclusion_ok(*args) is not case["wantErr"]


@pytest.mark.parametrize("case", VECTORS["consistency"], ids=lambda c: c["file"].removeprefix("testdata/"))
def test_consistency_vector(case: dict[str, Any]) -> None:
    args = (case["size1"], case["size2"], b64(case["root1"]), b64(case["root2"]), b64list(case["proof"]))
    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


def reference_tree_cases(kind: str) -> list[dict[str, Any]]:
    """The happy paths over the reference tree (``testdata/<kind>/<n>/``; the others use other leaves)."""
    return [c for c in VECTORS[kind] if not c["wantErr"] and c["file"].split("/")[2].isdigit()]


@pytest.mark.parametrize("case", reference_tree_cases("inclusion"), ids=lambda c: c["file"])
def test_generated_inclusion_proof_equals_the_vector(case: dict[str, Any]) -> None:
    tree = MemoryTree()
    for data in LEAVES[: case["treeSize"]]:
        tree.append(data)
    assert tree.root() == b64(case["root"])
    assert tree.inclusion(case["leafIdx"]) == b64list(case["proof"])


@pytest.mark.parametrize("case", reference_tree_cases("consistency"), ids=lambda c: c["file"])
def test_generated_consistency_proof_equals_the_vector(case: dict[str, Any]) -> None:
    tree = MemoryTree()
    for data in LEAVES[: case["size2"]]:
        tree.append(data)
    assert tree.root(case["size1"]) == b64(case["root1"])
    assert tree.consistency(case["size1"]) == b64list(case["proof"])


# -- the naive implementation as a second oracle ----------------------------------------------------

def random_entries(n: int, seed: int) -> list[bytes]:
    rnd = random.Random(seed)
    return [rnd.randbytes(rnd.randrange(0, 40)) for _ in range(n)]


def test_proofs_equal_the_naive_ones_for_every_index_and_size() -> None:
    entries = random_entries(70, 1)
    tree = MemoryTree()
    for e in entries:
        tree.append(e)
    for n in range(1, len(entries) + 1):
        root = n_mth(entries[:n])
        assert tree.root(n) == root
        for m in range(n):
            proof = tree.inclusion(m, n)
            assert proof == n_path(m, entries[:n])
            verify_inclusion(m, n, leaf_hash(entries[m]), proof, root)
        for m in range(1, n + 1):
            proof = tree.consistency(m, n)
            assert proof == n_subproof(m, entries[:n], True)
            verify_consistency(m, n, n_mth(entries[:m]), root, proof)


def test_mutated_inclusion_proofs_are_refused_by_both_implementations() -> None:
    rnd = random.Random(7)
    entries = random_entries(50, 2)
    tree = MemoryTree()
    for e in entries:
        tree.append(e)
    checked = 0
    for _ in range(3000):
        n = rnd.randrange(1, len(entries) + 1)
        m = rnd.randrange(n)
        proof, leaf, root = tree.inclusion(m, n), leaf_hash(entries[m]), tree.root(n)
        mutation = rnd.randrange(5)
        if mutation == 0 and proof:
            i = rnd.randrange(len(proof))
            proof[i] = bytes([proof[i][0] ^ 1]) + proof[i][1:]
        elif mutation == 1:
            m = (m + rnd.randrange(1, n + 1)) % (n + 1)  # another index, maybe out of range
        elif mutation == 2:
            n = n + rnd.choice([-1, 1]) if n > 1 else 2
        elif mutation == 3:
            proof = proof[:-1] if proof else [root]
        else:
            leaf = leaf_hash(entries[m] + b"x")
        naive = naive_inclusion_ok(m, n, leaf, proof, root)
        try:
            verify_inclusion(m, n, leaf, proof, root)
            ours = True
        except ProofError:
            ours = False
        assert ours == naive, (m, n, mutation)
        checked += not ours
    assert checked > 2500  # nearly every mutation must break the proof


def test_a_rewritten_or_truncated_log_fails_consistency() -> None:
    entries = random_entries(40, 3)
    honest = MemoryTree()
    for e in entries:
        honest.append(e)
    old_root = honest.root(25)
    rewritten = MemoryTree()
    for i, e in enumerate(entries):
        rewritten.append(e + b"!" if i == 11 else e)
    with pytest.raises(ProofError):
        verify_consistency(25, 40, old_root, rewritten.root(), rewritten.consistency(25))
    truncated = MemoryTree()  # entry 11 deleted, the rest appended again
    for i, e in enumerate(entries):
        if i != 11:
            truncated.append(e)
    with pytest.raises(ProofError):
        verify_consistency(25, 39, old_root, truncated.root(), truncated.consistency(25))
    with pytest.raises(ProofError):  # a shorter log than one already seen cannot be consistent with it
        verify_consistency(25, 20, old_root, honest.root(20), [])
