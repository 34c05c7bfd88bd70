"""Which rules an event can possibly match, from the literals it contains.

Most Sigma rules need some literal text in the event: ``c-uri|contains:
/cgi-bin/luci`` cannot match an event whose URL lacks ``/cgi-bin/luci``. The
compiler gives each such rule an *anchor*: a set of lowered literals of which
every matching event contains at least one (see ``compiler.anchor``). At match
time one multi-literal search over the event's text (the "haystack") finds
the literals present; only the rules anchored on them run.

The search is exact for "occurs as a substring"; a literal found in another
field than the one the rule reads only wakes the rule needlessly (the rule
itself then decides), so the haystack may join several fields.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import re2

# Up to this many literals, plain ``in`` tests beat one RE2 call (~1.5 us of
# binding overhead whatever the number of literals).
_SMALL = 12
# Literals shorter than this match nearly every event: a rule anchored on one
# would run anyway, and is cheaper inline with the unanchored rules.
MIN_LITERAL = 3


def _encode(text: str) -> bytes:
    # surrogatepass: JSON may carry lone surrogates; they never match a literal.
    return text.encode("utf-8", "surrogatepass")


class LiteralIndex:
    """Maps literals to targets; ``find(text)`` returns the targets of every literal
    occurring in ``text``, each once, in target order.

    ``targets[i]`` are the (sortable, hashable) targets of ``literals[i]``.
    """

    __slots__ = ("_literals", "_match", "_single", "_targets", "find")

    def __init__(self, literals: Sequence[str], targets: Sequence[Sequence[Any]]):
        if len(literals) != len(targets):
            raise ValueError("one target list per literal")
        self._literals = tuple(literals)
        self._targets = tuple(tuple(sorted(set(t))) for t in targets)
        self._match: Callable[[bytes], list[int]] | None = None
        if len(self._literals) > _SMALL:
            options = re2.Options()
            options.literal = True  # no escaping: every pattern is plain text
            options.log_errors = False
            # Byte semantics: UTF-8 of a literal occurs in UTF-8 of a text exactly
            # when the literal occurs in the text.
            options.encoding = re2.Options.Encoding.LATIN1
            # Room for the DFA of thousands of literals; RE2 reports no match
            # rather than an error if it ever runs out, so be generous.
            options.max_mem = 256 << 20
            matcher = re2.Set.SearchSet(options)
            for lit in self._literals:
                matcher.Add(_encode(lit))
            matcher.Compile()
            self._match = matcher._set.Match  # the wrapper adds ~1 us per call
            self.find = self._find_set
        else:
            self._single = tuple(zip(self._literals, self._targets, strict=True))
            self.find = self._find_loop

    def __len__(self) -> int:
        return len(self._literals)

    def _find_loop(self, text: str) -> Sequence[Any]:
        found: Sequence[Any] = ()
        for lit, targets in self._single:
            if lit in text:
                found = targets if not found else (*found, *targets)
        if len(found) > 1:
            return sorted(set(found))
        return found

    def _find_set(self, text: str) -> Sequence[Any]:
        assert self._match is not None
        hits = self._match(_encode(text))
        if not hits:
            return ()
        if len(hits) == 1:
            return self._targets[hits[0]]
        out: set[Any] = set()
        for i in hits:
            out.update(self._targets[i])
        return sorted(out)


def haystack_part(value: Any) -> str:
    """A lowered field value (str, tuple of str for lists, or None) as haystack text."""
    if value.__class__ is str:
        return str(value)
    if value.__class__ is tuple:
        return "\0".join(value)
    return ""


def exact_many(table: dict[str, Sequence[Any]], values: Any) -> Sequence[Any] | None:
    """Targets of a list-valued field's elements in an exact-value table."""
    if values.__class__ is not tuple:
        return None
    found: set[Any] = set()
    for v in values:
        found.update(table.get(v, ()))
    return sorted(found) if found else None


def wake(found: Sequence[Any], more: Sequence[Any]) -> Sequence[Any]:
    """Targets woken by two searches, each once, in order."""
    return sorted(set(found).union(more)) if found else more
