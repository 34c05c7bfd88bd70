"""Detection: load Sigma rules, compile them to Python, match events (pure; no Kafka, no DuckDB).

ruleset = load_rules(["rules/"])            # pipeline "ecs" by default
for rule in ruleset.match(event):           # event: nested ECS dict
    alert = detection_alert(rule, evidence)
"""

from typing import TYPE_CHECKING

from zonewatch.lazy import lazy_exports

if TYPE_CHECKING:
    from correlator.detection.alerts import (
        EventTimeError,
        alert_json,
        detection_alert,
        event_time,
    )
    from correlator.detection.evtx import flatten_evtx
    from correlator.detection.loader import load_rules, rules_from_yaml
    from correlator.detection.offline import read_ndjson, run_offline
    from correlator.detection.pipelines import build_pipeline, load_placeholders
    from correlator.detection.ruleset import DetectionRule, RuleSet
    from zonewatch.sources import SOURCES

# name -> module, imported on first use (zonewatch/lazy.py)
_EXPORTS = {
    "EventTimeError": "correlator.detection.alerts",
    "alert_json": "correlator.detection.alerts",
    "detection_alert": "correlator.detection.alerts",
    "event_time": "correlator.detection.alerts",
    "flatten_evtx": "correlator.detection.evtx",
    "load_rules": "correlator.detection.loader",
    "rules_from_yaml": "correlator.detection.loader",
    "read_ndjson": "correlator.detection.offline",
    "run_offline": "correlator.detection.offline",
    "SOURCES": "zonewatch.sources",
    "build_pipeline": "correlator.detection.pipelines",
    "load_placeholders": "correlator.detection.pipelines",
    "DetectionRule": "correlator.detection.ruleset",
    "RuleSet": "correlator.detection.ruleset",
}

__getattr__ = lazy_exports(__name__, _EXPORTS)


__all__ = [
    "SOURCES",
    "DetectionRule",
    "EventTimeError",
    "RuleSet",
    "alert_json",
    "build_pipeline",
    "detection_alert",
    "event_time",
    "flatten_evtx",
    "load_placeholders",
    "load_rules",
    "read_ndjson",
    "rules_from_yaml",
    "run_offline",
]
