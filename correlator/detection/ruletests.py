"""Rules carry their own test events; ``zonewatch rules test`` runs them.

Convention: a rule document may hold a ``tests`` mapping (pySigma keeps
unknown keys as custom attributes), or a file ``<rule file stem>.tests.yml``
beside the rule file may hold a mapping ``rule id or name -> tests``::

    tests:
      source: gateway          # optional: route as an event of this source
      match:                   # events (nested ECS dicts) that must fire the rule
        - {"url": {"domain": "pastebin.com"}, "user_agent": {"original": "curl/8"}}
      nomatch:                 # events that must not fire it
        - {"url": {"domain": "example.org"}}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from correlator.detection.ruleset import DetectionRule, RuleSet
from zonewatch import bounded_yaml


@dataclass
class RuleTestReport:
    passed: int = 0
    untested: int = 0
    failures: list[str] = field(default_factory=list)


def rule_tests(rule: DetectionRule) -> dict[str, Any] | None:
    data = bounded_yaml.safe_load(rule.text) if rule.text else None
    tests = data.get("tests") if isinstance(data, dict) else None
    if isinstance(tests, dict):
        return tests
    if rule.path:
        sidecar = Path(rule.path).with_name(Path(rule.path).stem + ".tests.yml")
        if sidecar.is_file():
            mapping = bounded_yaml.safe_load(bounded_yaml.read_text(sidecar)) or {}
            for key in (rule.id, rule.name):
                if key and isinstance(mapping.get(key), dict):
                    return mapping[key]
    return None


def run_rule_tests(ruleset: RuleSet) -> RuleTestReport:
    report = RuleTestReport()
    for rule in ruleset.detections:
        tests = rule_tests(rule)
        if not tests:
            report.untested += 1
            continue
        source = tests.get("source")
        for expect, key in ((True, "match"), (False, "nomatch")):
            for n, event in enumerate(tests.get(key) or [], 1):
                if not isinstance(event, dict):
                    report.failures.append(
                        f"{rule.path}: {rule.title}: {key} #{n} is not a mapping"
                    )
                    continue
                fired = any(hit is rule for hit in ruleset.match(event, source))
                if fired == expect:
                    report.passed += 1
                else:
                    verb = "did not fire" if expect else "fired"
                    report.failures.append(
                        f"{rule.path}:{rule.line}: {rule.title} ({rule.id}): "
                        f"{key} event #{n} {verb}"
                    )
    return report
