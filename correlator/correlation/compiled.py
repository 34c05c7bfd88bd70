"""A pySigma correlation rule turned into what the engine evaluates.

pySigma parses and validates the rule; this module resolves its references
(ids, names, chains), applies its aliases per referenced rule, and turns its
condition into a threshold or a list of clauses (extended temporal
conditions in disjunctive normal form). Nothing here touches an event.
"""

from __future__ import annotations

import hashlib
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sigma.correlations import (
    CorrelationConditionAND,
    CorrelationConditionNOT,
    CorrelationConditionOR,
    SigmaCorrelationRule,
    SigmaCorrelationTimespan,
    SigmaExtendedCorrelationCondition,
    SigmaRuleReference,
)
from sigma.exceptions import SigmaTimespanError

from correlator.correlation.errors import CorrelationRuleError
from correlator.correlation.settings import BaseRuleInfo

OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
    "eq": operator.eq,
    "neq": operator.ne,
}

# Top-level custom attribute holding the full threshold when pySigma 1.5 cannot:
# it accepts exactly one operator and truncates thresholds to integers, while
# the specification allows ranges ("gt: 100, lte: 200") and value_avg needs floats.
CONDITION_ATTRIBUTE = "zonewatch-condition"
SUPPRESS_ATTRIBUTE = "suppress"

TEMPORAL_TYPES = frozenset({"temporal", "temporal_ordered"})
NUMERIC_TYPES = frozenset({"value_sum", "value_avg", "value_percentile", "value_median"})
VALUE_TYPES = NUMERIC_TYPES | {"value_count"}


def prepare_correlation_dict(doc: dict[str, Any]) -> dict[str, Any]:
    """Make a correlation rule document with a range or float threshold
    acceptable to pySigma 1.5, keeping the full threshold for the engine.

    Call it on every YAML document before ``SigmaCollection.from_dicts``;
    other documents come back unchanged (the same object).
    """
    corr = doc.get("correlation")
    if not isinstance(corr, dict):
        return doc
    cond = corr.get("condition")
    if not isinstance(cond, dict):
        return doc
    ops = [key for key in cond if key in OPERATORS]
    exact = all(type(cond[key]) is int for key in ops)
    if len(ops) <= 1 and exact:
        return doc
    reduced = {key: value for key, value in cond.items() if key not in OPERATORS}
    if ops:
        first = ops[0]
        try:
            reduced[first] = int(float(cond[first]))
        except (TypeError, ValueError):
            reduced[first] = cond[first]  # let pySigma report it with the rule's location
    out = dict(doc)
    out["correlation"] = {**corr, "condition": reduced}
    out[CONDITION_ATTRIBUTE] = {key: cond[key] for key in ops}
    return out


_SYMBOLS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "eq": "==", "neq": "!="}


@dataclass(frozen=True)
class Threshold:
    """A condition on a metric: one operator or a range (all must hold).

    ``check`` is generated code (``m is not None and m >= 5``): it runs once
    per event and group, and a closure over ``operator`` functions costs twice
    as much. The thresholds are numbers validated by ``_threshold``.
    """

    terms: tuple[tuple[str, float], ...]
    check: Callable[[Any], bool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "check", eval(f"lambda m: {self.expression('m')}"))

    def expression(self, var: str) -> str:
        """Python source testing the metric in variable ``var``, for generated code."""
        tests = " and ".join(f"{var} {_SYMBOLS[op]} {float(value)!r}" for op, value in self.terms)
        return f"{var} is not None and {tests}"

    def __call__(self, metric: float | None) -> bool:
        return self.check(metric)

    def __str__(self) -> str:
        return " and ".join(f"{op} {value:g}" for op, value in self.terms)


@dataclass(frozen=True)
class Slot:
    """One rule a correlation refers to, with the event fields it reads there."""

    reference: str
    rule_id: str
    is_correlation: bool
    group_fields: tuple[str, ...]
    value_fields: tuple[str, ...]


@dataclass(frozen=True)
class Clause:
    """A conjunction of an extended condition: these rules present, those absent."""

    pos: tuple[int, ...]  # slot indices in the order of the rules list
    neg: tuple[int, ...]


@dataclass(frozen=True)
class Suppress:
    """The ``suppress`` custom attribute: one alert per window and key."""

    window: float
    positions: tuple[int, ...]  # indices into group_by forming the key


@dataclass
class CompiledCorrelation:
    index: int
    id: str
    name: str | None
    title: str
    level: str
    tags: list[str]
    rule_hash: str
    type: str
    span: float
    group_by: tuple[str, ...]
    slots: list[Slot]
    threshold: Threshold | None
    percentile: float | None
    clauses: tuple[Clause, ...] | None
    generate: bool
    suppress: Suppress | None
    carry: tuple[str, ...] = ()
    output: bool = True
    parents: list[tuple[int, int]] = field(default_factory=list)  # (rule index, slot)

    def __post_init__(self) -> None:
        self.temporal = self.type in TEMPORAL_TYPES
        self.ordered = self.type == "temporal_ordered"
        self.check: Callable[[Any], bool] = (
            self.threshold.check if self.threshold is not None else lambda m: False
        )


def correlation_id(rule: SigmaCorrelationRule) -> str:
    if rule.id is not None:
        return str(rule.id)
    if rule.name:
        return str(rule.name)
    return "title:" + rule.title


def rule_hash(rule: SigmaCorrelationRule) -> str:
    payload = orjson.dumps(rule.to_dict(), default=str, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(payload).hexdigest()


def _where(rule: SigmaCorrelationRule) -> tuple[str | None, int | None]:
    source = getattr(rule, "source", None)
    path = getattr(source, "path", None)
    line = getattr(source, "first_line", None) if source is not None else None
    return (str(path) if path else None), line


def _error(rule: SigmaCorrelationRule, message: str) -> CorrelationRuleError:
    path, line = _where(rule)
    error = CorrelationRuleError(f"correlation '{rule.title}': {message}", path, line)
    error.rule = rule
    return error


def usable_correlations(
    rules: Sequence[SigmaCorrelationRule],
    resolve: Callable[[str], BaseRuleInfo | None],
    errors: list[Any],
) -> list[SigmaCorrelationRule]:
    """The rules that compile; each bad one (and each chain built on it) is
    reported in ``errors`` and left out, so it never stops the others."""
    good = list(rules)
    while good:
        try:
            compile_rules(good, resolve)
            return good
        except CorrelationRuleError as exc:
            errors.append(exc)
            bad = getattr(exc, "rule", None)
            if bad is None or bad not in good:
                return []
            good.remove(bad)
    return good


def _threshold(rule: SigmaCorrelationRule) -> Threshold | None:
    raw = rule.custom_attributes.get(CONDITION_ATTRIBUTE)
    if isinstance(raw, dict) and raw:
        terms = []
        for op, value in raw.items():
            if op not in OPERATORS:
                raise _error(
                    rule, f"unknown condition operator '{op}' (use {', '.join(OPERATORS)})"
                )
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise _error(rule, f"condition {op}: '{value}' is not a number") from None
            if not math.isfinite(number):
                raise _error(rule, f"condition {op}: '{value}' is not a finite number")
            terms.append((op, int(number) if number.is_integer() else number))
        return Threshold(tuple(terms))
    cond = rule.condition
    if isinstance(cond, SigmaExtendedCorrelationCondition):
        return None
    return Threshold(((cond.op.name.lower(), cond.count),))


def _dnf(node: Any, negate: bool = False) -> list[tuple[frozenset[str], frozenset[str]]]:
    """Extended condition -> list of (present, absent) reference sets (OR of ANDs)."""
    if isinstance(node, SigmaRuleReference):
        single = frozenset({node.reference})
        return [(frozenset(), single)] if negate else [(single, frozenset())]
    if isinstance(node, CorrelationConditionNOT):
        return _dnf(node.args[0], not negate)
    if not isinstance(node, CorrelationConditionAND | CorrelationConditionOR):
        raise TypeError(f"unexpected condition node {node!r}")
    conjunction = isinstance(node, CorrelationConditionAND) != negate  # De Morgan
    parts = [_dnf(arg, negate) for arg in node.args]
    if not conjunction:
        return [clause for part in parts for clause in part]
    result: list[tuple[frozenset[str], frozenset[str]]] = [(frozenset(), frozenset())]
    for part in parts:
        result = [
            (p1 | p2, n1 | n2)
            for p1, n1 in result
            for p2, n2 in part
            if not ((p1 | p2) & (n1 | n2))  # "a and not a" can never hold
        ]
    return result


def parse_suppress(raw: Any) -> tuple[float, list[str] | None]:
    """The ``suppress`` attribute (``10m`` or ``{window: 10m, fields: [...]}``)
    as (window in seconds, fields or None); ``ValueError`` says what to fix.
    Correlation and detection rules read it alike."""
    fields: Any = None
    if isinstance(raw, str):
        window = raw
    elif isinstance(raw, dict) and "window" in raw:
        window = raw["window"]
        fields = raw.get("fields")
        if isinstance(fields, str):
            fields = [fields]
    else:
        raise ValueError("suppress must be a timespan ('10m') or {window: 10m, fields: [...]}")
    try:
        seconds = SigmaCorrelationTimespan(str(window)).seconds
    except SigmaTimespanError:
        raise ValueError(
            f"suppress window '{window}' is not a timespan like 30s, 10m, 1h"
        ) from None
    if fields is not None and (
        not isinstance(fields, list) or not all(isinstance(f, str) and f for f in fields)
    ):
        raise ValueError(f"suppress fields must be a list of field names, got {fields!r}")
    return float(seconds), fields


def _suppress(rule: SigmaCorrelationRule, group_by: tuple[str, ...]) -> Suppress | None:
    raw = rule.custom_attributes.get(SUPPRESS_ATTRIBUTE)
    if raw is None:
        return None
    try:
        seconds, fields = parse_suppress(raw)
    except ValueError as exc:
        raise _error(rule, str(exc)) from None
    if fields is None:
        positions = tuple(range(len(group_by)))
    else:
        unknown = [f for f in fields if f not in group_by]
        if unknown:
            raise _error(
                rule,
                f"suppress fields {unknown} are not in group-by {list(group_by)}; "
                "suppression keys are made of group-by values",
            )
        positions = tuple(group_by.index(f) for f in fields)
    return Suppress(seconds, positions)


def _level(rule: SigmaCorrelationRule) -> str:
    level = getattr(rule, "level", None)
    return level.name.lower() if level is not None else "medium"


def compile_rules(
    rules: Sequence[SigmaCorrelationRule],
    resolve: Callable[[str], BaseRuleInfo | None],
) -> list[CompiledCorrelation]:
    """Compile correlation rules; raises CorrelationRuleError on the first bad one."""
    by_ref: dict[str, int] = {}
    for i, rule in enumerate(rules):
        by_ref[correlation_id(rule)] = i
        if rule.name:
            by_ref[str(rule.name)] = i
        if rule.id is not None:
            by_ref[str(rule.id)] = i

    def target(rule: SigmaCorrelationRule, ref: str) -> tuple[str, bool]:
        if ref in by_ref:
            return correlation_id(rules[by_ref[ref]]), True
        info = resolve(ref)
        if info is None:
            raise _error(rule, f"refers to rule '{ref}', which is not loaded (check id or name)")
        rid = str(info.id)
        if rid in by_ref:
            return correlation_id(rules[by_ref[rid]]), True
        return rid, False

    compiled: list[CompiledCorrelation] = []
    for index, rule in enumerate(rules):
        ctype = str(rule.type.name).lower()
        cond = rule.condition
        if rule.rules is not None:
            refs = [r.reference for r in rule.rules]
        elif isinstance(cond, SigmaExtendedCorrelationCondition):
            refs = cond.get_referenced_rules()
        else:
            refs = []
        if not refs:
            raise _error(rule, "refers to no rules")
        if len(set(refs)) != len(refs):
            raise _error(rule, "lists the same rule twice")
        # No group-by: one group for the whole input (key ``()``), as a query
        # without GROUP BY counts over everything.
        group_by = tuple(rule.group_by or ())
        value_fields: tuple[str, ...] = ()
        if ctype in VALUE_TYPES:
            fieldref = getattr(cond, "fieldref", None)
            if not fieldref:
                raise _error(rule, f"{ctype} needs 'field' in its condition")
            value_fields = (fieldref,) if isinstance(fieldref, str) else tuple(fieldref)
            if ctype in NUMERIC_TYPES and len(value_fields) != 1:
                raise _error(rule, f"{ctype} aggregates exactly one numeric field")
        percentile: float | None = None
        if ctype == "value_median":
            percentile = 50.0
        elif ctype == "value_percentile":
            raw_p = getattr(cond, "percentile", None)
            if raw_p is None or not 0 <= raw_p <= 100:
                raise _error(
                    rule, "value_percentile needs 'percentile: N' (0-100) in its condition"
                )
            percentile = float(raw_p)

        slot_ids = [target(rule, ref) for ref in refs]
        slots: list[Slot] = []
        for ref, (rid, is_corr) in zip(refs, slot_ids, strict=True):
            mapping: dict[str, str] = {}
            for alias in rule.aliases:
                for alias_ref, field_name in alias.mapping.items():
                    if alias_ref.reference == ref or target(rule, alias_ref.reference)[0] == rid:
                        mapping[alias.alias] = field_name
            slots.append(
                Slot(
                    reference=ref,
                    rule_id=rid,
                    is_correlation=is_corr,
                    group_fields=tuple(mapping.get(f, f) for f in group_by),
                    value_fields=tuple(mapping.get(f, f) for f in value_fields),
                )
            )

        clauses: tuple[Clause, ...] | None = None
        if isinstance(cond, SigmaExtendedCorrelationCondition):
            position = {ref: i for i, ref in enumerate(refs)}
            seen: set[tuple[tuple[int, ...], tuple[int, ...]]] = set()
            out: list[Clause] = []
            for pos, neg in _dnf(cond.parsed):
                if not pos:
                    raise _error(
                        rule,
                        f"condition '{cond.expression}' can hold with no rule present; "
                        "absence is only defined after a present rule ('a and not b')",
                    )
                key = (
                    tuple(sorted(position[r] for r in pos)),
                    tuple(sorted(position[r] for r in neg)),
                )
                if key not in seen:
                    seen.add(key)
                    out.append(Clause(*key))
            clauses = tuple(out)

        compiled.append(
            CompiledCorrelation(
                index=index,
                id=correlation_id(rule),
                name=str(rule.name) if rule.name else None,
                title=rule.title,
                level=_level(rule),
                tags=[str(tag) for tag in rule.tags],
                rule_hash=rule_hash(rule),
                type=ctype,
                span=float(rule.timespan.seconds),
                group_by=group_by,
                slots=slots,
                threshold=_threshold(rule),
                percentile=percentile,
                clauses=clauses,
                generate=bool(rule.generate),
                suppress=_suppress(rule, group_by),
            )
        )

    by_id = {c.id: c for c in compiled}
    for parent in compiled:
        for s, slot in enumerate(parent.slots):
            if slot.is_correlation:
                child = by_id[slot.rule_id]
                child.parents.append((parent.index, s))
                if not parent.generate:
                    child.output = False
    _check_cycles(compiled, by_id, rules)
    _propagate_carry(compiled, by_id)
    return compiled


def _check_cycles(
    compiled: list[CompiledCorrelation],
    by_id: dict[str, CompiledCorrelation],
    rules: Sequence[SigmaCorrelationRule],
) -> None:
    state: dict[str, int] = {}

    def visit(c: CompiledCorrelation) -> None:
        state[c.id] = 1
        for slot in c.slots:
            if slot.is_correlation:
                mark = state.get(slot.rule_id)
                if mark == 1:
                    raise _error(
                        rules[c.index], f"chain refers back to itself via '{slot.reference}'"
                    )
                if mark is None:
                    visit(by_id[slot.rule_id])
        state[c.id] = 2

    for c in compiled:
        if c.id not in state:
            visit(c)


def _propagate_carry(
    compiled: list[CompiledCorrelation], by_id: dict[str, CompiledCorrelation]
) -> None:
    """Fields a parent reads from a child alert that the child's group does not
    hold are carried from the child's triggering event (fixpoint over the DAG)."""
    carry: dict[str, set[str]] = {c.id: set() for c in compiled}
    changed = True
    while changed:
        changed = False
        for parent in compiled:
            for slot in parent.slots:
                if not slot.is_correlation:
                    continue
                child = by_id[slot.rule_id]
                wanted = (set(slot.group_fields) | set(slot.value_fields) | carry[parent.id]) - set(
                    child.group_by
                )
                if not wanted <= carry[child.id]:
                    carry[child.id] |= wanted
                    changed = True
    for c in compiled:
        c.carry = tuple(sorted(carry[c.id]))


@dataclass(frozen=True)
class CorrelationRuleRecord:
    """A correlation rule as the store's ``rules`` table records it (its
    ``sha256`` is the ``rule_hash`` its alerts carry)."""

    id: str
    title: str
    level: str | None
    tags: list[str]
    sha256: str
    text: str
    path: str | None


def correlation_rule_records(
    rules: Sequence[SigmaCorrelationRule],
) -> list[CorrelationRuleRecord]:
    import yaml

    out = []
    for rule in rules:
        level = getattr(rule.level, "name", None)
        out.append(
            CorrelationRuleRecord(
                id=correlation_id(rule),
                title=rule.title,
                level=level.lower() if level else None,
                tags=[str(t) for t in rule.tags or []],
                sha256=rule_hash(rule),
                text=yaml.safe_dump(
                    _with_generate(rule), allow_unicode=True, sort_keys=False, width=1000
                ),
                path=_where(rule)[0],
            )
        )
    return out


def _with_generate(rule: SigmaCorrelationRule) -> dict[str, Any]:
    """``rule.to_dict()`` with ``generate``, which it leaves out."""
    data = rule.to_dict()
    if isinstance(data.get("correlation"), dict) and getattr(rule, "generate", False):
        data["correlation"]["generate"] = True
    return data
