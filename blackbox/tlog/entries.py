"""The canonical bytes of log entries: what the store appends and what anyone can rebuild.

An entry is a JSON object with sorted keys, no white space, UTF-8 (orjson's ``OPT_SORT_KEYS``):
``kind`` plus the payload. Its RFC 6962 leaf hash is the Merkle tree's leaf.
"""

from __future__ import annotations

from typing import Any

import orjson


def entry_bytes(kind: str, payload: dict[str, Any]) -> bytes:
    """The canonical bytes of an entry (what its leaf hash covers); anyone can rebuild them."""
    if "kind" in payload:
        raise ValueError("an entry payload must not have a 'kind' key")
    return orjson.dumps({"kind": kind, **payload}, option=orjson.OPT_SORT_KEYS)


def batch_entry(site: str, gateway: str, batch_seq: int, hash_: str, received_at_us: int) -> bytes:
    """The entry of an accepted batch (a gateway rebuilds it from a receipt to check inclusion)."""
    return entry_bytes("batch", {"site": site, "gateway": gateway, "batch_seq": batch_seq, "hash": hash_,
                                 "received_at_us": received_at_us})
