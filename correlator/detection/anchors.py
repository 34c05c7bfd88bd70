"""Anchors: literals a rule needs, so the prefilter can skip rules an event cannot match.

An anchor is a set of lowered literals of which every event matching the
rule contains at least one, in the lowered text of the named fields (or of
any string, for keywords). It is derived from pySigma's condition tree:

- a string value needs its longest literal run (``*evil*.exe`` needs ``evil``);
- a regular expression needs the literals its syntax makes mandatory;
- AND needs what any one child needs (the child with the best anchor);
- OR needs what one of its children needs (the union of all children's
  anchors, or nothing if a child has none);
- NOT, numbers, null, exists, CIDR, times and field references need nothing.

Soundness is what matters: an anchor may be weaker than the rule (the rule
then runs and decides), never stronger.
"""

from __future__ import annotations

import re._constants as sre_constants
import re._parser as sre_parse
from dataclasses import dataclass
from typing import Any

from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.types import (
    SigmaBool,
    SigmaCasedString,
    SigmaExpansion,
    SigmaRegularExpression,
    SigmaRegularExpressionFlag,
    SigmaString,
    SpecialChars,
)

from correlator.detection.kinds import NUMBERS, STRINGS, kind
from correlator.detection.prefilter import MIN_LITERAL


@dataclass(frozen=True)
class Anchor:
    """What every event matching a rule has: one of ``literals`` inside the lowered
    text of ``fields`` (any string of the event when ``everywhere``: a keyword
    contributed), or one of the ``exact`` (field, lowered whole value) pairs.
    """

    literals: frozenset[str]
    fields: frozenset[str]
    everywhere: bool = False
    exact: frozenset[tuple[str, str]] = frozenset()

    def score(self) -> tuple[int, bool, int, int]:
        # Longer literals are rarer in traffic; an anchor is as weak as its
        # weakest atom. A whole value is rarer than the same text as a substring.
        # Past 8 characters any atom is rare enough, and a field-bound anchor
        # wins: a keyword one makes every string of the event part of the
        # haystack. Fewer atoms break ties.
        strengths = [len(lit) for lit in self.literals] + [len(v) + 4 for _, v in self.exact]
        shortest = min(strengths)
        return (min(shortest, 8), not self.everywhere, shortest, -len(strengths))


def _union(parts: list[Anchor | None]) -> Anchor | None:
    if not parts or any(p is None for p in parts):
        return None
    if len(parts) == 1:
        return parts[0]
    found = [p for p in parts if p is not None]
    return Anchor(
        frozenset().union(*(p.literals for p in found)),
        frozenset().union(*(p.fields for p in found)),
        any(p.everywhere for p in found),
        frozenset().union(*(p.exact for p in found)),
    )


def anchor(node: Any) -> Anchor | None:
    """An ``Anchor`` for a pySigma condition tree, or None when no literal is required."""
    k = kind(node)
    if k is ConditionAND:
        found = [a for a in map(anchor, (x for x in node.args if x is not None)) if a is not None]
        return max(found, key=Anchor.score, default=None)
    if k is ConditionOR:
        return _union([anchor(a) for a in node.args if a is not None])
    if k is ConditionFieldEqualsValueExpression:
        return value_anchor(node.field, node.value)
    if k is ConditionValueExpression:
        return value_anchor(None, node.value)
    return None


def any_of(anchors: list[Anchor | None]) -> Anchor | None:
    """The anchor of several alternative conditions (a rule's condition list)."""
    return _union(anchors)


def value_anchor(fieldname: str | None, value: Any) -> Anchor | None:
    """The anchor of ``field: value`` (``fieldname`` None: a keyword)."""
    k = kind(value)
    if k is SigmaExpansion:
        return _union([value_anchor(fieldname, v) for v in value.values])
    # The same conversions as the matcher's (compiler ``leaf`` and ``keyword``).
    if fieldname is None and (k is SigmaBool or k in NUMBERS):
        value, k = SigmaString(str(value).lower()), SigmaString
    elif k is SigmaBool:
        value, k = SigmaString("true" if value.boolean else "false"), SigmaString
    literals: frozenset[str] | None
    if k in STRINGS and fieldname is not None:
        whole = _whole_value(value, k is SigmaCasedString)
        if whole is not None:
            return Anchor(frozenset(), frozenset(), exact=frozenset({(fieldname, whole)}))
    if k in STRINGS:
        piece = _best_piece(value, k is SigmaCasedString)
        literals = None if piece is None else frozenset({piece})
    elif k is SigmaRegularExpression:
        literals = regex_literals(
            value.regexp.to_plain() if hasattr(value.regexp, "to_plain") else str(value),
            SigmaRegularExpressionFlag.IGNORECASE in value.flags,
        )
    else:
        return None  # numbers, null, exists, cidr, times, fieldref
    if literals is None:
        return None
    if fieldname is None:
        return Anchor(literals, frozenset(), everywhere=True)
    return Anchor(literals, frozenset({fieldname}))


def _whole_value(value: SigmaString, cased: bool) -> str | None:
    """The lowered value an equality (no wildcard) compares with, else None."""
    if not all(isinstance(part, str) for part in value.s):
        return None
    if cased:
        # raw == literal implies raw.lower() == literal.lower(), for any letters.
        return "".join(value.s).lower()  # type: ignore[arg-type]
    return "".join(part.lower() for part in value.s)  # type: ignore[union-attr]


def _best_piece(value: SigmaString, cased: bool) -> str | None:
    """The longest literal run of a pattern (lowered as the matcher compares it)."""
    pieces: list[str] = []
    current = ""
    for part in value.s:
        if isinstance(part, str):
            # Lowered part by part, exactly as the matcher spells its literals.
            current += part if cased else part.lower()
        elif isinstance(part, SpecialChars):
            pieces.append(current)
            current = ""
        else:  # a placeholder: its values are unknown here
            return None
    pieces.append(current)
    if cased:
        # A cased literal is searched in lowered text: exact only for ASCII.
        candidates = [p.lower() for p in pieces if p.isascii()]
    else:
        candidates = pieces
    best = max(candidates, key=len, default="")
    return best if len(best) >= MIN_LITERAL else None


# -- regular expressions ------------------------------------------------------

_IGNORECASE = sre_constants.SRE_FLAG_IGNORECASE
_LITERAL = sre_constants.LITERAL
_SUBPATTERN = sre_constants.SUBPATTERN
_BRANCH = sre_constants.BRANCH
_REPEATS = (
    sre_constants.MAX_REPEAT,
    sre_constants.MIN_REPEAT,
    getattr(sre_constants, "POSSESSIVE_REPEAT", sre_constants.MAX_REPEAT),
)


def regex_literals(pattern: str, ignorecase: bool) -> frozenset[str] | None:
    """Lowered literals one of which every text ``pattern`` finds a match in contains.

    Python's own regex parser reads the pattern; RE2 (which runs it) shares
    its syntax for everything this looks at. Where the two could disagree
    (POSIX classes, which Python reads as plain brackets) no literal is given.
    """
    if "[:" in pattern:
        return None
    try:
        parsed = sre_parse.parse(pattern)
    except Exception:  # RE2-only syntax (\pN, \z...): no literal, not an error
        return None
    folded = ignorecase or bool(parsed.state.flags & _IGNORECASE)
    return _best(_candidates(list(parsed), folded))


def _best(candidates: list[frozenset[str]]) -> frozenset[str] | None:
    good = [c for c in candidates if c and min(map(len, c)) >= MIN_LITERAL]
    return max(good, key=lambda c: (min(map(len, c)), -len(c)), default=None)


def _candidates(items: list[tuple[Any, Any]], folded: bool) -> list[frozenset[str]]:
    """Literal sets a sequence of regex nodes requires (each set: one of them)."""
    out: list[frozenset[str]] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            out.append(frozenset({"".join(run)}))
            run.clear()

    for op, arg in items:
        if op is _LITERAL:
            char = chr(arg)
            # Only ASCII lowers the same in Python and RE2; under case folding
            # RE2 also matches U+017F for "s", which lower() keeps apart.
            if not char.isascii() or (folded and char in "sS"):
                flush()
            else:
                run.append(char.lower())
            continue
        flush()
        if op is _SUBPATTERN:
            # (?i:...) folds case inside; (?-i:...) is treated as folded too
            # (only ever weaker).
            out.extend(_candidates(list(arg[-1]), folded or bool(arg[1] & _IGNORECASE)))
        elif op in _REPEATS:
            low, _high, body = arg
            if low >= 1:
                out.extend(_candidates(list(body), folded))
        elif op is _BRANCH:
            branches = [_best(_candidates(list(b), folded)) for b in arg[1]]
            if branches and all(b is not None for b in branches):
                out.append(frozenset().union(*(b for b in branches if b is not None)))
        # anything else (classes, any, anchors, groups refs) needs no literal
    flush()
    return out
