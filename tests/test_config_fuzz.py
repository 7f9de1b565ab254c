"""Fuzzing the configuration loader: 2,000+ invalid configurations, each a clear error, never a
traceback.

A valid configuration touching every section is mutated — a field deleted, renamed or replaced by
a value of another type or range (NUL, huge numbers, NaN, deep or recursive YAML), an unknown field
added — or its text edited (YAML syntax, tabs, aliases, tags, truncation). Every result must be a
:class:`~blackbox.config.Config` or a :class:`~blackbox.config.ConfigError` whose every issue has a
message; then a sample goes through ``blackbox config check`` itself. Derandomized.
"""

from __future__ import annotations

import copy
import math
import os
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from blackbox.cli.main import app
from blackbox.config import Config, ConfigError, parse_config

EXAMPLES = int(os.environ.get("BLACKBOX_FUZZ_CONFIG_EXAMPLES", "2400"))
CLI_EXAMPLES = 50

BASE = """\
site: {id: S1, name: Site, licence: L-1}
gateway: {id: gw-1}
sources:
  - name: em
    protocol: opcua
    endpoint: opc.tcp://127.0.0.1:4840
    namespace_uri: urn:blackbox:sim:cream-line
    poll_interval: 0.1
    tags:
      - {name: EM-01.temperature, address: s=EM-01.temperature, type: Double, category: process, unit: EM-01,
         eng_unit: degC, limits: [{phases: [emulsify], l: 70, h: 80, hh: 85}]}
      - {name: EM-01.batch_id, address: s=EM-01.batch_id, type: String, category: context, unit: EM-01}
      - {name: EM-01.phase, address: s=EM-01.phase, type: String, category: context, unit: EM-01}
  - name: ws
    protocol: modbus
    host: 127.0.0.1
    port: 5020
    tags:
      - {name: WS-01.actual, address: "hr:100", type: float32, category: material, unit: WS-01}
      - {name: WS-01.count, address: "hr:102", type: uint16, category: material, unit: WS-01}
context:
  batch_tag: EM-01.batch_id
  phase_tag: EM-01.phase
rules:
  - {type: threshold, tag: EM-01.temperature, deadband: 0.5, priority: high}
  - {type: trend, tag: EM-01.temperature, window: 0.5, min_samples: 4, horizon: 1.0, levels: [h, hh]}
  - {type: bad_quality, tag: WS-01.actual, samples: 2}
buffer: {path: var/buffer.sqlite}
seal: {max_age: 1.0}
"""

BASE_DOC = yaml.safe_load(BASE)
DUMPER: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

JUNK: list[Any] = [None, True, 0, -1, 2**64, -(10**30), 1e308, math.nan, math.inf, -0.0, "", " ", "\x00", "a\x00b",
                   "x" * 5000, "é🧴", "hr:99999999", "s=", "../../etc/passwd", "{{", [], [1, "a"], {}, {"k": None},
                   {"name": "x"}, [[[[[]]]]]]
TEXT_EDITS = ["", ":", "- ", "[", "]", "{", "\t", "  ", "&a ", "*a", "!!python/object:os.system ", "!!binary ",
              "\x00", "\ufeff", "\n---\n", "%YAML 1.1\n", "<<: *a\n", "? ", "|", ">", "'", '"', "#", "~", "0x1F"]


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(node, dict):
        for k, v in node.items():
            out.extend(_paths(v, (*path, k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.extend(_paths(v, (*path, i)))
    return out


def _parent(doc: Any, path: tuple[Any, ...]) -> Any:
    for step in path[:-1]:
        doc = doc[step]
    return doc


def mutate(rng: random.Random) -> str:
    """A configuration text, broken in one to three places (rarely, by chance, still valid)."""
    doc = copy.deepcopy(BASE_DOC)
    for _ in range(rng.randrange(1, 4)):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = rng.choice(paths)
        parent, key = _parent(doc, path), path[-1]
        how = rng.randrange(5)
        if how == 0:
            del parent[key]
        elif how == 1:
            parent[key] = rng.choice(JUNK)
        elif how == 2 and isinstance(parent, dict):
            parent[rng.choice(["extra", f"{key}x", "Name", "type"])] = parent.pop(key)
        elif how == 3 and isinstance(parent, list):
            parent.append(parent[key])  # a duplicate: names must be unique
        else:
            parent[key] = rng.choice(JUNK)
    try:
        text = yaml.dump(doc, Dumper=DUMPER, allow_unicode=True, sort_keys=False)
    except yaml.YAMLError:
        text = BASE
    if rng.random() < 0.35:
        for _ in range(rng.randrange(1, 4)):
            at = rng.randrange(len(text) + 1)
            text = text[:at] + rng.choice(TEXT_EDITS) + text[at + rng.randrange(3):]
    if rng.random() < 0.05:
        text = text[: rng.randrange(len(text) + 1)]
    if rng.random() < 0.03:
        text = rng.choice(["a: &x [*x]\n", "[" * 3000 + "]" * 3000, "a: &a [1,1,1,1,1,1,1,1,1,1]\n" + "".join(
            f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True))])
    return text


def outcome(text: str) -> str:
    """``valid`` or ``invalid``; anything else (an exception that is not a ConfigError) fails the test."""
    try:
        parse_config(text, "fuzz.yaml")
    except ConfigError as exc:
        assert exc.issues, "a ConfigError without issues"
        for issue in exc.issues:
            assert issue.message.strip() and issue.file == "fuzz.yaml", issue
        return "invalid"
    return "valid"


def test_the_base_configuration_is_valid() -> None:
    assert isinstance(parse_config(BASE), Config)


def test_thousands_of_invalid_configurations_each_get_a_clear_error() -> None:
    outcomes: Counter[str] = Counter()

    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(st.integers(0, 2**63))
    def check(seed: int) -> None:
        outcomes[outcome(mutate(random.Random(seed)))] += 1

    check()
    print(f"config fuzz: {dict(outcomes)}")
    assert outcomes["invalid"] >= 2000, outcomes


def test_config_check_reports_invalid_files_without_a_traceback(tmp_path: Path) -> None:
    rng = random.Random(20261204)
    runner = CliRunner()
    checked = 0
    while checked < CLI_EXAMPLES:
        text = mutate(rng)
        if outcome(text) == "valid":
            continue
        path = tmp_path / "fuzz.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogateescape")
        result = runner.invoke(app, ["config", "check", str(path)])
        assert result.exit_code == 2, (text, result.output, result.exception)
        assert "Traceback" not in result.output and "fuzz.yaml" in result.output, result.output
        checked += 1


LAUGHS = "a: &a [1,1,1,1,1,1,1,1,1,1]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True))


@pytest.mark.parametrize(("text", "message"), [
    ("a: &x [*x]\n", "contains itself (a recursive alias)"),  # was a RecursionError traceback
    ("a: &x {b: *x}\n", "contains itself (a recursive alias)"),
    ("[" * 3000 + "]" * 3000, "nest"),  # was a RecursionError traceback (LibYAML: "exceeded maximum nesting depth")
    (LAUGHS, "expands to more than 1,000,000 nodes"),  # 10**9 nodes: was minutes of CPU
    (BASE.replace("name: Site", 'name: "Site\\0"'), "site.name: text holds a NUL character"),
])
def test_yaml_that_broke_the_loader_gets_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(text)
    path = tmp_path / "c.yaml"
    path.write_text(text)
    result = CliRunner().invoke(app, ["config", "check", str(path)])
    assert result.exit_code == 2 and message in result.output, result.output
