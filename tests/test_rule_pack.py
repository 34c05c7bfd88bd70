"""The cross-zone rule pack (rules/): the issue's twelve scenarios, their metadata,
and their timelines through the detection and correlation engines.

Detection rules carry their own must-match / must-not-match events
(``zonewatch rules test``). Correlations carry timelines in the sidecar
``<rule file>.tests.yml`` under the correlation's name::

    zw_some_correlation:
      timelines:
        - name: what happens
          expect: fire          # or quiet
          events: [ ...nested ECS events with @timestamp and event.dataset... ]

Each timeline runs alone through ``run_offline`` with the correlation hooks,
over the whole pack (so chains and filters behave as in production), by the
same code as ``zonewatch rules test`` (``correlator/detection/ruletests.py``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from conftest import ROOT

from correlator.detection import RuleSet, load_rules
from correlator.detection.ruletests import Timeline, run_timeline, sidecar_timelines
from zonewatch.app.cli import cli

RULES = ROOT / "rules"

# Issue 7's scenarios (1-12) and issue 14's (13-16) -> the rules that implement them.
SCENARIOS: dict[int, list[str]] = {
    1: [
        "zw_policy_core_to_lgwan",
        "zw_policy_core_to_mynumber",
        "zw_policy_internet_to_lgwan",
        "zw_policy_internet_to_mynumber",
    ],
    2: ["zw_policy_vdi_to_mynumber", "zw_policy_lgwan_to_mynumber", "zw_policy_core_to_mynumber"],
    3: ["zw_untrusted_device_restricted_session"],
    4: ["zw_noncompliant_session_stays_connected"],
    5: ["zw_download_reaches_lgwan_unsanitized"],
    6: ["zw_same_user_two_zones"],
    7: ["zw_repeated_denied_crossings", "zw_port_scan_across_zones", "zw_host_scan_across_zones"],
    8: ["zw_denies_then_allow"],
    9: ["zw_web_bypassing_gateway"],
    10: ["zw_vdi_failures_then_success"],
    11: ["zw_upload_after_mynumber_session"],
    12: ["zw_fw_change_then_violation", "zw_intune_change_then_untrusted_session"],
    # issue 14: who and which device
    13: ["zw_untrusted_signin_then_restricted_session"],
    14: ["zw_internet_signin_during_restricted_session"],
    15: ["zw_impossible_travel"],
    16: ["zw_m365_mass_download_personal_device", "zw_m365_external_share_personal_device"],
}

_JAPANESE = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def pack() -> RuleSet:
    ruleset = load_rules([RULES])
    assert ruleset.errors == [], ruleset.errors
    return ruleset


def _by_name(pack: RuleSet) -> dict[str, Any]:
    """name -> (kind, parsed YAML document) for every rule of the pack."""
    out: dict[str, Any] = {}
    for rule in pack.detections:
        out[rule.name or rule.id] = ("detection", yaml.safe_load(rule.text))
    for corr in pack.correlations:
        doc = _document_of(corr)
        out[corr.name or str(corr.id)] = ("correlation", doc)
    return out


def _document_of(corr: Any) -> dict[str, Any]:
    path = Path(str(corr.source.path))
    for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
        if doc and str(doc.get("id")) == str(corr.id):
            return doc
    raise AssertionError(f"{path}: correlation {corr.id} not found again")


def test_every_scenario_has_alerting_rules_with_complete_metadata(pack: RuleSet) -> None:
    rules = _by_name(pack)
    for scenario, names in SCENARIOS.items():
        for name in names:
            assert name in rules, f"scenario {scenario}: rule {name} is missing"
            _, doc = rules[name]
            where = f"scenario {scenario} ({name})"
            assert doc.get("level") in ("low", "medium", "high", "critical"), where
            assert doc.get("falsepositives"), where
            assert any(str(t).startswith("attack.t") for t in doc.get("tags", [])), where
            description = doc.get("description", "")
            assert _JAPANESE.search(description), f"{where}: no Japanese description"
            assert re.search(r"[A-Za-z]{4,} [a-z]{3,} [a-z]{3,}", description), where


def test_the_pack_passes_its_own_rule_tests_and_checks_clean() -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["rules", "test", str(RULES)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    passed, failed, untested = map(int, re.findall(r"\d+", result.stdout.splitlines()[-1])[:3])
    assert failed == 0 and untested == 0 and passed >= 100, result.stdout
    result = runner.invoke(cli, ["rules", "check", str(RULES)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "; 0 error(s)" in result.stdout
    warnings = [
        line
        for line in result.stderr.splitlines()
        if "rule warning" in line and "skipped" not in line  # offline: no MITRE download
    ]
    assert warnings == []


# The runner `zonewatch rules test` uses (correlator/detection/ruletests.py).
TIMELINES, TIMELINE_PROBLEMS = sidecar_timelines(sorted(RULES.rglob("*.tests.yml")))


def test_every_timeline_is_well_formed() -> None:
    assert TIMELINE_PROBLEMS == []


@pytest.mark.parametrize("timeline", TIMELINES, ids=[f"{t.rule}: {t.name}" for t in TIMELINES])
def test_correlation_timelines(pack: RuleSet, timeline: Timeline) -> None:
    assert run_timeline(pack, timeline) is None


def test_every_correlation_has_firing_and_quiet_timelines(pack: RuleSet) -> None:
    kinds: dict[str, set[str]] = {}
    for timeline in TIMELINES:
        kinds.setdefault(timeline.rule, set()).add(timeline.spec["expect"])
    referenced = {str(ref.reference) for c in pack.correlations for ref in c.rules}
    # Correlations that others build on raise no alert of their own; the
    # timelines of the rules that use them cover them.
    alerting = {
        c.name
        for c in pack.correlations
        if c.name not in referenced and str(c.id) not in referenced
    }
    assert all(alerting), "every alerting correlation needs a name for its timelines"
    missing = {n for n in alerting if kinds.get(n) != {"fire", "quiet"}}
    assert missing == set()
