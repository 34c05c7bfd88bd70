"""Sigma condition trees -> one Python boolean expression per rule.

Why code generation: a generated function per rule set measured 5x faster
than a tree of closures (DESIGN.md). A rule's expression tests locals the
generated function reads from the event (raw ``r``, lowered ``l``, as-text
``s``, address mask ``a``), written here as field placeholders;
``codegen`` lays the rules of a routing group out as functions.

The compiler works on pySigma's postprocessed condition tree (after the
processing pipeline and Sigma filters were applied): ``ConditionAND/OR/NOT``
with ``ConditionFieldEqualsValueExpression`` and ``ConditionValueExpression``
leaves, whose values pySigma's modifiers already turned into typed objects.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionNOT,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.rule import SigmaRule
from sigma.types import (
    CompareOperators,
    Placeholder,
    SigmaBool,
    SigmaCasedString,
    SigmaCIDRExpression,
    SigmaCompareExpression,
    SigmaExists,
    SigmaExpansion,
    SigmaFieldReference,
    SigmaNull,
    SigmaNumber,
    SigmaRegularExpression,
    SigmaRegularExpressionFlag,
    SigmaString,
    SigmaTimestampPart,
    SpecialChars,
)

from correlator.detection import runtime
from correlator.detection.anchors import Anchor, anchor
from correlator.detection.anchors import any_of as anchors_any_of
from correlator.detection.kinds import NUMBERS, STRINGS, kind
from zonewatch.netranges import AddressSet

_OPS = {
    CompareOperators.LT: "lt",
    CompareOperators.LTE: "lte",
    CompareOperators.GT: "gt",
    CompareOperators.GTE: "gte",
    CompareOperators.NEQ: "neq",
}


# Stands for the tested string in predicate templates; NUL never appears in
# repr() output, so rule literals cannot collide with it.
_X = "\0x\0"


def placeholder_missing(name: str) -> str:
    """What to do about a ``|expand`` placeholder without values."""
    return (
        f"placeholder %{name}% has no values: define it in the placeholder file "
        "(setting correlator.placeholders_file, or --placeholders FILE)"
    )


class CompileError(Exception):
    """A rule construct the matcher cannot run. ``node``: the condition-tree
    element it is in (None: the condition as a whole), which
    ``locations.rule_line`` turns into the line of the rule's YAML."""

    def __init__(self, message: str, node: Any = None):
        super().__init__(message)
        self.node = node


class LazyPredicate:
    """A one-argument predicate compiled on first call.

    Only list-valued event fields need a rule's test as a function, and they
    are rare; compiling every such predicate up front doubled the rule set's
    compile time.
    """

    __slots__ = ("_fn", "namespace", "source")

    def __init__(self, source: str):
        self.source = source
        self.namespace: dict[str, Any] = {}
        self._fn: Any = None

    def __call__(self, x: str) -> bool:
        if self._fn is None:
            self._fn = eval(f"lambda x: {self.source}", self.namespace)
        return bool(self._fn(x))


@dataclass
class Code:
    text: str
    cost: float
    # (variable, predicate template over a str) for tests of one field's text,
    # so an OR of them tests the type once and merges what it can.
    pred: tuple[str, str] | None = None
    # ("eq" | "sw" | "ew" | "in", literal) when the template is that simple test.
    shape: tuple[str, str] | None = None
    # (lowered var, raw var, number) for a number equality.
    num: tuple[str, str, int | float] | None = None
    # The operands of an AND, nested ANDs flattened, in evaluation order; each
    # is a whole test on its own (its type checks included).
    conj: tuple[str, ...] | None = None
    # (raw var, networks) for a ``|cidr`` test, so an OR of them on one field
    # becomes one address set.
    nets: tuple[str, tuple[Any, ...]] | None = None


@dataclass
class CompiledRule:
    """A rule's boolean expression plus what it needs from the event."""

    expr: str
    forms: dict[str, set[str]]  # field -> {"r", "l", "s", "a"}
    keywords: set[str]  # {"KW"} when keyword (full-text) tests read the event's strings
    required: set[str]  # fields that must be non-null for a match
    consts: dict[str, Any]
    # Literals one of which every matching event contains (None: no such set).
    anchor: Anchor | None = None
    # ``expr`` as tests that must all hold (``(expr,)`` when it is no AND), with
    # the same placeholders: rules of a block sharing a test evaluate it once.
    conjuncts: tuple[str, ...] = ()
    # field -> names of the ``AddressSet`` constants its ``|cidr`` tests use.
    addresses: dict[str, set[str]] = field(default_factory=dict)


@dataclass
class _RuleCompiler:
    prefix: str
    forms: dict[str, set[str]] = field(default_factory=dict)
    keywords: set[str] = field(default_factory=set)
    consts: dict[str, Any] = field(default_factory=dict)
    addresses: dict[str, set[str]] = field(default_factory=dict)

    # -- naming ---------------------------------------------------------
    def const(self, value: Any) -> str:
        name = f"_{self.prefix}c{len(self.consts)}"
        self.consts[name] = value
        return name

    def predicate(self, source: str) -> str:
        """A ``LazyPredicate`` named after its source, so that the same test in two
        rules spells the same code (and a block can share it)."""
        digest = hashlib.blake2b(source.encode("utf-8", "surrogatepass"), digest_size=8)
        name = f"_P{digest.hexdigest()}"
        self.consts[name] = LazyPredicate(source)
        return name

    def address_set(self, networks: tuple[Any, ...]) -> str:
        """An ``AddressSet`` named after its networks, so that the same ``|cidr``
        test in two rules spells the same code (and a block can share it)."""
        aset = AddressSet(networks)
        spelled = ",".join(sorted({str(n) for n in networks}))
        name = f"_N{hashlib.blake2b(spelled.encode(), digest_size=8).hexdigest()}"
        self.consts[name] = aset
        return name

    def cidr_code(self, fieldname: str, networks: tuple[Any, ...]) -> Code:
        """``|cidr``: a bit of the field's address mask (``a`` form), which a block
        computes once per event for all its rules' sets (``AddressIndex``)."""
        nets = self.address_set(networks)
        self.addresses.setdefault(fieldname, set()).add(nets)
        a = self.var(fieldname, "a")
        return Code(f"({a} & {nets})", 0.5, nets=(fieldname, networks))

    def var(self, fieldname: str, form: str) -> str:
        self.forms.setdefault(fieldname, set()).add(form)
        # NUL never appears in repr() output, so rule literals cannot collide.
        return f"\0{form}:{fieldname}\0"  # resolved to a local per block

    # -- condition tree -------------------------------------------------
    def node(self, node: Any) -> Code:
        k = kind(node)
        if k is ConditionAND:
            parts = [self.node(a) for a in node.args if a is not None]
            if not parts:
                raise CompileError("empty AND in condition", node)
            parts.sort(key=lambda c: c.cost)
            if len(parts) == 1:
                return parts[0]
            return Code(
                "(" + " and ".join(p.text for p in parts) + ")",
                parts[0].cost + 0.2 * sum(p.cost for p in parts[1:]),
                conj=tuple(t for p in parts for t in (p.conj or (p.text,))),
            )
        if k is ConditionOR:
            parts = [self.node(a) for a in node.args if a is not None]
            if not parts:
                raise CompileError("empty OR in condition", node)
            parts = self._merge_or(parts)
            parts.sort(key=lambda c: c.cost)
            if len(parts) == 1:
                return parts[0]
            return Code("(" + " or ".join(p.text for p in parts) + ")", sum(p.cost for p in parts))
        if k is ConditionNOT:
            inner = self.node(node.args[0])
            return Code(f"(not {inner.text})", inner.cost)
        try:
            if k is ConditionFieldEqualsValueExpression:
                return self.leaf(node.field, node.value)
            if k is ConditionValueExpression:
                return self.keyword(node.value)
        except CompileError as exc:
            if exc.node is None:
                exc.node = node  # the leaf: its value and detection item have a line
            raise
        raise CompileError(f"unsupported condition element {type(node).__name__}", node)

    def _merge_or(self, parts: list[Code]) -> list[Code]:
        """Alternatives on one field become one test: the type is checked once,
        equalities become one set lookup, prefixes and suffixes one call each
        (``str.startswith`` takes a tuple). Long SigmaHQ value lists need this."""
        by_var: dict[str, list[Code]] = {}
        numbers: dict[str, list[Code]] = {}
        networks: dict[str, list[Code]] = {}
        rest: list[Code] = []
        for p in parts:
            if p.pred is not None:
                by_var.setdefault(p.pred[0], []).append(p)
            elif p.nets is not None:
                networks.setdefault(p.nets[0], []).append(p)
            elif p.num is not None:
                numbers.setdefault(p.num[0], []).append(p)
            else:
                rest.append(p)
        for var, group in by_var.items():
            rest.append(self._merge_str(var, group) if len(group) > 1 else group[0])
        for fieldname, group in networks.items():
            if len(group) == 1:
                rest.append(group[0])
            else:
                nets = tuple(n for g in group for n in g.nets[1])  # type: ignore[index]
                rest.append(self.cidr_code(fieldname, nets))
        for low, group in numbers.items():
            if len(group) < 3:
                rest.extend(group)
                continue
            raw = group[0].num[1]  # type: ignore[index]
            values = frozenset(g.num[2] for g in group)  # type: ignore[index]
            spelled = self.const(frozenset(str(v) for v in values))
            nums = self.const(values)
            rest.append(
                Code(
                    f"({low} in {spelled} or {_not_int(raw, values)}({low}.__class__ is not str "
                    f"or {low}[:1] in _NUMSTART) and {raw} is not None and _num_in({raw}, {nums}))",
                    1.2,
                )
            )
        return rest

    def _merge_str(self, var: str, group: list[Code]) -> Code:
        by_shape: dict[str, list[str]] = {"eq": [], "sw": [], "ew": []}
        tests: list[tuple[float, str]] = []
        for g in group:
            assert g.pred is not None
            if g.shape is not None and g.shape[0] in by_shape:
                by_shape[g.shape[0]].append(g.shape[1])
            else:
                tests.append((g.cost, g.pred[1]))
        eq, sw, ew = by_shape["eq"], by_shape["sw"], by_shape["ew"]
        if len(eq) > 1:
            tests.append((0.4, f"{_X} in {self.const(frozenset(eq))}"))
        elif eq:
            tests.append((0.5, f"{_X} == {eq[0]!r}"))
        if sw:
            tests.append((0.6, f"{_X}.startswith({tuple(sorted(sw))!r})"))
        if ew:
            tests.append((0.6, f"{_X}.endswith({tuple(sorted(ew))!r})"))
        tests.sort(key=lambda t: t[0])
        pred = " or ".join(t[1] for t in tests)
        cost = min(t[0] for t in tests) + 0.1 * len(tests)
        return self._str_code(var, f"({pred})", cost)

    # -- field = value ----------------------------------------------------
    def leaf(self, fieldname: str, value: Any) -> Code:
        if fieldname is None:
            return self.keyword(value)
        k = kind(value)
        if k is SigmaExpansion:
            parts = self._merge_or([self.leaf(fieldname, v) for v in value.values])
            return Code("(" + " or ".join(p.text for p in parts) + ")", sum(p.cost for p in parts))
        if k is SigmaNull:
            return Code(f"({self.var(fieldname, 'r')} is None)", 0.5)
        if k is SigmaExists:
            test = f"_exists(E, {fieldname!r})"
            return Code(test if value.exists else f"(not {test})", 0.6)
        if k is SigmaCasedString:
            return self.string(self.var(fieldname, "s"), value, cased=True)
        if k is SigmaString:
            return self.string(self.var(fieldname, "l"), value, cased=False)
        if k is SigmaBool:
            return self.string(
                self.var(fieldname, "l"), SigmaString("true" if value.boolean else "false"), False
            )
        if k is SigmaTimestampPart:
            part = value.timestamp_part.name.lower()
            r = self.var(fieldname, "r")
            return Code(f"({r} is not None and _time_part({r}, {part!r}, {value.number!r}))", 3)
        if k is SigmaNumber:
            return self.number(fieldname, value.number)
        if k is SigmaRegularExpression:
            return self.regex(self.var(fieldname, "s"), value)
        if k is SigmaCIDRExpression:
            return self.cidr_code(fieldname, (value.network,))
        if k is SigmaCompareExpression:
            r = self.var(fieldname, "r")
            op = _OPS[value.op]
            return Code(
                f"({r} is not None and _compare({r}, {op!r}, {value.number.number!r}))", 1.5
            )
        if k is SigmaFieldReference:
            mine = self.var(fieldname, "l")
            other = self.var(value.field, "l")
            return Code(
                f"_field_ref({mine}, {other}, {value.starts_with!r}, {value.ends_with!r})", 1.5
            )
        raise CompileError(
            f"value type {type(value).__name__} of field {fieldname!r} is not supported "
            "(query expressions belong to SIEM backends)"
        )

    def number(self, fieldname: str, number: int | float) -> Code:
        low = self.var(fieldname, "l")
        r = self.var(fieldname, "r")
        spelled = str(number)
        # The string form catches JSON numbers and plain numeric strings; the
        # helper covers "04688", "4688.0" and lists, and only runs when the
        # text could be a number at all (and, for a whole rule number, when the
        # event's value is not a JSON integer, which its spelling already decided).
        return Code(
            f"({low} == {spelled!r} or {_not_int(r, [number])}"
            f"({low}.__class__ is not str or {low}[:1] in _NUMSTART)"
            f" and {r} is not None and _num_eq({r}, {number!r}))",
            0.8,
            num=(low, r, number),
        )

    def string(self, var: str, value: SigmaString, cased: bool) -> Code:
        pred, cost, shape = self.pattern(value, cased)
        if pred == "True":
            return Code(f"({var} is not None)", 0.3)
        return self._str_code(var, pred, cost, shape)

    def _str_code(
        self, var: str, pred: str, cost: float, shape: tuple[str, str] | None = None
    ) -> Code:
        """``pred`` on the field's text, or on any element when the field holds a list."""
        inline = pred.replace(_X, var)
        lam = self.predicate(pred.replace(_X, "x"))
        return Code(
            f"({inline} if {var}.__class__ is str "
            f"else {var} is not None and _any_of({var}, {lam}))",
            cost,
            pred=(var, pred),
            shape=shape,
        )

    def pattern(self, value: SigmaString, cased: bool) -> tuple[str, float, tuple[str, str] | None]:
        """A predicate template over the tested str (``_X``), its cost, and its shape
        (``("eq", literal)``, ``"sw"``, ``"ew"``, ``"in"``) when it is that simple."""
        parts: list[str | SpecialChars] = []
        for part in value.s:
            if isinstance(part, Placeholder):
                raise CompileError(placeholder_missing(part.name))
            if isinstance(part, str):
                text = part if cased else part.lower()
                if parts and isinstance(parts[-1], str):
                    parts[-1] += text
                else:
                    parts.append(text)
            else:
                parts.append(part)
        star = SpecialChars.WILDCARD_MULTI
        if not parts:
            return _X + " == ''", 0.5, ("eq", "")
        if SpecialChars.WILDCARD_SINGLE in parts:
            return self._wild_regex(parts), 4, None
        if all(p is star for p in parts):
            return "True", 0.3, None
        literals = [p for p in parts if isinstance(p, str)]
        if len(parts) == 1:
            return f"\0x\0 == {literals[0]!r}", 0.5, ("eq", literals[0])
        if len(parts) == 2 and parts[1] is star:
            return f"\0x\0.startswith({literals[0]!r})", 0.8, ("sw", literals[0])
        if len(parts) == 2 and parts[0] is star:
            return f"\0x\0.endswith({literals[0]!r})", 0.8, ("ew", literals[0])
        if len(parts) == 3 and parts[0] is star and parts[2] is star:
            return f"{literals[0]!r} in \0x\0", 0.7, ("in", literals[0])
        # Collapse runs of '*' and match the literals in order, in linear time.
        start = isinstance(parts[0], str)
        end = isinstance(parts[-1], str)
        seq = self.const(tuple(literals))
        return f"_wildcard_seq(\0x\0, {seq}, {start!r}, {end!r})", 2, None

    def _wild_regex(self, parts: list[str | SpecialChars]) -> str:
        out = []
        for p in parts:
            if p is SpecialChars.WILDCARD_MULTI:
                out.append(".*")
            elif p is SpecialChars.WILDCARD_SINGLE:
                out.append(".")
            else:
                out.append(_re2_literal(str(p)))
        compiled = runtime.compile_re2("(?s)" + "".join(out))
        rx = self.const(runtime.re2_tester(compiled, whole=True))
        return f"{rx}(\0x\0)"

    def regex(self, var: str, value: SigmaRegularExpression) -> Code:
        rx = self._regex_const(value)
        return Code(
            f"({rx}({var}) if {var}.__class__ is str else "
            f"{var} is not None and _any_of({var}, {rx}))",
            5,
        )

    def _regex_const(self, value: SigmaRegularExpression) -> str:
        pattern = value.regexp.to_plain() if hasattr(value.regexp, "to_plain") else str(value)
        flags = ""
        if SigmaRegularExpressionFlag.IGNORECASE in value.flags:
            flags += "i"
        if SigmaRegularExpressionFlag.MULTILINE in value.flags:
            flags += "m"
        if SigmaRegularExpressionFlag.DOTALL in value.flags:
            flags += "s"
        full = f"(?{flags}){pattern}" if flags else pattern
        try:
            compiled = runtime.compile_re2(full)
        except Exception as exc:  # re2.error is not importable as a stable type
            reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
            raise CompileError(
                f"regular expression {pattern!r} is not supported by RE2 (linear-time "
                f"matching is required for rule content): {reason}"
            ) from exc
        return self.const(runtime.re2_tester(compiled))

    # -- keywords (unbound values) ----------------------------------------
    def keyword(self, value: Any) -> Code:
        """Full-text search: the keyword matches inside any string value of the event."""
        k = kind(value)
        if k is SigmaExpansion:
            alternatives = [self.keyword(v) for v in value.values]
            return Code(
                "(" + " or ".join(p.text for p in alternatives) + ")",
                sum(p.cost for p in alternatives),
            )
        if k is SigmaRegularExpression:
            return self._kw_regex(value)
        if k is SigmaBool or k in NUMBERS:
            value = SigmaString(str(value).lower())
            k = SigmaString
        if k not in STRINGS:
            raise CompileError(f"keyword value of type {type(value).__name__} is not supported")
        cased = k is SigmaCasedString
        star = SpecialChars.WILDCARD_MULTI
        parts = list(value.s)
        if not parts or parts[0] is not star:
            parts.insert(0, star)
        if parts[-1] is not star:
            parts.append(star)
        wrapped = SigmaCasedString() if cased else SigmaString()
        wrapped.s = tuple(parts)  # type: ignore[assignment]  # pySigma types it loosely
        pred, cost, shape = self.pattern(wrapped, cased)
        # The event's strings are gathered (and lowered) only when a keyword
        # test actually runs, once per event (runtime.Keywords).
        self.keywords.add("KW")
        if pred == "True":
            return Code("(len(KW.raw) > 0)", 0.5)
        if shape is not None and shape[0] == "in" and "\0" not in shape[1]:
            # A substring cannot span two NUL-joined strings: one search does.
            joined = "KW.raw_joined" if cased else "KW.joined"
            return Code(f"({shape[1]!r} in {joined})", 5)
        lam = self.predicate(pred.replace(_X, "x"))
        return Code(f"_any_of({'KW.raw' if cased else 'KW.lowered'}, {lam})", 6 + cost)

    def _kw_regex(self, value: SigmaRegularExpression) -> Code:
        self.keywords.add("KW")
        rx = self._regex_const(value)
        return Code(f"_any_of(KW.raw, {rx})", 10)


def _not_int(raw: str, numbers: Any) -> str:
    """A guard skipping the numeric fallback for JSON integers when every rule number
    is an integer: then the integer's spelling equals a rule number's exactly when
    the numbers are equal."""
    if all(type(n) is int for n in numbers):
        return f"{raw}.__class__ is not int and "
    return ""


def _re2_literal(text: str) -> str:
    # \x{..} spells any ASCII punctuation or space literally in RE2 syntax.
    return "".join(c if c.isalnum() or c == "_" else f"\\x{{{ord(c):x}}}" for c in text)


def required_fields(node: Any) -> set[str]:
    """Fields that must hold a non-null value for ``node`` to match."""
    k = kind(node)
    if k is ConditionAND:
        out: set[str] = set()
        for a in node.args:
            if a is not None:
                out |= required_fields(a)
        return out
    if k is ConditionOR:
        sets = [required_fields(a) for a in node.args if a is not None]
        return set.intersection(*sets) if sets else set()
    if k is ConditionFieldEqualsValueExpression:
        vk = kind(node.value)
        if vk is SigmaNull or vk is SigmaExists or node.field is None:
            return set()
        return {node.field}
    return set()


def compile_rule(rule: SigmaRule, prefix: str) -> CompiledRule:
    """One rule -> a boolean expression with field placeholders; raises CompileError."""
    comp = _RuleCompiler(prefix)
    exprs: list[Code] = []
    required: set[str] | None = None
    anchors: list[Anchor | None] = []
    for condition in rule.detection.parsed_condition:
        tree = condition.parsed
        if tree is None:
            raise CompileError("condition selects no detection items")
        exprs.append(comp.node(tree))
        req = required_fields(tree)
        required = req if required is None else required & req
        anchors.append(anchor(tree))
    expr = exprs[0].text if len(exprs) == 1 else "(" + " or ".join(e.text for e in exprs) + ")"
    conjuncts = (exprs[0].conj or (expr,)) if len(exprs) == 1 else (expr,)
    consts = dict(comp.consts)
    return CompiledRule(
        expr,
        comp.forms,
        comp.keywords,
        required or set(),
        consts,
        anchors_any_of(anchors),
        conjuncts,
        comp.addresses,
    )
