"""Which pySigma class a condition node or value dispatches as, answered from a cache.

pySigma's classes derive from ``abc.ABC``: every failed ``isinstance`` on
them goes through ``ABCMeta.__instancecheck__`` (~0.4 us). The compiler asks
up to a dozen such questions per node of 3,800 rules; one dictionary lookup
per node answers them all.
"""

from __future__ import annotations

from typing import Any

from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionNOT,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.types import (
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
    SigmaString,
    SigmaTimestampPart,
)

# Most specific first: a subclass must come before its base.
_ORDER: tuple[type, ...] = (
    ConditionAND,
    ConditionOR,
    ConditionNOT,
    ConditionFieldEqualsValueExpression,
    ConditionValueExpression,
    SigmaExpansion,
    SigmaNull,
    SigmaExists,
    SigmaCasedString,
    SigmaString,
    SigmaBool,
    SigmaTimestampPart,
    SigmaNumber,
    SigmaRegularExpression,
    SigmaCIDRExpression,
    SigmaCompareExpression,
    SigmaFieldReference,
)

_CACHE: dict[type, type | None] = {}

STRINGS = (SigmaString, SigmaCasedString)
NUMBERS = (SigmaNumber, SigmaTimestampPart)


def kind(obj: Any) -> type | None:
    """The first class of ``_ORDER`` that ``obj`` is an instance of (None: none)."""
    cls = obj.__class__
    try:
        return _CACHE[cls]
    except KeyError:
        found = next((c for c in _ORDER if isinstance(obj, c)), None)
        _CACHE[cls] = found
        return found
