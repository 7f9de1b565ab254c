"""A synthetic gateway for the store tests: numbers records like the buffer, seals like the agent."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from blackbox.model import Event, Quality, Reading, Value
from blackbox.seal import GENESIS_HASH, KEY_ROTATED, SealedBatch, key_id, public_key_pem, rotation_data, seal_batch

SITE = "SH-PD-01"
GATEWAY = "gw-01"
T0 = 1_795_000_000_000_000  # 2026-11-18 in microseconds
SEC = 1_000_000

TAGS: list[dict[str, Any]] = [
    {
        "name": "EM-01.temperature",
        "unit": "EM-01",
        "category": "process",
        "eng_unit": "degC",
        "description": "product temperature",
        "limits": [
            {"phases": [], "products": [], "ll": None, "l": None, "h": 90.0, "hh": None},
            {"phases": ["emulsify"], "products": [], "ll": None, "l": 70.0, "h": 80.0, "hh": 85.0},
            {"phases": ["emulsify"], "products": ["FC-050"], "ll": None, "l": 71.0, "h": 79.0, "hh": 85.0},
            {"phases": ["cool"], "products": [], "ll": None, "l": None, "h": 45.0, "hh": None},
        ],
    },
    {
        "name": "EM-01.vacuum",
        "unit": "EM-01",
        "category": "process",
        "eng_unit": "MPa",
        "description": "vessel vacuum",
        "limits": [{"phases": ["emulsify"], "products": [], "ll": None, "l": -0.09, "h": -0.06, "hh": None}],
    },
    {
        "name": "CR-01.temperature",
        "unit": "CR-01",
        "category": "environment",
        "eng_unit": "degC",
        "description": "clean room temperature",
        "limits": [{"phases": [], "products": [], "ll": None, "l": 18.0, "h": 26.0, "hh": None}],
    },
    {
        "name": "WS-01.actual",
        "unit": "WS-01",
        "category": "material",
        "eng_unit": "kg",
        "description": "scale reading",
        "limits": [],
    },
]


def config_data(tags: list[dict[str, Any]] | None = None, *, sha: str | None = None) -> dict[str, Any]:
    tags = TAGS if tags is None else tags
    return {
        "sha256": sha or hashlib.sha256(repr(tags).encode()).hexdigest(),
        "site": {"id": SITE, "name": "Shanghai Pudong Cosmetics Co.", "licence": "沪妆20160012", "line": "L1"},
        "gateway": GATEWAY,
        "tags": tags,
    }


@dataclass
class Gateway:
    """Numbers records (contiguous seq), tracks the production context, seals batches in a chain."""

    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    site: str = SITE
    gateway: str = GATEWAY
    seq: int = 1
    batch_seq: int = 1
    prev_hash: str = GENESIS_HASH
    batch: str | None = None
    phase: str | None = None
    config_hash: str = "c" * 64
    pending: list[Reading | Event] = field(default_factory=list)
    sealed: list[SealedBatch] = field(default_factory=list)

    @property
    def public_pem(self) -> str:
        pem: str | bytes = public_key_pem(self.key)
        return pem.decode() if isinstance(pem, bytes) else pem

    def reading(
        self, tag: str, value: Value, ts_us: int, quality: Quality = Quality.GOOD, reason: str | None = None
    ) -> Reading:
        r = Reading(self.seq, tag, value, quality, reason, ts_us, ts_us - 1000, self.batch, self.phase)
        self.seq += 1
        self.pending.append(r)
        return r

    def event(self, type_: str, data: dict[str, Any], ts_us: int, subject: str | None = None) -> Event:
        e = Event(self.seq, type_, subject, data, ts_us, self.batch, self.phase)
        self.seq += 1
        self.pending.append(e)
        return e

    def apply_config(self, ts_us: int, data: dict[str, Any] | None = None) -> Event:
        data = config_data() if data is None else data
        self.config_hash = data["sha256"]
        return self.event("config.applied", data, ts_us)

    def start_batch(self, batch: str, ts_us: int, product: str = "FC-050", operator: str = "zhang.wei") -> None:
        self.batch, self.phase = batch, None
        self.event(
            "batch.started",
            {"batch": batch, "product": product, "recipe": "R-FC-050", "recipe_version": "3", "operator": operator},
            ts_us,
        )

    def set_phase(self, phase: str, ts_us: int) -> None:
        previous, self.phase = self.phase, phase
        self.event("batch.phase", {"batch": self.batch, "phase": phase, "previous": previous}, ts_us)

    def end_batch(self, ts_us: int) -> None:
        self.event("batch.ended", {"batch": self.batch}, ts_us)
        self.batch, self.phase = None, None

    def seal(self, *, compression: str = "zstd") -> SealedBatch:
        assert self.pending, "nothing to seal"
        sealed = seal_batch(
            self.pending,
            site=self.site,
            gateway=self.gateway,
            key=self.key,
            batch_seq=self.batch_seq,
            prev_hash=self.prev_hash,
            config_hash=self.config_hash,
            compression=compression,
            sealed_at_us=self.pending[-1].ts_us + 1,
        )
        self.pending = []
        self.batch_seq += 1
        self.prev_hash = sealed.hash
        self.sealed.append(sealed)
        return sealed

    def rotate(self, ts_us: int, new_key: Ed25519PrivateKey | None = None) -> SealedBatch:
        """Record a key rotation as the agent does: the event ends a batch signed by the old key."""
        new_key = new_key or Ed25519PrivateKey.generate()
        self.event(KEY_ROTATED, rotation_data(self.key, new_key, "test"), ts_us, subject=key_id(new_key))
        sealed = self.seal()
        self.key = new_key
        return sealed

    def seal_raw(
        self,
        records: Sequence[Reading | Event],
        *,
        batch_seq: int,
        prev_hash: str,
        key: Ed25519PrivateKey | None = None,
        gateway: str | None = None,
    ) -> SealedBatch:
        """Seal arbitrary records without touching the chain state (forgeries, replays)."""
        return seal_batch(
            records,
            site=self.site,
            gateway=gateway or self.gateway,
            key=key or self.key,
            batch_seq=batch_seq,
            prev_hash=prev_hash,
            config_hash=self.config_hash,
            sealed_at_us=records[-1].ts_us + 1,
        )


@dataclass
class Scenario:
    """The expected figures of :func:`production_batch`."""

    gw: Gateway
    batch: str
    temps_emulsify: list[float]
    temps_cool_before: list[float]
    temps_cool_after: list[float]
    cool_config_at: int


def production_batch(gw: Gateway, batch: str = "FC050-2026-1125-01", t: int = T0, *, gap: bool = False) -> Scenario:
    """Three sealed batches holding one production batch, as an agent would record it.

    Sealed 1: config.applied, batch.started, two weighings, heat phase readings.
    Sealed 2: emulsify: temperatures crossing H (79) and HH (85), an alarm cycle, a bad reading.
    Sealed 3: cool: a configuration change mid-phase (cool H 45 -> 40), QC, batch.ended.
    ``gap`` adds a ``buffer.gap`` event to sealed batch 2 (the buffer dropped records).
    """
    gw.apply_config(t)
    gw.start_batch(batch, t + 1 * SEC)
    gw.event(
        "material.consumed",
        {
            "material": "RM-001",
            "lot": "LOT-W-0001",
            "target": 361.5,
            "actual": 361.2,
            "eng_unit": "kg",
            "scale": "SC-01",
            "tolerance_pct": 0.5,
            "operator": "li.na",
            "in_tolerance": True,
        },
        t + 2 * SEC,
    )
    gw.event(
        "material.consumed",
        {
            "material": "RM-040",
            "lot": "LOT-N-7",
            "target": 20.0,
            "actual": 20.1,
            "eng_unit": "kg",
            "scale": "SC-01",
            "tolerance_pct": 0.2,
            "operator": "li.na",
            "in_tolerance": False,
        },
        t + 3 * SEC,
    )
    gw.set_phase("heat", t + 4 * SEC)
    for i in range(5):
        gw.reading("EM-01.temperature", 60.0 + i, t + (5 + i) * SEC)
        gw.reading("WS-01.actual", 1.5, t + (5 + i) * SEC)  # material category: not a process parameter
    gw.reading("CR-01.temperature", 21.0, t + 10 * SEC)
    gw.seal()

    temps = [72.0, 75.5, 79.5, 80.0, 86.0, 82.0, 78.0, 74.0]
    gw.set_phase("emulsify", t + 20 * SEC)
    for i, v in enumerate(temps):
        ts = t + (21 + i) * SEC
        gw.reading("EM-01.temperature", v, ts)
        gw.reading("EM-01.vacuum", -0.085 if i != 3 else -0.05, ts)
        if i == 2:
            gw.event(
                "alarm.raised",
                {
                    "rule": "em-temp",
                    "tag": "EM-01.temperature",
                    "level": "H",
                    "value": v,
                    "limit": 79.0,
                    "priority": "high",
                },
                ts,
                subject="EM-01.temperature",
            )
        if i == 5:
            gw.event(
                "alarm.acknowledged",
                {
                    "rule": "em-temp",
                    "tag": "EM-01.temperature",
                    "level": "H",
                    "value": v,
                    "limit": 79.0,
                    "priority": "high",
                    "user": "wang.fang",
                },
                ts,
                subject="EM-01.temperature",
            )
    gw.reading("EM-01.temperature", None, t + 30 * SEC, Quality.BAD, "sensor open circuit")
    gw.event(
        "alarm.cleared",
        {"rule": "em-temp", "tag": "EM-01.temperature", "level": "H", "value": 78.0, "limit": 79.0, "priority": "high"},
        t + 31 * SEC,
        subject="EM-01.temperature",
    )
    gw.event("source.disconnected", {"source": "em01-opcua", "reason": "timeout"}, t + 32 * SEC)
    gw.event("source.connected", {"source": "em01-opcua"}, t + 33 * SEC)
    gw.reading("CR-01.temperature", 27.0, t + 34 * SEC)  # environment excursion in emulsify
    if gap:
        gw.event(
            "buffer.gap",
            {"first_seq": 10_000, "last_seq": 10_200, "from_us": t, "to_us": t + SEC, "reason": "disk quota"},
            t + 35 * SEC,
        )
    gw.seal()

    gw.set_phase("cool", t + 40 * SEC)
    before = [50.0, 44.0, 42.0]
    after = [41.0, 39.0]
    for i, v in enumerate(before):
        gw.reading("EM-01.temperature", v, t + (41 + i) * SEC)
    cool_tags = [dict(tag) for tag in TAGS]
    cool_tags[0] = dict(
        TAGS[0],
        limits=[
            *TAGS[0]["limits"][:3],
            {"phases": ["cool"], "products": [], "ll": None, "l": None, "h": 40.0, "hh": None},
        ],
    )
    gw.apply_config(t + 45 * SEC, config_data(cool_tags))
    for i, v in enumerate(after):
        gw.reading("EM-01.temperature", v, t + (46 + i) * SEC)
    gw.event(
        "qc.result",
        {
            "test": "pH",
            "value": 6.1,
            "spec_low": 5.5,
            "spec_high": 6.5,
            "pass": True,
            "sample": "S-01",
            "operator": "chen.qc",
        },
        t + 50 * SEC,
    )
    gw.event(
        "qc.result",
        {
            "test": "viscosity",
            "value": 16500.0,
            "spec_low": 8000.0,
            "spec_high": 15000.0,
            "pass": False,
            "sample": "S-01",
            "operator": "chen.qc",
        },
        t + 51 * SEC,
    )
    gw.end_batch(t + 60 * SEC)
    gw.reading("EM-01.temperature", 30.0, t + 61 * SEC)  # after the batch: not part of it
    gw.seal()
    return Scenario(gw, batch, temps, before, after, t + 45 * SEC)
