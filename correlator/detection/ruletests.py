"""Rules carry their own tests; ``zonewatch rules test`` and the test suite
run them with the same code (:func:`run_rule_tests`).

Detection rules: a rule document may hold a ``tests`` mapping (pySigma keeps
unknown keys as custom attributes), or a file ``<rule file stem>.tests.yml``
beside the rule file may hold a mapping ``rule id or name -> tests``::

    tests:
      source: gateway          # optional: route as an event of this source
      match:                   # events (nested ECS dicts) that must fire the rule
        - {"url": {"domain": "pastebin.com"}, "user_agent": {"original": "curl/8"}}
      nomatch:                 # events that must not fire it
        - {"url": {"domain": "example.org"}}

Correlation rules: the same sidecar maps the correlation's name (or id) to
``timelines``, each run alone through the detection and correlation engines
over the whole loaded rule set (so chains and filters behave as in
production)::

    zw_some_correlation:
      timelines:
        - name: what happens
          expect: fire          # or quiet
          alerts: 1             # optional, with fire: exactly this many
          events: [ ...nested ECS events with @timestamp and event.dataset... ]
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from correlator.detection.loader import TEST_SIDECAR_SUFFIX
from correlator.detection.ruleset import DetectionRule, RuleSet
from zonewatch import bounded_yaml
from zonewatch.errors import ZonewatchError
from zonewatch.models import Alert


@dataclass
class RuleTestReport:
    passed: int = 0
    untested: int = 0
    failures: list[str] = field(default_factory=list)
    timelines: int = 0  # correlation timelines run (passed or failed)


@dataclass(frozen=True)
class Timeline:
    """One correlation timeline of a sidecar file."""

    sidecar: str
    rule: str  # the correlation's name or id, as the sidecar names it
    number: int  # 1-based, within the rule's timelines
    spec: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.spec.get("name") or f"timeline #{self.number}")

    def __str__(self) -> str:
        return f"{self.sidecar}: {self.rule}: '{self.name}'"


def sidecar_of(rule_path: str | Path) -> Path:
    path = Path(rule_path)
    return path.with_name(path.stem + TEST_SIDECAR_SUFFIX)


def _read_sidecar(path: Path) -> dict[Any, Any]:
    data = bounded_yaml.safe_load(bounded_yaml.read_text(path)) or {}
    return data if isinstance(data, dict) else {}


def rule_tests(rule: DetectionRule) -> dict[str, Any] | None:
    data = bounded_yaml.safe_load(rule.text) if rule.text else None
    tests = data.get("tests") if isinstance(data, dict) else None
    if isinstance(tests, dict):
        return tests
    if rule.path:
        sidecar = sidecar_of(rule.path)
        if sidecar.is_file():
            mapping = _read_sidecar(sidecar)
            for key in (rule.id, rule.name):
                if key and isinstance(mapping.get(key), dict):
                    return mapping[key]
    return None


def _rule_paths(ruleset: RuleSet) -> list[str]:
    paths = {str(r.path) for r in ruleset.detections if r.path}
    for corr in ruleset.correlations:
        source = getattr(corr, "source", None)
        if source is not None and getattr(source, "path", None):
            paths.add(str(source.path))
    return sorted(paths)


def sidecar_timelines(sidecars: Iterable[str | Path]) -> tuple[list[Timeline], list[str]]:
    """The correlation timelines the sidecar files hold, and what is wrong
    with the ones that cannot run (not a list, no events, unknown expect)."""
    found: list[Timeline] = []
    problems: list[str] = []
    for raw in sidecars:
        path = Path(raw)
        try:
            mapping = _read_sidecar(path)
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            problems.append(f"{path}: cannot read the test file: {exc}")
            continue
        for rule, spec in mapping.items():
            if not isinstance(spec, dict) or "timelines" not in spec:
                continue
            timelines = spec["timelines"]
            if not isinstance(timelines, list):
                problems.append(f"{path}: {rule}: 'timelines' must be a list")
                continue
            for number, timeline in enumerate(timelines, 1):
                where = f"{path}: {rule}: timeline #{number}"
                if not isinstance(timeline, dict):
                    problems.append(f"{where} is not a mapping")
                elif timeline.get("expect") not in ("fire", "quiet"):
                    problems.append(f"{where}: 'expect' must be fire or quiet")
                elif not isinstance(timeline.get("events"), list) or not all(
                    isinstance(e, dict) for e in timeline["events"]
                ):
                    problems.append(f"{where}: 'events' must be a list of mappings")
                else:
                    found.append(Timeline(str(path), str(rule), number, timeline))
    return found, problems


def replay(ruleset: RuleSet, events: list[dict[str, Any]]) -> list[Alert]:
    """Events (nested ECS, any order) through detection and correlation, as
    ``zonewatch match`` runs them; every alert raised, by any rule."""
    from correlator.correlation.offline import offline_hooks
    from correlator.detection.offline import evidence_time, run_offline

    hooks = offline_hooks(ruleset, evidence_time)
    on_hit, on_end = (hooks[0], hooks[1]) if hooks else (None, None)
    return list(run_offline(list(enumerate(events, 1)), ruleset, on_hit=on_hit, on_end=on_end))


def _correlation_id(ruleset: RuleSet, ref: str) -> str | None:
    for corr in ruleset.correlations:
        if ref in (corr.name, str(corr.id)):
            return str(corr.id)
    return None


def run_timeline(ruleset: RuleSet, timeline: Timeline) -> str | None:
    """None when the timeline behaves as it says; else what went wrong."""
    rule_id = _correlation_id(ruleset, timeline.rule)
    if rule_id is None:
        return f"{timeline}: no loaded correlation is named {timeline.rule}"
    try:
        alerts = [a for a in replay(ruleset, timeline.spec["events"]) if a.rule_id == rule_id]
    except ZonewatchError as exc:
        return f"{timeline}: events could not be replayed: {exc}"
    expect = timeline.spec["expect"]
    wanted = timeline.spec.get("alerts")
    if expect == "fire" and not alerts:
        return f"{timeline}: expected to fire, raised no alert"
    if expect == "fire" and wanted is not None and len(alerts) != wanted:
        return f"{timeline}: expected {wanted} alert(s), raised {len(alerts)}"
    if expect == "quiet" and alerts:
        first = alerts[0].first_seen.isoformat()
        return (
            f"{timeline}: expected to stay quiet, raised {len(alerts)} alert(s), "
            f"the first for events from {first}"
        )
    return None


def _alerting_correlations(ruleset: RuleSet) -> list[Any]:
    """Correlations that raise alerts of their own: those no other correlation
    builds on (their timelines cover the ones they use)."""
    referenced = {str(ref.reference) for c in ruleset.correlations for ref in c.rules or ()}
    return [
        c for c in ruleset.correlations if c.name not in referenced and str(c.id) not in referenced
    ]


def run_rule_tests(ruleset: RuleSet) -> RuleTestReport:
    """Every detection rule's events and every correlation timeline found in
    the sidecars of the loaded rule files."""
    report = RuleTestReport()
    for rule in ruleset.detections:
        tests = rule_tests(rule)
        if not tests:
            report.untested += 1
            continue
        _run_detection_tests(ruleset, rule, tests, report)

    sidecars = [p for p in map(sidecar_of, _rule_paths(ruleset)) if p.is_file()]
    timelines, problems = sidecar_timelines(sidecars)
    report.failures.extend(problems)
    for timeline in timelines:
        report.timelines += 1
        failure = run_timeline(ruleset, timeline)
        if failure is None:
            report.passed += 1
        else:
            report.failures.append(failure)
    tested = {t.rule for t in timelines}
    for corr in _alerting_correlations(ruleset):
        if corr.name not in tested and str(corr.id) not in tested:
            report.untested += 1
    return report


def _run_detection_tests(
    ruleset: RuleSet, rule: DetectionRule, tests: dict[str, Any], report: RuleTestReport
) -> None:
    source = tests.get("source")
    for expect, key in ((True, "match"), (False, "nomatch")):
        for n, event in enumerate(tests.get(key) or [], 1):
            if not isinstance(event, dict):
                report.failures.append(f"{rule.path}: {rule.title}: {key} #{n} is not a mapping")
                continue
            fired = any(hit is rule for hit in ruleset.match(event, source))
            if fired == expect:
                report.passed += 1
            else:
                verb = "did not fire" if expect else "fired"
                report.failures.append(
                    f"{rule.path}:{rule.line}: {rule.title} ({rule.id}): {key} event #{n} {verb}"
                )
