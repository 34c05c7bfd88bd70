"""From a detection hit to what each correlation reading it needs (pure).

For every detection rule some correlation refers to, ``Routing`` builds one
generated function (``extract``) that reads from an event each group key
once and then each member correlation's value and carried fields, as the
contributions (``records.Contrib``) the engine applies. It also answers the
scale-out's question: under which keys would this event be filed
(``group_keys``), with the rules that must stay on one shard filed under
``PIN_KEY`` (``pinned_rules``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from correlator.correlation.compiled import NUMERIC_TYPES, CompiledCorrelation, Slot
from correlator.correlation.fields import (
    NAMESPACE,
    Getter,
    getter,
    key_getter,
    key_lines,
    norm,
    number,
    value_getter,
    value_lines,
)
from correlator.correlation.records import Contrib

# Per (rule, slot): readers of the group key, the value and the carried fields.
Readers = tuple[Getter, Getter | None, tuple[tuple[str, Getter], ...]]
# A correlation fed by a route: (rule index, slot index, value reader, carry)
Member = tuple[int, int, Getter | None, tuple[tuple[str, Getter], ...]]
# Correlations grouping by the same fields: (fields, key reader, members)
Route = tuple[tuple[str, ...], Getter, list[Member]]
Extract = Callable[[dict[str, Any], Any, Callable[[tuple[Any, ...]], bool] | None], list[Contrib]]

# The shard key of pinned rules (see ``pinned_rules``). It only picks a
# shard: a group key that happened to equal it would just share that shard.
PIN_KEY: tuple[Any, ...] = ("\x00pinned",)


def readers(rule: CompiledCorrelation, slot: Slot) -> Readers:
    read_value = (
        value_getter(slot.value_fields, numeric=rule.type in NUMERIC_TYPES)
        if slot.value_fields
        else None
    )
    carry = tuple((name, getter(name)) for name in rule.carry)
    return key_getter(slot.group_fields), read_value, carry


def pinned_rules(rules: Sequence[CompiledCorrelation]) -> frozenset[int]:
    """Rules a repartitioned correlator must keep on one shard.

    A child correlation feeds its parent in the engine of the shard where
    the child's group lives. When the parent groups by other fields than its
    child, a parent group would need children from many shards; so every
    rule connected (through chains, in either direction) to such a link is
    filed under ``PIN_KEY`` instead of its group key: one shard sees them all.
    """
    by_id = {c.id: c for c in rules}
    root = list(range(len(rules)))

    def find(i: int) -> int:
        while root[i] != i:
            root[i] = root[root[i]]
            i = root[i]
        return i

    misaligned: set[int] = set()
    for parent in rules:
        for slot in parent.slots:
            if slot.is_correlation:
                child = by_id[slot.rule_id]
                root[find(parent.index)] = find(child.index)
                if tuple(slot.group_fields) != tuple(child.group_by):
                    misaligned.add(parent.index)
    components = {find(i) for i in misaligned}
    return frozenset(c.index for c in rules if find(c.index) in components)


def extractor(
    route: list[Route], rules: Sequence[CompiledCorrelation], pinned: frozenset[int]
) -> Extract:
    """One function reading everything the correlations fed by a detection
    rule need from an event: each group key once, then each member's value
    and carried fields, as the contributions ``_apply`` takes. Generated,
    because looping over routes and members per event cost more than the
    reads themselves; the key and single-field values are read inline, as
    ``key_getter`` and ``value_getter`` would. ``accept_key`` (scale-out)
    is asked about the group key, or about ``PIN_KEY`` for pinned rules."""
    names: dict[str, Any] = {
        **NAMESPACE,  # the field readers' names (zonewatch.fieldpath)
        "norm": norm,
        "number": number,
        "PIN_KEY": PIN_KEY,
    }
    lines = ["def extract(event, stats, accept_key):", "    out = []"]
    for k, (fields, _read_key, members) in enumerate(route):
        lines += [
            *key_lines(fields, "    "),
            "    if key is None:",
            f"        stats.missing_group_field += {len(members)}",
        ]
        pins = [ri in pinned for ri, _, _, _ in members]
        if not any(pins):
            lines.append("    elif accept_key is None or accept_key(key):")
        else:  # members ask by their own key, in the members' order
            lines.append("    else:")
            if not all(pins):
                lines.append("        free = accept_key is None or accept_key(key)")
            lines.append("        pin = accept_key is None or accept_key(PIN_KEY)")
        for m, (ri, s, read_value, carry) in enumerate(members):
            ind = "        "
            if any(pins):
                lines.append(f"        if {'pin' if pins[m] else 'free'}:")
                ind = "            "
            tag = f"{k}_{m}"
            if carry:
                for c, (_, g) in enumerate(carry):
                    names[f"carry{tag}_{c}"] = g
                items = ", ".join(f"{f!r}: carry{tag}_{c}(event)" for c, (f, _) in enumerate(carry))
                carried = "{" + items + "}"
            else:
                carried = "None"
            if read_value is None:
                lines.append(f"{ind}out.append(({ri}, {s}, key, None, {carried}))")
            else:
                slot = rules[ri].slots[s]
                inline = value_lines(slot.value_fields, rules[ri].type in NUMERIC_TYPES, ind)
                if inline is None:
                    names[f"value{tag}"] = read_value
                    inline = [f"{ind}value = value{tag}(event)"]
                lines += [
                    *inline,
                    f"{ind}if value is None:",
                    f"{ind}    stats.missing_value += 1",
                    f"{ind}else:",
                    f"{ind}    out.append(({ri}, {s}, key, value, {carried}))",
                ]
    lines.append("    return out")
    exec(compile("\n".join(lines) + "\n", "<correlation extract>", "exec"), names)
    fn: Extract = names["extract"]
    return fn


class Routing:
    """Readers per (rule, slot), the extractor per detection rule id, and the
    shard keys per detection rule id (scale-out)."""

    def __init__(self, rules: Sequence[CompiledCorrelation]) -> None:
        self.readers: list[list[Readers]] = [[readers(c, slot) for slot in c.slots] for c in rules]
        # detection rule id -> what every correlation reading it extracts
        routes: dict[str, list[Route]] = {}
        for c in rules:
            for s, slot in enumerate(c.slots):
                if not slot.is_correlation:
                    read_key, read_value, carry = self.readers[c.index][s]
                    route = routes.setdefault(slot.rule_id, [])
                    # Rules grouping by the same fields read the key once and
                    # share the tuple (and its memory).
                    for fields, _, members in route:
                        if fields == slot.group_fields:
                            members.append((c.index, s, read_value, carry))
                            break
                    else:
                        route.append(
                            (slot.group_fields, read_key, [(c.index, s, read_value, carry)])
                        )
        self.pinned = pinned_rules(rules)
        self.extract: dict[str, Extract] = {
            rid: extractor(route, rules, self.pinned) for rid, route in routes.items()
        }
        # detection rule id -> per group key reader: does it file any unpinned
        # rule under the group key, any pinned one under PIN_KEY
        self._shard_keys: dict[str, list[tuple[Getter, bool, bool]]] = {
            rid: [
                (
                    read_key,
                    any(m[0] not in self.pinned for m in members),
                    any(m[0] in self.pinned for m in members),
                )
                for _, read_key, members in route
            ]
            for rid, route in routes.items()
        }

    def group_keys(self, hits: Iterable[str], event: dict[str, Any]) -> set[tuple[Any, ...]]:
        """The group keys (after aliases, normalized) under which the
        correlations reading these detection hits would file ``event``: what a
        repartitioned correlator hashes to pick the shard of each group.
        Pinned rules (``pinned_rules``) file it under ``PIN_KEY``."""
        keys: set[tuple[Any, ...]] = set()
        for hit in hits:
            for read_key, free, pin in self._shard_keys.get(hit, ()):
                key = read_key(event)
                if key is not None:
                    if free:
                        keys.add(key)
                    if pin:
                        keys.add(PIN_KEY)
        return keys
