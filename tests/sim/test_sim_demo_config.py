"""config/demo.yaml: valid, reads every tag where the simulator serves it, quiet on a normal batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from blackbox.config import TagConfig, parse_config
from blackbox.model import Quality
from blackbox.sim import Simulator
from blackbox.sim.process import Snapshot
from blackbox.sim.recipe import PRODUCT
from blackbox.sim.tags import NAMESPACE_URI, TAG_INDEX, TAGS
from drivers import registry

DEMO = Path(__file__).resolve().parents[2] / "config" / "demo.yaml"


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    data = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def tags(raw: dict[str, Any]) -> dict[str, TagConfig]:
    """Every tag, validated by its driver's own source model."""
    out: dict[str, TagConfig] = {}
    for source in raw["sources"]:
        model = registry.config_model(source["protocol"]).model_validate(source)
        for tag in model.tags:
            assert tag.name not in out
            out[tag.name] = tag
    return out


def test_demo_yaml_is_a_valid_configuration() -> None:
    config = parse_config(DEMO.read_text(encoding="utf-8"), str(DEMO))  # raises ConfigError listing every issue
    assert config.gateway.id == "gw-cream-01"
    assert {s.protocol for s in config.sources} == {"opcua", "modbus"}
    assert len(config.tag_index()) == len(TAGS)


def test_demo_sources_point_at_the_simulator_defaults(raw: dict[str, Any]) -> None:
    sources = {s["protocol"]: s for s in raw["sources"]}
    assert sources["opcua"]["endpoint"] == "opc.tcp://127.0.0.1:4840"
    assert sources["opcua"]["namespace_uri"] == NAMESPACE_URI
    modbus = sources["modbus"]
    assert (modbus["host"], modbus["port"], modbus["unit_id"]) == ("127.0.0.1", 5020, 1)
    assert all(s["poll_interval"] == 0.1 for s in raw["sources"])
    assert raw["site"]["licence"] and raw["gateway"]["id"] == "gw-cream-01"


def test_demo_reads_every_simulated_tag_where_it_is_served(tags: dict[str, TagConfig]) -> None:
    assert set(tags) == set(TAG_INDEX)
    for name, tag in tags.items():
        sim = TAG_INDEX[name]
        assert (tag.address, tag.type, tag.category, tag.unit, tag.eng_unit) == (
            sim.address, sim.type, sim.category, sim.unit, sim.eng_unit), name
        assert getattr(tag, "length", None) == sim.length, name
        assert getattr(tag, "order", "ABCD") == "ABCD", name


def test_context_and_rules_name_configured_tags(raw: dict[str, Any], tags: dict[str, TagConfig]) -> None:
    ctx = raw["context"]
    named = [ctx[k] for k in ("batch_tag", "product_tag", "recipe_tag", "recipe_version_tag", "phase_tag")]
    for trigger in ctx["materials"]:
        named += list(trigger.values())
    for trigger in ctx["qc"]:
        named += [trigger["trigger"], trigger["sample"], *trigger["tests"].values()]
    named += [rule["tag"] for rule in raw["rules"]]
    assert set(named) <= set(tags)
    assert all(tags[rule["tag"]].limits for rule in raw["rules"])
    assert ctx["materials"][0]["trigger"] == "WS-01.weigh_count" and ctx["qc"][0]["trigger"] == "QC-01.sample_id"


def violations(snaps: list[Snapshot], tags: dict[str, TagConfig]) -> dict[str, int]:
    """How many snapshots put each tag outside the limits in force for the phase."""
    found: dict[str, int] = {}
    for s in snaps:
        phase = s.text("EM-01.phase")
        for name, tag in tags.items():
            limits = tag.limits_for(phase, PRODUCT)
            if limits is None:
                continue
            value = s.num(name)
            low = max((v for v in (limits.ll, limits.l) if v is not None), default=None)
            high = min((v for v in (limits.h, limits.hh) if v is not None), default=None)
            if (low is not None and value < low) or (high is not None and value > high):
                found[name] = found.get(name, 0) + 1
    return found


def test_a_normal_batch_stays_within_the_demo_limits(default_batch: list[Snapshot],
                                                     tags: dict[str, TagConfig]) -> None:
    found = violations(default_batch, tags)
    fill_steps = sum(1 for s in default_batch if s["EM-01.phase"] == "fill")
    # single jars below 50 g happen (sigma 0.3 g around 51 g); nothing else may leave its limits
    assert found.pop("FL-01.fill_weight", 0) <= 0.002 * fill_steps
    assert found == {}


def test_the_demo_limits_the_parameters_the_reference_line_names(tags: dict[str, TagConfig]) -> None:
    limited = {n for n, t in tags.items() if t.limits}
    assert limited >= {"EM-01.temperature", "EM-01.vacuum", "EM-01.homogenizer_speed", "QC-01.ph", "QC-01.viscosity",
                       "FL-01.fill_weight", "PW-01.conductivity", "CR-01.differential_pressure"}
    assert len(TAGS) == len(tags)


async def test_the_drivers_read_the_simulator_with_the_demo_configuration() -> None:
    """The demo's sources, pointed at a simulator on free ports, read every tag as served."""
    config = parse_config(DEMO.read_text(encoding="utf-8"), str(DEMO))
    async with Simulator(seed=4, speed=0, opcua_port=0, modbus_port=0) as sim:
        sim.model.advance(3100)  # water_heat: weighing records, strings and counters are set
        await sim.advance(0)
        for source in config.sources:
            moved = source.model_copy(update={"endpoint": sim.opcua_endpoint} if source.protocol == "opcua"
                                      else {"port": sim.modbus_port})
            driver = registry.create(moved)
            await driver.connect()
            try:
                samples = await driver.read()
            finally:
                await driver.close()
            assert len(samples) == len(source.tags)
            for sample in samples:
                expected = sim.snapshot[sample.tag]
                assert sample.quality == Quality.GOOD, sample
                if isinstance(expected, float):
                    assert sample.value == pytest.approx(expected, rel=1e-6, abs=1e-6), sample.tag
                else:
                    assert sample.value == expected, sample.tag
