"""Generated per-rule steps: add one record to a metric window and test the
rule's threshold (event_count and the value_* types; temporal rules have
their own path in the engine).

A step does what ``window.add(...)`` and ``rule.check(metric)`` do together,
with the common case inline: the record arrives in time order and nothing
leaves the window. Anything else (a record out of order, records expiring)
goes through the window's ``add``. One generated call per event and rule
instead of two generic ones, with the threshold as a literal comparison,
was the cheapest form measured (bench/bench_correlation.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from correlator.correlation.compiled import CompiledCorrelation
from correlator.correlation.windows import CountWindow, DistinctWindow, Rec, SumWindow
from zonewatch import pysource

Step = Callable[[Any, Rec, float, Any], bool]

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
            f"    if recs and (recs[0][1] < t - {span} or recs[-1][1] > t):",
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
