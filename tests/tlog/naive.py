"""A naive RFC 9162 §2.1 Merkle tree on lists of entries: the second implementation tests compare with.

Recursive ``MTH``, ``PATH``, ``SUBPROOF`` and a recursive verifier that rebuilds the root, literally
from the RFC, sharing no code with :mod:`blackbox.tlog.merkle`.
"""

from __future__ import annotations

import hashlib


def n_mth(d: list[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = 1
    while k * 2 < len(d):
        k *= 2
    return hashlib.sha256(b"\x01" + n_mth(d[:k]) + n_mth(d[k:])).digest()


def n_k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def n_path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = n_k(len(d))
    if m < k:
        return [*n_path(m, d[:k]), n_mth(d[k:])]
    return [*n_path(m - k, d[k:]), n_mth(d[:k])]


def n_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    if m == len(d):
        return [] if b else [n_mth(d)]
    k = n_k(len(d))
    if m <= k:
        return [*n_subproof(m, d[:k], b), n_mth(d[k:])]
    return [*n_subproof(m - k, d[k:], False), n_mth(d[:k])]


def n_root_from_path(m: int, n: int, leaf: bytes, proof: list[bytes]) -> bytes | None:
    """Rebuild the root the way the tree was built: split, recurse, the last proof hash is the sibling."""
    if n == 1:
        return leaf if not proof else None
    if not proof:
        return None
    k = n_k(n)
    sibling = proof[-1]
    if m < k:
        inner = n_root_from_path(m, k, leaf, proof[:-1])
        return None if inner is None else hashlib.sha256(b"\x01" + inner + sibling).digest()
    inner = n_root_from_path(m - k, n - k, leaf, proof[:-1])
    return None if inner is None else hashlib.sha256(b"\x01" + sibling + inner).digest()


def naive_inclusion_ok(m: int, n: int, leaf: bytes, proof: list[bytes], root: bytes) -> bool:
    if not 0 <= m < n or any(len(p) != 32 for p in [*proof, leaf, root]):
        return False
    return n_root_from_path(m, n, leaf, proof) == root


