"""The trace's excursions and counts outside the limits, against a reading-by-reading count written here.

The report finds the readings outside at C speed and walks only the runs they form; the oracle walks
every reading. Random values around a band, random phase changes and sealed-batch boundaries, some
bad or null readings (which neither count nor end an excursion).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st
from store_synth import GATEWAY, SEC, SITE, T0, Gateway, config_data

from blackbox.model import Quality
from blackbox.store.db import make_engine
from blackbox.store.ingest import Ingestor
from blackbox.store.schema import create_schema
from blackbox.store.trace import trace_batch

TAG = "T-01.pv"
RANK = {"H": 1, "HH": 2, "L": 1, "LL": 2}


def level(v: float, lim: dict[str, float | None]) -> str | None:
    """ISA alarm levels, the highest first (the rule of docs/store.md)."""
    for name, above in (("hh", True), ("h", True), ("ll", False), ("l", False)):
        bound = lim[name]
        if bound is not None and (v > bound if above else v < bound):
            return name.upper()
    return None


def expected(readings: list[tuple[int, float | None, bool, str]], lim: dict[str, float | None]
             ) -> dict[str, tuple[int, int, list[tuple[Any, ...]]]]:
    """Per phase: readings outside, those beyond HH/LL, and the excursions that started in it."""
    out: dict[str, tuple[int, int, list[tuple[Any, ...]]]] = {}
    open_ex: dict[str, Any] | None = None
    for ts, value, bad, phase in readings:
        n_out, n_hard, exs = out.setdefault(phase, (0, 0, []))
        if bad or value is None:
            continue
        lv = level(value, lim)
        side = None if lv is None else "high" if lv in ("H", "HH") else "low"
        if open_ex is not None and side != open_ex["side"]:
            open_ex["list"].append((open_ex["level"], open_ex["start"], ts, open_ex["peak"], open_ex["n"], True))
            open_ex = None
        if lv is None:
            continue
        out[phase] = (n_out + 1, n_hard + (lv in ("HH", "LL")), exs)
        if open_ex is None:
            open_ex = {"side": side, "level": lv, "start": ts, "peak": value, "n": 0, "list": exs, "last": ts}
        open_ex["n"] += 1
        open_ex["last"] = ts
        open_ex["peak"] = max(open_ex["peak"], value) if side == "high" else min(open_ex["peak"], value)
        if RANK[lv] > RANK[open_ex["level"]]:
            open_ex["level"] = lv
    if open_ex is not None:
        open_ex["list"].append((open_ex["level"], open_ex["start"], open_ex["last"], open_ex["peak"], open_ex["n"],
                                False))
    return out


limits = st.fixed_dictionaries({"ll": st.sampled_from([None, 20.0]), "l": st.sampled_from([None, 30.0]),
                                "h": st.sampled_from([None, 70.0]), "hh": st.sampled_from([None, 80.0])}
                               ).filter(lambda lim: any(v is not None for v in lim.values()))  # a set has a limit
reading = st.tuples(st.sampled_from([10.0, 25.0, 50.0, 75.0, 85.0, 30.0, 70.0, -0.0, 1e9]),
                    st.sampled_from(["good"] * 8 + ["bad", "null", "uncertain"]),
                    st.sampled_from(["stay"] * 6 + ["seal", "phase"]))


BAND = {"ll": None, "l": 30.0, "h": 70.0, "hh": 80.0}


@settings(max_examples=30, deadline=None)
@given(lim=limits, plan=st.lists(reading, min_size=1, max_size=60))
# an excursion that goes on across a phase change (the trace reads each phase's readings as chunks of
# their own) and ends inside the next phase; one that spans a whole phase; one that turns to the other
# side of the band right after the change
@example(lim=BAND, plan=[(50.0, "good", "stay"), (75.0, "good", "phase"), (85.0, "good", "stay"),
                         (50.0, "good", "stay"), (75.0, "good", "stay")])
@example(lim=BAND, plan=[(75.0, "good", "phase"), (75.0, "good", "phase"), (85.0, "good", "stay"),
                         (25.0, "good", "stay"), (50.0, "good", "stay")])
@example(lim=BAND, plan=[(75.0, "good", "phase"), (25.0, "good", "stay"), (10.0, "good", "stay"),
                         (50.0, "good", "stay")])
def test_excursions_and_counts_are_those_of_every_reading_judged_in_turn(
        lim: dict[str, float | None], plan: list[tuple[float, str, str]]) -> None:
    gw = Gateway()
    gw.apply_config(T0, config_data([{"name": TAG, "category": "process", "eng_unit": "degC",
                                      "limits": [{"phases": [], "products": [], **lim}]}]))
    gw.start_batch("B-1", T0 + SEC)
    phases = iter(["mix", "heat", "cool", "hold"] * 20)
    gw.set_phase(next(phases), T0 + 2 * SEC)
    readings: list[tuple[int, float | None, bool, str]] = []
    for i, (value, quality, then) in enumerate(plan):
        ts = T0 + (3 + i) * SEC
        v = None if quality == "null" else value
        q = Quality.BAD if quality == "bad" else Quality.UNCERTAIN if quality == "uncertain" else Quality.GOOD
        gw.reading(TAG, v, ts, q)
        assert gw.phase is not None
        readings.append((ts, v, q is Quality.BAD, gw.phase))
        if then == "seal":
            gw.seal()
        elif then == "phase":
            gw.set_phase(next(phases), ts + 1)
    gw.end_batch(T0 + (4 + len(plan)) * SEC)
    gw.seal()
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'store.sqlite'}")
        try:
            create_schema(engine)
            ingestor = Ingestor(engine)
            ingestor.enroll(GATEWAY, SITE, gw.public_pem)
            for sealed in gw.sealed:
                assert ingestor.handle(sealed.wire, SITE, GATEWAY).status == "stored"
            report = trace_batch(engine, "B-1")
        finally:
            engine.dispose()
    assert report.integrity.verdict == "verified"
    got = {p.phase: (p.n_outside, p.n_outside_hh_ll, [(e.level, e.start_us, e.end_us, e.peak, e.n_readings,
                                                         e.returned) for e in p.excursions])
           for p in report.parameters if p.tag == TAG}
    assert got == expected(readings, lim)
