"""Load correlation rules and the rules they refer to from Sigma YAML text.

A minimal loader for tests, benchmarks and tools that need correlations
without the detection engine: it applies ``prepare_correlation_dict`` and
resolves references the way the engine expects (``resolve(id or name)``).
The detection engine's ``load_rules`` is the full loader.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule
from sigma.rule import SigmaRule

from correlator.correlation.compiled import prepare_correlation_dict
from zonewatch import bounded_yaml


@dataclass(frozen=True)
class RuleInfo:
    id: str
    name: str | None = None
    title: str = ""


@dataclass
class LoadedRules:
    correlations: list[SigmaCorrelationRule]
    detections: list[SigmaRule]
    by_ref: dict[str, RuleInfo] = field(default_factory=dict)

    def resolve(self, ref: str) -> RuleInfo | None:
        return self.by_ref.get(ref)


def load_rules_text(text: str) -> LoadedRules:
    docs = [prepare_correlation_dict(d) for d in bounded_yaml.safe_load_all(text) if d]
    collection = SigmaCollection.from_dicts(docs)
    collection.resolve_rule_references()
    loaded = LoadedRules([], [])
    for rule in collection.rules:
        rid = str(rule.id) if rule.id is not None else str(rule.name or rule.title)
        info = RuleInfo(rid, rule.name, rule.title)
        loaded.by_ref[rid] = info
        if rule.name:
            loaded.by_ref[str(rule.name)] = info
        if isinstance(rule, SigmaCorrelationRule):
            loaded.correlations.append(rule)
        else:
            loaded.detections.append(rule)
    return loaded
