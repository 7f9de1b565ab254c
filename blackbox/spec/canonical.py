"""Canonical JSON: the exact bytes that are hashed and signed (docs/joint-control.md).

A document (a specification, an approval statement, a two-party action) is reduced to JSON with
object keys sorted by Unicode code point, no whitespace, UTF-8 without escaping non-ASCII
characters, integers in decimal and floats in their shortest round-trip form (Python's ``repr``,
e.g. ``80.0``, ``-0.09``, ``1e-05``). This is exactly::

    json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()

so anyone can reproduce a hash with the Python standard library. Only JSON types are allowed
(a YAML date or a non-string key is an error, not silently converted).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


class NotCanonical(ValueError):
    """The document holds something canonical JSON cannot express."""


def _check(value: Any, path: str) -> None:
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise NotCanonical(f"{path or '<root>'}: NaN and infinity are not allowed")
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check(item, f"{path}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise NotCanonical(f"{path or '<root>'}: key {key!r} is not a string (quote it)")
            _check(item, f"{path}.{key}" if path else key)
        return
    raise NotCanonical(f"{path or '<root>'}: {type(value).__name__} value {value!r} is not a JSON type "
                       "(quote dates and times)")


def canonical_bytes(doc: Any) -> bytes:
    """The canonical JSON bytes of ``doc``; :class:`NotCanonical` for non-JSON values."""
    _check(doc, "")
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def canonical_sha256(doc: Any) -> str:
    """SHA-256 (hex) of :func:`canonical_bytes`."""
    return hashlib.sha256(canonical_bytes(doc)).hexdigest()
