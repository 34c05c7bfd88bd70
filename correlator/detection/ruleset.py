"""Compiled detection rules and the rule set that matches events against them."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from correlator.detection import codegen, compiler
from zonewatch.errors import RuleError
from zonewatch.logs import get_logger
from zonewatch.sources import SOURCES

if TYPE_CHECKING:
    from sigma.correlations import SigmaCorrelationRule
    from sigma.rule import SigmaRule

    from correlator.detection.throttle import Suppression

log = get_logger(__name__)

MatchFn = Callable[[dict[str, Any], list["DetectionRule"]], list["DetectionRule"]]


@dataclass(frozen=True, eq=False)
class DetectionRule:
    """One compiled Sigma detection rule (identity equality: one object per loaded rule)."""

    id: str
    name: str | None
    title: str
    level: str
    tags: list[str]
    description: str
    path: str | None
    sha256: str
    text: str
    logsource: tuple[str | None, str | None, str | None]  # product, category, service
    sigma: SigmaRule
    line: int | None = None
    # Sources whose events this rule sees: None = all, empty = only events of unknown source.
    sources: frozenset[str] | None = None
    # False when the rule only feeds correlations (Sigma ``generate: false``, the default).
    generate: bool = True
    correlated_by: tuple[str, ...] = ()
    # ``suppress:`` (correlator/detection/throttle.py); None: every match alerts.
    suppress: Suppression | None = None
    # Generated from zones.yaml: takes ``correlator.zone_policy_suppress`` by default.
    zone_policy: bool = False

    @property
    def correlation_only(self) -> bool:
        return not self.generate


@dataclass
class RuleSet:
    """Loaded rules: compiled detections, correlations for the correlation engine, errors."""

    detections: list[DetectionRule] = field(default_factory=list)
    correlations: list[SigmaCorrelationRule] = field(default_factory=list)
    errors: list[RuleError] = field(default_factory=list)
    # Functions per known source, and for events of unknown source (key None).
    _routes: dict[str | None, tuple[MatchFn, ...]] = field(default_factory=dict, repr=False)
    _by_ref: dict[str, DetectionRule] = field(default_factory=dict, repr=False)
    # The generated code of each routing group (``source_code``).
    _sources: list[tuple[str, codegen.GroupSource]] = field(default_factory=list, repr=False)

    def match(self, event: dict[str, Any], source: str | None = None) -> list[DetectionRule]:
        """Rules whose detection (after Sigma filters) matches ``event``.

        ``source`` restricts rules by logsource; when None, ``event.dataset``
        decides if it names one of our sources, otherwise every rule applies.
        """
        if source is None:
            source = _dataset(event)
        functions = self._routes.get(source)
        if functions is None:
            functions = self._routes.get(None, ())
        if len(functions) == 1:
            return functions[0](event, [])
        hits: list[DetectionRule] = []
        for fn in functions:
            fn(event, hits)
        return hits

    def matcher(self, source: str | None) -> Callable[[dict[str, Any]], list[DetectionRule]]:
        """``match`` with ``source`` fixed: resolve the route once per batch of one
        topic instead of once per event. ``source`` None: ``match``'s own rule
        (``event.dataset`` decides per event)."""
        if source is None:
            return self.match
        functions = self._routes.get(source)
        if functions is None:
            functions = self._routes.get(None, ())
        if not functions:
            return _no_rules
        if len(functions) == 1:
            fn = functions[0]
            return lambda event: fn(event, [])

        def match_all(event: dict[str, Any]) -> list[DetectionRule]:
            hits: list[DetectionRule] = []
            for fn in functions:
                fn(event, hits)
            return hits

        return match_all

    def source_code(self, rule_id: str | None = None) -> str:
        """The Python generated for the rules (``zonewatch rules check --show-code``),
        as it is compiled: every routing group, or the functions testing ``rule_id``."""
        parts = []
        for sources, group in self._sources:
            text = group.readable(rule_id)
            if text:
                parts.append(f"# {group.name}: rules for events of {sources}\n\n{text}")
        return "\n\n".join(parts)

    def rule(self, ref: str) -> DetectionRule | None:
        """A detection rule by id or name."""
        return self._by_ref.get(ref)

    def __len__(self) -> int:
        return len(self.detections)


def _dataset(event: dict[str, Any]) -> str | None:
    # get_field(event, "event.dataset") (zonewatch.fieldpath), inlined: per event.
    ev = event.get("event")
    dataset = ev.get("dataset") if ev.__class__ is dict else event.get("event.dataset")
    return dataset if dataset in SOURCES else None


def build_routes(
    compiled: list[tuple[DetectionRule, compiler.CompiledRule]],
    errors: list[RuleError],
    index: bool = True,
    eager: bool = False,
    sources: list[tuple[str, codegen.GroupSource]] | None = None,
) -> dict[str | None, tuple[MatchFn, ...]]:
    """One generated function per distinct routing key; each source gets the functions
    of the keys that include it, unknown-source events get them all.

    ``index=False`` evaluates every rule of a group on every event (no literal
    prefilter): the straightforward matcher the tests compare against.
    ``eager`` compiles every rule now (``zonewatch rules check``) instead of
    the rules of a cluster when an event first needs them. ``sources``
    collects (what events a group sees, its generated code).
    """
    groups: dict[frozenset[str] | None, list[tuple[DetectionRule, compiler.CompiledRule]]] = {}
    for rule, code in compiled:
        groups.setdefault(rule.sources, []).append((rule, code))
    functions: dict[frozenset[str] | None, MatchFn] = {}
    for n, (key, members) in enumerate(
        sorted(groups.items(), key=lambda kv: sorted(kv[0]) if kv[0] is not None else ["*"])
    ):
        seen = "every source" if key is None else ", ".join(sorted(key)) or "unknown source"
        collected: list[codegen.GroupSource] = []
        name = f"_match_group{n}"
        functions[key] = _compile_group(name, members, errors, index, eager, collected)
        if sources is not None:
            sources.extend((seen, group) for group in collected)
    routes: dict[str | None, tuple[MatchFn, ...]] = {None: tuple(functions.values())}
    for source in SOURCES:
        routes[source] = tuple(fn for key, fn in functions.items() if key is None or source in key)
    return routes


def _compile_group(
    name: str,
    members: list[tuple[DetectionRule, compiler.CompiledRule]],
    errors: list[RuleError],
    index: bool = True,
    eager: bool = False,
    compiled: list[codegen.GroupSource] | None = None,
) -> MatchFn:
    group = codegen.generate_group(name, members, index)
    namespace = group.namespace
    try:
        if eager:
            codegen.compile_into(group.full_source(), name, namespace, name)
            codegen.bind_clusters(group)
        else:
            codegen.compile_into(group.main, name, namespace, name)
            codegen.bind_lazy_clusters(group)
    except (SyntaxError, RecursionError, MemoryError, ValueError) as exc:
        if len(members) == 1:
            rule = members[0][0]
            errors.append(
                RuleError(f"rule {rule.id} could not be compiled: {exc}", rule.path, rule.line)
            )
            return _no_match
        # Isolate the offending rule instead of losing the group.
        half = len(members) // 2
        first = _compile_group(name + "a", members[:half], errors, index, eager, compiled)
        second = _compile_group(name + "b", members[half:], errors, index, eager, compiled)

        def both(event: dict[str, Any], hits: list[DetectionRule]) -> Any:
            first(event, hits)
            return second(event, hits)

        return both
    if compiled is not None:
        compiled.append(group)
    fn: MatchFn = namespace[name]
    return fn


def _no_match(event: dict[str, Any], hits: list[DetectionRule]) -> Any:
    return hits


def _no_rules(event: dict[str, Any]) -> list[DetectionRule]:
    return []


def index_refs(rules: Iterable[DetectionRule]) -> dict[str, DetectionRule]:
    out: dict[str, DetectionRule] = {}
    for rule in rules:
        out[rule.id] = rule
        if rule.name:
            out.setdefault(rule.name, rule)
    return out
