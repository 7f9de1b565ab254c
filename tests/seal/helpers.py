"""Helpers for the sealing tests: a varied set of records and a batch forger.

The forger builds wires from the layout in docs/batch-format.md with its own code (not with
``blackbox.seal.wire``), so the tests also check that the implementation matches the document.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from collections.abc import Callable
from typing import Any

import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from blackbox.model import Event, Quality, Reading
from blackbox.seal import GENESIS_HASH, key_id

CONFIG_HASH = hashlib.sha256(b"config").hexdigest()
T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z in µs


def make_records(first_seq: int = 1) -> list[Reading | Event]:
    """Readings of every value type and events with nested data, interleaved by seq."""
    values: list[Any] = [
        21.5,
        1.0,  # float that looks like an int
        1,  # int
        True,  # bool, not int
        False,
        0,
        -0.0,
        0.1,
        5e-324,
        1.7976931348623157e308,
        1e16,
        2**63 - 1,
        -(2**63),
        2**64 - 1,
        "",
        "Crème hydratante 保湿霜 🧴",
        None,
    ]
    out: list[Reading | Event] = []
    seq = first_seq
    for i, value in enumerate(values):
        quality = Quality.BAD if value is None else Quality.GOOD
        out.append(
            Reading(
                seq=seq,
                tag=f"EM-01.t{i}",
                value=value,
                quality=quality,
                reason="NaN from PLC" if value is None else None,
                ts_us=T0 + i * 1000,
                source_ts_us=None if i % 3 else T0 + i * 1000 - 7,
                batch="B2026-001" if i % 2 else None,
                phase="emulsify" if i % 4 else None,
            )
        )
        seq += 1
        if i % 5 == 0:
            out.append(
                Event(
                    seq=seq,
                    type="material.consumed",
                    subject="WS-01",
                    data={
                        "lot": "L-42",
                        "target": 12.5,
                        "actual": 12,
                        "ok": True,
                        "none": None,
                        "nested": {"list": [1, 1.0, True, "x", None, [], {}], "π": -0.0},
                    },
                    ts_us=T0 + i * 1000 - 500,  # events may be older than the reading before them
                    batch="B2026-001",
                    phase=None,
                )
            )
            seq += 1
    return out


def _summary(document: bytes) -> tuple[int, int, int, list[int]]:
    """(n_readings, n_events, first_seq, timestamps) of a records document, as far as it makes sense."""
    try:
        doc = json.loads(document)
    except (ValueError, RecursionError):
        doc = None
    rows_r = doc.get("r") if isinstance(doc, dict) else None
    rows_e = doc.get("e") if isinstance(doc, dict) else None
    rows_r = rows_r if isinstance(rows_r, list) else []
    rows_e = rows_e if isinstance(rows_e, list) else []
    seqs: list[int] = []
    times: list[int] = []
    for rows, ts_index in ((rows_r, 5), (rows_e, 4)):
        for row in rows:
            if isinstance(row, list) and len(row) > ts_index:
                if type(row[0]) is int:
                    seqs.append(row[0])
                if type(row[ts_index]) is int:
                    times.append(row[ts_index])
    return len(rows_r), len(rows_e), min(seqs, default=1), times or [T0]


def header_for(document: bytes, key: Ed25519PrivateKey, compression: str = "none", **over: Any) -> dict[str, Any]:
    """A valid header agreeing with ``document`` as far as possible (overridable field by field)."""
    n_r, n_e, first, times = _summary(document)
    header: dict[str, Any] = {
        "version": 1,
        "gateway": "gw-1",
        "site": "SH-PD-01",
        "key_id": key_id(key.public_key()),
        "batch_seq": 1,
        "first_seq": first,
        "last_seq": first + max(n_r + n_e, 1) - 1,
        "first_ts_us": min(times),
        "last_ts_us": max(times),
        "n_readings": n_r if n_r + n_e else 1,
        "n_events": n_e,
        "prev_hash": GENESIS_HASH,
        "config_hash": CONFIG_HASH,
        "clock": "ok",
        "compression": compression,
        "payload_sha256": hashlib.sha256(document).hexdigest(),
        "sealed_at_us": T0,
    }
    header.update(over)
    return header


def canonical(header: dict[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def craft(header: dict[str, Any] | bytes, payload: bytes, key: Ed25519PrivateKey) -> bytes:
    """A correctly signed wire around arbitrary header and payload bytes (documented layout)."""
    hbytes = header if isinstance(header, bytes) else canonical(header)
    signed = b"BBX1" + struct.pack(">I", len(hbytes)) + hbytes + struct.pack(">I", len(payload)) + payload
    return signed + key.sign(signed)


def craft_document(document: bytes, key: Ed25519PrivateKey, compression: str = "none", **over: Any) -> bytes:
    """A signed wire carrying ``document`` (records JSON) with a header that agrees with it."""
    compress: dict[str, Callable[[bytes], bytes]] = {
        "none": lambda d: d,
        "zlib": zlib.compress,
        "zstd": lambda d: zstandard.ZstdCompressor().compress(d),
    }
    payload = compress[compression](document)
    return craft(header_for(document, key, compression, **over), payload, key)
