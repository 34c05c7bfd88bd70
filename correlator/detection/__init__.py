"""Detection: load Sigma rules, compile them to Python, match events (pure; no Kafka, no DuckDB).

ruleset = load_rules(["rules/"])            # pipeline "ecs" by default
for rule in ruleset.match(event):           # event: nested ECS dict
    alert = detection_alert(rule, evidence)
"""

from correlator.detection.alerts import (
    EventTimeError,
    alert_json,
    detection_alert,
    event_time,
)
from correlator.detection.evtx import flatten_evtx
from correlator.detection.loader import load_rules, rules_from_yaml
from correlator.detection.offline import read_ndjson, run_offline
from correlator.detection.pipelines import SOURCES, build_pipeline, load_placeholders
from correlator.detection.ruleset import DetectionRule, RuleSet

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
