"""Compiled rules -> the Python source of one function per routing group.

``compiler`` turns each rule's condition into a boolean expression over
field placeholders; this module lays rules out as functions: rules grouped in
blocks guarded by a field every rule in the block needs (one presence test
skips a whole block), field reads shared by a block, tests consecutive rules
share evaluated once, and rules with an anchor in small "cluster" functions
the prefilter wakes (see ``prefilter``). A comment names each rule (id, title,
file:line) before its test.

The source is compiled wrapped to a readable width and registered with
``linecache`` (``zonewatch.pysource``), so ``zonewatch rules check
--show-code`` prints what runs and a traceback through it shows its line.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from correlator.detection import prefilter, runtime
from correlator.detection.compiler import CompiledRule, LazyPredicate
from zonewatch import fieldpath, pysource
from zonewatch.logs import get_logger
from zonewatch.netranges import AddressIndex, AddressSet

log = get_logger(__name__)


_RUNTIME_NAMES = {
    "_NUMSTART": "0123456789+-. ",
    "_any_of": runtime.any_of,
    "_wildcard_seq": runtime.wildcard_seq,
    "_num_eq": runtime.num_eq,
    "_num_in": runtime.num_in,
    "_compare": runtime.compare,
    "_in_networks": runtime.in_networks,
    "_time_part": runtime.time_part,
    "_field_ref": runtime.field_ref,
    "_exists": fieldpath.exists,
    "_flatten_event": runtime.flatten_event,
    **fieldpath.NAMESPACE,
    "_lower": runtime.lower,
    "_text": runtime.text,
    "_keyword_values": runtime.keyword_values,
    "_Keywords": runtime.Keywords,
}


def _fetch(var: str, name: str, indent: str) -> list[str]:
    """A statement reading field ``name`` of event ``E`` into ``var`` (None when
    absent), as ``zonewatch.fieldpath`` defines it, in one expression."""
    return [f"{indent}{var} = {fieldpath.inline_expr(name, var)}"]


@dataclass
class GroupSource:
    """Generated code of one routing group: the entry function ``name(E, hits)``
    and the cluster functions it dispatches to (compiled now or on first use)."""

    name: str
    main: str
    clusters: list[tuple[str, str, tuple[str, ...]]]  # (function name, source, rule ids)
    namespace: dict[str, Any]
    main_ids: tuple[str, ...] = ()  # rules tested in the entry function itself

    def full_source(self) -> str:
        return "\n".join([*(src for _, src, _ in self.clusters), self.main])

    def readable(self, rule_id: str | None = None) -> str:
        """The functions as they are compiled (wrapped): all of them, or those
        testing ``rule_id`` (empty when none does)."""
        parts = []
        if rule_id is None or rule_id in self.main_ids:
            parts.append(pysource.wrap(self.main))
        for fname, source, ids in self.clusters:
            if rule_id is None or rule_id in ids:
                woken = f"# {fname}: run by {self.name} when the event holds one of its literals\n"
                parts.append(woken + pysource.wrap(source))
        return "\n".join(parts)


def compile_into(source: str, label: str, namespace: dict[str, Any], entry: str) -> None:
    """Compile ``source`` wrapped (the text ``readable`` shows) under a file name
    of its own, kept in ``linecache`` while its entry function lives, and run it
    in ``namespace``. Raises what ``compile`` raises."""
    filename = pysource.unique_name(f"zonewatch rules {label}")
    exec(pysource.compile_source(pysource.wrap(source), filename), namespace)
    pysource.forget_with(namespace[entry], filename)


def rule_note(obj: Any, i: int) -> list[str]:
    """Comment lines naming a rule: its title, then its id and file:line."""

    def one_line(value: Any, limit: int) -> str:
        text = " ".join("".join(c if c.isprintable() else " " for c in str(value)).split())
        return text if len(text) <= limit else text[: limit - 1] + "…"

    title = one_line(getattr(obj, "title", "") or "", 90)
    ident = one_line(getattr(obj, "id", i), 80)
    path, line = getattr(obj, "path", None), getattr(obj, "line", None)
    where = f" at {one_line(path, 120)}:{line}" if path and line else ""
    return [f"# {title}", f"# rule {ident}{where}"] if title else [f"# rule {ident}{where}"]


def generate_group(
    name: str, rules: list[tuple[Any, CompiledRule]], index: bool = True
) -> GroupSource:
    """Code of ``def name(E, hits)`` appending the rule objects that match event ``E``.

    With ``index``, rules with an anchor are grouped into small functions
    ("clusters") that run only when the event holds one of their literals
    (see ``prefilter``); the others run inline on every event.
    """
    namespace: dict[str, Any] = dict(_RUNTIME_NAMES)
    numbered = [(i, obj, c) for i, (obj, c) in enumerate(rules)]
    if not index:
        anchored: list[tuple[int, Any, CompiledRule]] = []
        inline = numbered
    else:
        anchored = [m for m in numbered if m[2].anchor is not None]
        inline = [m for m in numbered if m[2].anchor is None]
    clusters = _clusters(anchored)
    cluster_sources = []
    for k, members in enumerate(clusters):
        fname = f"{name}_c{k}"
        lines = [f"def {fname}(E, hits):", "    g = E.get"]
        lines.extend(_block_lines(members, namespace))
        lines.append("    return hits")
        cluster_sources.append((fname, "\n".join(lines) + "\n", _ids(members)))
    out = [f"def {name}(E, hits):", "    g = E.get"]
    out.extend(_block_lines(inline, namespace))
    if clusters:
        out.extend(_dispatch_lines(name, clusters, namespace))
    out.append("    return hits")
    return GroupSource(name, "\n".join(out) + "\n", cluster_sources, namespace, _ids(inline))


def _ids(members: list[tuple[int, Any, CompiledRule]]) -> tuple[str, ...]:
    return tuple(str(getattr(obj, "id", i)) for i, obj, _ in members)


# A cluster shares field reads between rules that share a literal; past this
# size, waking a whole cluster for one rule's literal costs more than it saves.
_CLUSTER_MAX = 16


def _clusters(
    anchored: list[tuple[int, Any, CompiledRule]],
) -> list[list[tuple[int, Any, CompiledRule]]]:
    """Rules sharing an atom (literal or whole value) join one cluster (union-find,
    bounded size)."""
    parent = list(range(len(anchored)))
    size = [1] * len(anchored)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_with: dict[Any, int] = {}  # atom (literal or (field, value)) -> first rule with it
    for i, (_, _, c) in enumerate(anchored):
        assert c.anchor is not None
        for atom in [*sorted(c.anchor.literals), *sorted(c.anchor.exact)]:
            j = first_with.setdefault(atom, i)
            a, b = root(i), root(j)
            if a != b and size[a] + size[b] <= _CLUSTER_MAX:
                parent[b] = a
                size[a] += size[b]
    groups: dict[int, list[tuple[int, Any, CompiledRule]]] = {}
    for i, member in enumerate(anchored):
        groups.setdefault(root(i), []).append(member)
    return list(groups.values())


def _dispatch_lines(
    name: str, clusters: list[list[tuple[int, Any, CompiledRule]]], namespace: dict[str, Any]
) -> list[str]:
    """Find the literals and whole values present, run the clusters they anchor."""
    by_literal: dict[str, set[int]] = {}
    by_value: dict[str, dict[str, set[int]]] = {}  # field -> lowered value -> clusters
    fields: set[str] = set()
    everywhere = False
    for k, members in enumerate(clusters):
        for _, _, c in members:
            assert c.anchor is not None
            fields |= c.anchor.fields
            everywhere = everywhere or c.anchor.everywhere
            for lit in c.anchor.literals:
                by_literal.setdefault(lit, set()).add(k)
            for f, v in c.anchor.exact:
                by_value.setdefault(f, {}).setdefault(v, set()).add(k)
    namespace[f"_CL_{name}"] = [None] * len(clusters)  # filled once the functions exist
    namespace.setdefault("_hay", prefilter.haystack_part)
    namespace.setdefault("_exact_many", prefilter.exact_many)
    namespace.setdefault("_wake", prefilter.wake)
    lines: list[str] = []
    read: dict[str, str] = {}  # field -> local holding its lowered text

    def lowered(f: str) -> str:
        if f not in read:
            var = read[f] = f"h{len(read)}"
            lines.extend(_fetch(var, f, "    "))
            lines.append(
                f"    {var} = {var}.lower() if {var}.__class__ is str else str({var}) if "
                f"{var}.__class__ is int else (None if {var} is None else _lower({var}))"
            )
        return read[f]

    if by_literal:
        literals = sorted(by_literal)
        namespace[f"_FIND_{name}"] = prefilter.LiteralIndex(
            literals, [sorted(by_literal[lit]) for lit in literals]
        ).find
        if everywhere:
            # Keyword anchors: every string of the event, lowered (the matcher's K).
            lines.append(
                "    H = '\\0'.join([x.lower() for x in _keyword_values(_flatten_event(E))])"
            )
        else:
            parts = [
                f"{{{v} if {v}.__class__ is str else _hay({v})}}"
                for v in map(lowered, sorted(fields))
            ]
            lines.append("    H = f'" + "\\0".join(parts) + "'")
        lines.append(f"    W = _FIND_{name}(H)")
    elif len(by_value) == 1:
        # One whole-value table and nothing else: its entry is the clusters to run.
        (f,) = by_value
        table = f"_EQ0_{name}"
        namespace[table] = {v: tuple(sorted(ks)) for v, ks in by_value[f].items()}
        var = lowered(f)
        lines.append(
            f"    if {var}.__class__ is str:\n        W = {table}.get({var}, ())\n"
            f"    else:\n        W = () if {var} is None else _exact_many({table}, {var}) or ()"
        )
        by_value = {}
    else:
        lines.append("    W = ()")
    for n, f in enumerate(sorted(by_value)):
        table = f"_EQ{n}_{name}"
        namespace[table] = {v: tuple(sorted(ks)) for v, ks in by_value[f].items()}
        var = lowered(f)
        lines.append(
            f"    x = {table}.get({var}) if {var}.__class__ is str else "
            f"(None if {var} is None else _exact_many({table}, {var}))"
        )
        lines.append("    if x:")
        lines.append("        W = _wake(W, x)")
    lines.append(f"    C = _CL_{name}")
    lines.append("    for k in W:")
    lines.append("        C[k](E, hits)")
    return lines


def bind_clusters(group: GroupSource) -> None:
    """After the full source ran: point the dispatch table at the cluster functions."""
    table = group.namespace.get(f"_CL_{group.name}")
    for k, (fname, _, _) in enumerate(group.clusters):
        assert table is not None
        table[k] = group.namespace[fname]


def bind_lazy_clusters(group: GroupSource) -> None:
    """After the entry function ran: clusters compile when an event first wakes them.

    Most of a large rule set (SigmaHQ's Windows rules, for a city office's
    proxy and firewall events) never wakes; compiling it up front was a
    fifth of the load time. ``zonewatch rules check`` compiles everything.
    """
    table = group.namespace.get(f"_CL_{group.name}")
    for k, (fname, source, ids) in enumerate(group.clusters):
        assert table is not None
        table[k] = LazyCluster(table, k, fname, source, ids, group.namespace)


class LazyCluster:
    """Stands in the dispatch table for a cluster until its first call."""

    __slots__ = ("fname", "ids", "k", "namespace", "source", "table")

    def __init__(
        self,
        table: list[Any],
        k: int,
        fname: str,
        source: str,
        ids: tuple[str, ...],
        namespace: dict[str, Any],
    ):
        self.table, self.k, self.fname = table, k, fname
        self.source, self.ids, self.namespace = source, ids, namespace

    def __call__(self, event: dict[str, Any], hits: list[Any]) -> Any:
        try:
            compile_into(self.source, self.fname, self.namespace, self.fname)
            fn = self.namespace[self.fname]
        except (SyntaxError, RecursionError, MemoryError, ValueError) as exc:
            # Only reachable for code Python cannot compile (e.g. nesting too
            # deep); `zonewatch rules check` reports such rules with their file.
            log.error("rules_not_compiled", rules=list(self.ids), reason=str(exc))
            fn = _no_match
        self.table[self.k] = fn
        return fn(event, hits)


def _no_match(event: dict[str, Any], hits: list[Any]) -> Any:
    return hits


def _block_lines(
    members: list[tuple[int, Any, CompiledRule]], namespace: dict[str, Any]
) -> list[str]:
    """Statements evaluating ``members`` (rule index, rule object, code) on event ``E``."""
    body: list[str] = []
    if any(c.keywords for _, _, c in members):
        body.append("    KW = _Keywords(E)")
    # Guard each rule by the required field most rules share, so one presence
    # test skips a whole block when the event lacks that field.
    counts: Counter[str] = Counter()
    for _, _, c in members:
        counts.update(c.required)
    blocks: dict[str | None, list[tuple[int, Any, CompiledRule]]] = {}
    for i, obj, c in members:
        guard = max(c.required, key=lambda f: (counts[f], f)) if c.required else None
        blocks.setdefault(guard, []).append((i, obj, c))
    for guard, block in blocks.items():
        fields: dict[str, set[str]] = {}
        for _, _, c in block:
            for f, forms in c.forms.items():
                fields.setdefault(f, set()).update(forms)
        names = {f: str(k) for k, f in enumerate(sorted(fields))}
        indent = "    "
        if guard is not None:
            fields.setdefault(guard, set()).add("r")
            names.setdefault(guard, str(len(names)))
            body.extend(_fetch(f"r{names[guard]}", guard, "    "))
            body.append(f"    if r{names[guard]} is not None:")
            indent = "        "
        for f in sorted(fields):
            n = names[f]
            if f != guard:
                body.extend(_fetch(f"r{n}", f, indent))
            if "l" in fields[f]:
                body.append(
                    f"{indent}l{n} = r{n}.lower() if r{n}.__class__ is str else str(r{n}) if r{n}"
                    f".__class__ is int else (None if r{n} is None else _lower(r{n}))"
                )
            if "s" in fields[f]:
                body.append(f"{indent}s{n} = r{n} if r{n}.__class__ is str else _text(r{n})")
            if "a" in fields[f]:
                index = _address_index(f, block, namespace)
                body.append(f"{indent}a{n} = 0 if r{n} is None else {index}(r{n})")
        tests: list[tuple[str, list[str]]] = []
        notes: dict[str, list[str]] = {}
        for i, obj, c in block:
            conjuncts = []
            for expr in c.conjuncts or (c.expr,):
                for f in c.forms:
                    for form in c.forms[f]:
                        expr = expr.replace(f"\0{form}:{f}\0", f"{form}{names[f]}")
                conjuncts.append(expr)
            rule_name = f"_R{i}"
            namespace[rule_name] = obj
            tests.append((rule_name, conjuncts))
            notes[rule_name] = rule_note(obj, i)
            for k, v in c.consts.items():
                if isinstance(v, AddressSet):
                    namespace[k] = _address_bit(namespace, k)
                    continue
                if isinstance(v, LazyPredicate):
                    known = namespace.get(k)
                    if isinstance(known, LazyPredicate) and known.source != v.source:
                        raise ValueError(f"two predicates named {k}")
                    v.namespace = namespace
                namespace[k] = v
        body.extend(_shared_tests(tests, indent, 0, notes))
    return body


def _address_bit(namespace: dict[str, Any], name: str) -> int:
    """The bit standing for address set ``name`` in this group's address masks."""
    bits: dict[str, int] = namespace.setdefault("_ADDRESS_BITS", {})
    return bits.setdefault(name, 1 << len(bits))


def _address_index(
    fieldname: str, block: list[tuple[int, Any, CompiledRule]], namespace: dict[str, Any]
) -> str:
    """Name of the ``AddressIndex.mask`` of every address set the block tests on a field."""
    sets: dict[str, AddressSet] = {}
    for _, _, c in block:
        for name in c.addresses.get(fieldname, ()):
            sets[name] = c.consts[name]
    index = AddressIndex((aset, _address_bit(namespace, n)) for n, aset in sorted(sets.items()))
    count = namespace["_ADDRESS_INDEXES"] = namespace.get("_ADDRESS_INDEXES", 0) + 1
    name = f"_AIX{count}"
    namespace[name] = index.mask
    return name


# Nesting limit for shared tests: the tokenizer allows 100 indentation levels.
_SHARE_DEPTH = 8


def _shared_tests(
    tests: list[tuple[str, list[str]]],
    indent: str,
    depth: int,
    notes: dict[str, list[str]] | None = None,
) -> list[str]:
    """``if`` statements appending each rule (name, tests that must all hold) whose
    tests hold, in order; a test that consecutive rules share runs once for them.
    ``notes`` (rule name -> comment lines) come before each rule's own test.

    Tests are pure and each checks its own operand types, so evaluating a
    shared one first, once, changes no result; the rules keep their order.
    """
    notes = notes or {}
    out: list[str] = []
    p = 0
    while p < len(tests):
        name, conjuncts = tests[p]
        shared, end = None, p + 1
        if depth < _SHARE_DEPTH:
            for test in conjuncts:
                stop = p + 1
                while stop < len(tests) and test in tests[stop][1]:
                    stop += 1
                if stop > end:
                    shared, end = test, stop
        if shared is None:
            out.extend(f"{indent}{note}" for note in notes.get(name, ()))
            if conjuncts:
                out.append(f"{indent}if {' and '.join(conjuncts)}:")
                out.append(f"{indent}    hits.append({name})")
            else:
                out.append(f"{indent}hits.append({name})")
            p += 1
            continue
        out.append(f"{indent}if {shared}:")
        rest = [(n, [t for t in cs if t != shared]) for n, cs in tests[p:end]]
        out.extend(_shared_tests(rest, indent + "    ", depth + 1, notes))
        p = end
    return out
