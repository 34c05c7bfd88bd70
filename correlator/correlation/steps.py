"""How the engine evaluates each rule: its window class (``window_factory``),
its ``Mode`` and, for metric rules, a generated step that adds one record to
a metric window and tests the rule's threshold (event_count and the value_*
types; temporal rules have their own path in the engine).

A step does what ``window.add(...)`` and ``rule.check(metric)`` do together,
with the common case inline: the record arrives in time order and nothing
leaves the window. Anything else (a record out of order, records expiring)
goes through the window's ``add``. One generated call per event and rule
instead of two generic ones, with the threshold as a literal comparison,
was the cheapest form measured (bench/bench_correlation.py).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from correlator.correlation.compiled import TEMPORAL_TYPES, CompiledCorrelation
from correlator.correlation.records import Mode, Rec, T
from correlator.correlation.windows import (
    AvgWindow,
    CountWindow,
    DistinctWindow,
    QuantileWindow,
    SumWindow,
    TemporalWindow,
)
from zonewatch import pysource

Step = Callable[[Any, Rec, float, Any], bool]
# What the hot path reads per rule: (span, check, mode, step or None)
Spec = tuple[float, Callable[[Any], bool], Mode, Step | None]


def window_factory(c: CompiledCorrelation) -> Callable[[], Any]:
    """A new (empty) window of the rule's kind."""
    n = len(c.slots)
    if c.type == "event_count":
        return CountWindow
    if c.type == "value_count":
        return DistinctWindow
    if c.type == "value_sum":
        return SumWindow
    if c.type == "value_avg":
        return AvgWindow
    if c.type in ("value_percentile", "value_median"):
        p = c.percentile if c.percentile is not None else 50.0
        return lambda: QuantileWindow(p)
    if c.type in TEMPORAL_TYPES:
        # partial: a C call, where a lambda costs a Python frame per new group
        if not c.ordered:
            return partial(TemporalWindow, n, None)
        if c.clauses is None:
            return partial(TemporalWindow, n, [n])
        sizes = [len(cl.pos) for cl in c.clauses]
        return partial(TemporalWindow, n, sizes)
    raise ValueError(f"unknown correlation type {c.type}")


def mode(c: CompiledCorrelation) -> Mode:
    if not c.temporal:
        return Mode.METRIC
    return Mode.TEMPORAL_PLAIN if not c.ordered and c.clauses is None else Mode.TEMPORAL


def spec(c: CompiledCorrelation, kind: type) -> Spec:
    m = mode(c)
    return (c.span, c.check, m, step_function(c, kind) if m is Mode.METRIC else None)


# What the inline branch does per window kind (``recs`` is ``st.recs``); it
# sets ``m`` to the metric exactly as the kind's ``add`` would return it.
_INLINE: dict[type, list[str]] = {
    CountWindow: [
        "recs.append(rec)",
        "m = len(recs)",
    ],
    DistinctWindow: [
        "recs.append(rec)",
        "st.vals.append(value)",
        "counts = st.counts",
        "counts[value] = counts.get(value, 0) + 1",
        "m = len(counts)",
    ],
    SumWindow: [
        "recs.append(rec)",
        "st.vals.append(value)",
        "st.total += value",
        "m = st.total",
    ],
}


def step_function(rule: CompiledCorrelation, kind: type) -> Step:
    """``step(window, rec, t, value) -> bool``: the record added; does the rule hold?"""
    span = repr(float(rule.span))
    test = rule.threshold.expression("m") if rule.threshold is not None else "False"
    inline = _INLINE.get(kind)
    if inline is None:  # value_avg, percentiles: the window's add does it all
        body = [f"    m = st.add(rec, t, value, {span})"]
    else:
        body = [
            "    recs = st.recs",
            f"    if recs and (recs[0][{T}] < t - {span} or recs[-1][{T}] > t):",
            f"        m = st.add(rec, t, value, {span})",
            "    else:",
            *(f"        {line}" for line in inline),
            "        if t > st.last_t:",
            "            st.last_t = t",
        ]
    source = "\n".join(["def step(st, rec, t, value):", *body, f"    return {test}", ""])
    namespace: dict[str, Any] = {}
    filename = pysource.unique_name(f"correlation step {rule.id}")
    exec(pysource.compile_source(source, filename), namespace)  # tracebacks show the line
    fn: Step = namespace["step"]
    pysource.forget_with(fn, filename)
    return fn
