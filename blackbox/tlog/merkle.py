"""Merkle tree hashing and proofs of RFC 6962 / RFC 9162 §2.1 (Certificate Transparency).

* leaf hash ``SHA-256(0x00 ‖ data)``, interior node ``SHA-256(0x01 ‖ left ‖ right)``;
* the tree hash of ``n`` leaves splits at ``k``, the largest power of two below ``n``;
* inclusion proofs (``PATH``) and consistency proofs (``PROOF``/``SUBPROOF``), and their
  verification exactly as the algorithms of RFC 9162 §2.1.3.2 and §2.1.4.2.

A tree is never held in memory by the functions here: they read the hashes of *complete*
subtrees (``(level, index)``: the subtree of the ``2**level`` leaves from ``index * 2**level``)
through a :data:`HashReader`, so a log keeps those hashes in a table and answers every proof in
``O(log n)`` reads. :func:`append_nodes` says which complete-subtree hashes a new leaf creates.
Pure Python, no dependency.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
"""The hash of the empty tree (RFC 9162: the hash of an empty string)."""

Node = tuple[int, int]
"""``(level, index)`` of a complete subtree: leaves ``index * 2**level`` up to ``(index + 1) * 2**level``."""

HashReader = Callable[[Sequence[Node]], Sequence[bytes]]
"""Returns the stored hashes of the given complete subtrees, in the same order."""


class ProofError(ValueError):
    """A proof does not verify, or a proof was asked for sizes or indexes that do not exist."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def subtrees(lo: int, hi: int) -> list[Node]:
    """The complete subtrees that make up leaves ``[lo, hi)``, largest (leftmost) first.

    ``lo`` must be aligned as the ranges of RFC 9162's recursion are (a multiple of the next power
    of two at least ``hi - lo``, or 0); then the tree hash of the range is these subtrees' hashes
    combined from the right.
    """
    out: list[Node] = []
    while lo < hi:
        level = (hi - lo).bit_length() - 1
        while lo % (1 << level):
            level -= 1
        out.append((level, lo >> level))
        lo += 1 << level
    return out


def _combine(hashes: Sequence[bytes]) -> bytes:
    h = hashes[-1]
    for left in reversed(hashes[:-1]):
        h = node_hash(left, h)
    return h


def _range_hashes(ranges: Sequence[tuple[int, int]], read: HashReader) -> list[bytes]:
    """The tree hashes of several leaf ranges, with one call to ``read``."""
    parts = [subtrees(lo, hi) for lo, hi in ranges]
    flat = [node for p in parts for node in p]
    hashes = list(read(flat)) if flat else []
    if len(hashes) != len(flat):
        raise ProofError(f"the hash store returned {len(hashes)} hashes for {len(flat)} subtrees")
    out, i = [], 0
    for p in parts:
        out.append(_combine(hashes[i : i + len(p)]))
        i += len(p)
    return out


def tree_hash(size: int, read: HashReader) -> bytes:
    """``MTH`` of the first ``size`` leaves."""
    if size < 0:
        raise ProofError(f"negative tree size {size}")
    if size == 0:
        return EMPTY_ROOT
    return _range_hashes([(0, size)], read)[0]


def append_nodes(index: int, leaf: bytes, read: HashReader) -> list[tuple[Node, bytes]]:
    """Every complete subtree completed by adding leaf ``index`` (hash ``leaf``), with its hash.

    The leaf itself is ``(0, index)``; each parent follows while the new subtree is a right child.
    ``read`` is asked for the left siblings, which are complete subtrees of the tree before.
    """
    siblings: list[Node] = []
    level, i = 0, index
    while i & 1:
        siblings.append((level, i - 1))
        level, i = level + 1, i >> 1
    left = list(read(siblings)) if siblings else []
    out: list[tuple[Node, bytes]] = [((0, index), leaf)]
    h = leaf
    for (lvl, idx), lh in zip(siblings, left, strict=True):
        h = node_hash(lh, h)
        out.append(((lvl + 1, idx >> 1), h))
    return out


# -- proofs (RFC 9162 §2.1.3.1 PATH and §2.1.4.1 PROOF/SUBPROOF), as leaf ranges ---------------------


def _path(m: int, lo: int, hi: int) -> list[tuple[int, int]]:
    if hi - lo == 1:
        return []
    k = _split(hi - lo)
    if m < lo + k:
        return [*_path(m, lo, lo + k), (lo + k, hi)]
    return [*_path(m, lo + k, hi), (lo, lo + k)]


def _subproof(m: int, lo: int, hi: int, complete: bool) -> list[tuple[int, int]]:
    n = hi - lo
    if m == n:
        return [] if complete else [(lo, hi)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, lo, lo + k, complete), (lo + k, hi)]
    return [*_subproof(m - k, lo + k, hi, False), (lo, lo + k)]


def inclusion_proof(index: int, size: int, read: HashReader) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree of ``size`` leaves."""
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of {size} leaves")
    return _range_hashes(_path(index, 0, size), read)


def consistency_proof(old_size: int, new_size: int, read: HashReader) -> list[bytes]:
    """The proof that the tree of ``old_size`` leaves is a prefix of the tree of ``new_size``."""
    if not 0 < old_size <= new_size:
        raise ProofError(f"no consistency proof from a tree of {old_size} leaves to one of {new_size}")
    if old_size == new_size:
        return []
    return _range_hashes(_subproof(old_size, 0, new_size, True), read)


# -- verification (RFC 9162 §2.1.3.2 and §2.1.4.2) -------------------------------------------------


def _check_hashes(proof: Sequence[bytes], *named: tuple[str, bytes]) -> None:
    for name, h in named:
        if len(h) != HASH_SIZE:
            raise ProofError(f"{name} is {len(h)} bytes, not {HASH_SIZE}")
    for i, p in enumerate(proof):
        if len(p) != HASH_SIZE:
            raise ProofError(f"proof hash {i} is {len(p)} bytes, not {HASH_SIZE}")


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root that ``proof`` leads to from leaf hash ``leaf`` at ``index`` in a tree of ``size``."""
    _check_hashes(proof, ("leaf hash", leaf))
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of {size} leaves")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("inclusion proof is too short")
    return r


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """Raise :class:`ProofError` unless ``proof`` shows leaf hash ``leaf`` at ``index`` under ``root``."""
    _check_hashes((), ("root", root))
    if root_from_inclusion(index, size, leaf, proof) != root:
        raise ProofError(f"inclusion proof of leaf {index} does not lead to the root of the tree of {size}")


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes,
                       proof: Sequence[bytes]) -> None:
    """Raise :class:`ProofError` unless ``proof`` shows the tree ``old_root`` is a prefix of ``new_root``.

    As in the reference test vectors, nothing is proven from the empty tree (``old_size`` 0 fails):
    a verifier that has seen no tree head yet simply adopts the first one it verifies.
    """
    if old_size < 1 or new_size < old_size:  # nothing can be proven about the empty tree
        raise ProofError(f"no consistency proof from a tree of {old_size} leaves to one of {new_size}")
    if old_size == new_size:
        if proof:
            raise ProofError("a consistency proof between equal sizes must be empty")
        if old_root != new_root:
            raise ProofError(f"two different roots for the same size {old_size}")
        return
    _check_hashes(proof, ("old root", old_root), ("new root", new_root))
    if not proof:
        raise ProofError("empty consistency proof")
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # an exact power of two: the old root is the first node
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("consistency proof is too short")
    if fr != old_root:
        raise ProofError(f"consistency proof does not lead to the old root of size {old_size}")
    if sr != new_root:
        raise ProofError(f"consistency proof does not lead to the new root of size {new_size}")


class MemoryTree:
    """A log held in memory: the complete-subtree hashes per level (tests, tools, verifiers)."""

    def __init__(self) -> None:
        self.levels: list[list[bytes]] = []

    @property
    def size(self) -> int:
        return len(self.levels[0]) if self.levels else 0

    def read(self, nodes: Sequence[Node]) -> list[bytes]:
        try:
            return [self.levels[level][index] for level, index in nodes]
        except IndexError:
            raise ProofError("a subtree that is not complete in this tree was asked for") from None

    def append(self, data: bytes) -> int:
        """Add a leaf with entry bytes ``data``; returns its index."""
        index = self.size
        for (level, i), h in append_nodes(index, leaf_hash(data), self.read):
            if level == len(self.levels):
                self.levels.append([])
            if len(self.levels[level]) != i:
                raise RuntimeError("internal error: expected len(self.levels[level]) == i")
            self.levels[level].append(h)
        return index

    def root(self, size: int | None = None) -> bytes:
        return tree_hash(self.size if size is None else size, self.read)

    def inclusion(self, index: int, size: int | None = None) -> list[bytes]:
        return inclusion_proof(index, self.size if size is None else size, self.read)

    def consistency(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        return consistency_proof(old_size, self.size if new_size is None else new_size, self.read)
