"""Rule configuration mistakes are reported with their path, line and what is wrong."""

from __future__ import annotations

import pytest

from blackbox.config import ConfigError, parse_config

HEAD = """\
site: {id: S1, name: Site, licence: L-1}
gateway: {id: gw-1}
sources:
  - name: em
    protocol: opcua
    endpoint: opc.tcp://127.0.0.1:4840
    tags:
      - {name: T, address: s=T, type: Double, category: process, unit: EM-01, limits: [{h: 80}]}
      - {name: NOLIMITS, address: s=N, type: Double, category: process, unit: EM-01}
rules:
"""


def issues(rules: str) -> list[tuple[str, int | None, str]]:
    with pytest.raises(ConfigError) as err:
        parse_config(HEAD + rules)
    return [(i.path, i.line, i.message) for i in err.value.issues]


def test_every_rule_mistake_is_reported_at_once() -> None:
    found = issues("""\
  - {type: disconnected, source: plc-9}
  - {type: threshold, tag: T}
  - {type: threshold, tag: T}
  - {type: trend, tag: NOLIMITS}
  - {type: ewma, tag: T, when: {tag: NOPE, equals: true}, centre: 1, sigma: 1}
  - {type: cusum, tag: T, sample_on: GONE, centre: 1, sigma: 1}
""")
    assert [(p, line) for p, line, _ in found] == [
        ("rules.0.source", 11), ("rules.2", 13), ("rules.3.tag", 14), ("rules.4.when.tag", 15),
        ("rules.5.sample_on", 16)]
    messages = [m for _, _, m in found]
    assert "no source named 'plc-9'" in messages[0]
    assert "two rules raise the alarm 'threshold:T'" in messages[1]
    assert "has no limits for a trend rule" in messages[2]
    assert "no tag named 'NOPE'" in messages[3] and "no tag named 'GONE'" in messages[4]


@pytest.mark.parametrize(("rule", "message"), [
    ("{type: spc, tag: T}", "give centre and sigma, or reference_samples"),
    ("{type: spc, tag: T, centre: 1, sigma: 1, checks: [we5]}", "we1"),
    ("{type: ewma, tag: T, centre: 1, sigma: 1, lam: 1.5}", "less than or equal to 1"),
    ("{type: rate_of_change, tag: T}", "needs max_rise, max_fall or both"),
    ("{type: batch, measure: peak, phase: fill}", "measure 'peak' needs a tag"),
    ("{type: batch, measure: duration, phase: fill, phases: [fill]}", "restrict it with products"),
    ("{type: frozen, tag: T, samples: 1}", "greater than or equal to 2"),
    ("{type: threshold, tag: T, when: {tag: T}}", "needs equals, above or below"),
    ("{type: nonsense, tag: T}", "does not match any of the expected tags"),
])
def test_a_bad_rule_says_what_is_wrong(rule: str, message: str) -> None:
    (found,) = issues(f"  - {rule}\n")
    assert found[0].startswith("rules.0") and found[1] == 11
    assert message in found[2]


def test_alarm_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="flood_end cannot exceed flood_count"):
        parse_config(HEAD + "  []\nalarms: {flood_count: 4, flood_end: 5}\n")
