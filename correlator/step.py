"""One event's step, the same in every mode: detection hits -> alerts and correlation items (pure).

The stream loop, the scale-out loop, ``zonewatch match`` and ``zonewatch
hunt`` all run it: a rule that generates alerts raises one per matching event
(base rules of a correlation raise none of their own unless a correlation
says ``generate: true``, Sigma spec), and the rules some correlation reads
are handed on, by id, to whichever correlation stage runs (local merge and
engine, the shards of a scale-out group, or the offline engine).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

from zonewatch.models import Alert, Evidence

MakeAlert = Callable[[Any, Evidence], Alert]


def alerts_of(
    hits: Sequence[Any], evidence: Evidence | Callable[[], Evidence], make_alert: MakeAlert
) -> list[Alert]:
    """The alerts of the rules in ``hits`` that generate them. ``evidence``
    may be a function, called once and only when some rule generates: most
    events match nothing, and building evidence can cost more than matching."""
    out: list[Alert] = []
    built = evidence if isinstance(evidence, Evidence) else None
    for rule in hits:
        if rule.generate:
            if built is None:
                built = evidence()  # type: ignore[operator]
            out.append(make_alert(rule, built))
    return out


def correlated_ids(hits: Sequence[Any], correlated: Collection[str]) -> list[str]:
    """The ids of the rules in ``hits`` some correlation reads, in hit order."""
    if not correlated:
        return []
    return [rule.id for rule in hits if rule.id in correlated]


def step(
    hits: Sequence[Any],
    evidence: Evidence | Callable[[], Evidence],
    make_alert: MakeAlert,
    correlated: Collection[str],
) -> tuple[list[Alert], list[str]]:
    """Detection alerts of one event and the correlation rule ids it feeds."""
    return alerts_of(hits, evidence, make_alert), correlated_ids(hits, correlated)
