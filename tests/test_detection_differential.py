"""Differential and property tests: our matcher against pySigma's SQLite backend.

For generated rules and events, the set of matching events must equal what
the SQLite query selects from the same events. Where SQLite departs from the
specification, the specification decides and the generators stay clear:
- SQL NOT over NULL is NULL (no match); Sigma's ``not`` over a missing field
  is true, so generated events always carry every field;
- SQLite ``LIKE``/``NOCASE`` fold ASCII only; Sigma is case-insensitive for
  all letters (tested in test_detection.py), so generated text is ASCII;
- SQLite ``=`` compares 5 and '5' as different; Sigma compares numbers
  numerically, so numeric fields hold integers only;
- ``exists`` is true for a present null in Sigma (SQLite: IS NOT NULL);
  comparisons never match non-numeric text (SQLite orders text above
  numbers); ``cidr`` uses IP semantics (SQLite: string prefixes). These are
  covered by example tests in test_detection.py instead.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from correlator.detection import rules_from_yaml
from correlator.detection.runtime import wildcard_seq

sqlite_backend = __import__("sigma.backends.sqlite", fromlist=["sqliteBackend"])

ALPHABET = "abAB_%.x"
TEXT = st.text(alphabet=ALPHABET, max_size=5)
PATTERN = st.text(alphabet=ALPHABET + "*?", max_size=4)
FIELDS = ("a", "b")

events_strategy = st.lists(
    st.fixed_dictionaries({"a": TEXT, "b": TEXT, "n": st.integers(0, 10)}), min_size=1, max_size=12
)


@st.composite
def selection(draw: st.DrawFn) -> dict[str, Any]:
    items: dict[str, Any] = {}
    for _ in range(draw(st.integers(1, 2))):
        if draw(st.booleans()):
            field = draw(st.sampled_from(FIELDS))
            mod = draw(st.sampled_from(["", "|contains", "|startswith", "|endswith"]))
            values = draw(st.lists(PATTERN, min_size=1, max_size=3))
            if len(values) > 1 and draw(st.booleans()):
                mod += "|all"
            items[field + mod] = values if len(values) > 1 else values[0]
        else:
            mod = draw(st.sampled_from(["", "|gt", "|gte", "|lt", "|lte"]))
            items["n" + mod] = draw(st.integers(0, 10))
    return items


@st.composite
def rule_strategy(draw: st.DrawFn) -> str:
    detection = {"sel1": draw(selection()), "sel2": draw(selection())}
    detection["condition"] = draw(
        st.sampled_from(
            [
                "sel1",
                "sel1 and sel2",
                "sel1 or sel2",
                "sel1 and not sel2",
                "not sel1",
                "1 of sel*",
                "all of sel*",
            ]
        )
    )
    rule = {"title": "generated", "logsource": {"category": "test"}, "detection": detection}
    return yaml.safe_dump(rule, sort_keys=False)


def _sqlite_matches(rule_text: str, events: list[dict[str, Any]]) -> set[int]:
    from sigma.collection import SigmaCollection

    (query,) = sqlite_backend.sqliteBackend().convert(SigmaCollection.from_yaml(rule_text))
    db = sqlite3.connect(":memory:")
    db.create_function("REGEXP", 2, lambda p, v: v is not None and re.search(p, str(v)) is not None)
    db.execute(
        "CREATE TABLE logs (row_id INTEGER, a TEXT COLLATE NOCASE, "
        "b TEXT COLLATE NOCASE, n INTEGER)"
    )
    db.executemany(
        "INSERT INTO logs VALUES (?, ?, ?, ?)",
        [(i, e["a"], e["b"], e["n"]) for i, e in enumerate(events)],
    )
    rows = db.execute(query.replace("SELECT *", "SELECT row_id", 1)).fetchall()
    return {r[0] for r in rows}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule_strategy(), events_strategy)
def test_match_set_equals_pysigma_sqlite(rule_text: str, events: list[dict[str, Any]]) -> None:
    rs = rules_from_yaml(rule_text, pipeline="none")
    assert rs.errors == []
    ours = {i for i, e in enumerate(events) if rs.match(e)}
    assert ours == _sqlite_matches(rule_text, events), rule_text


def _reference_wildcard(pattern: str, value: str) -> bool:
    """Independent reading of Sigma wildcards: * any run, ? one char, \\ escapes."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern) and pattern[i + 1] in "*?\\":
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "*" else "." if c == "?" else re.escape(c))
        i += 1
    return re.fullmatch("".join(out), value, re.S | re.I) is not None


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab*?\\.", max_size=6), st.text(alphabet="ab*?\\.AB", max_size=6))
def test_wildcards_and_escapes_follow_the_spec(pattern: str, value: str) -> None:
    rule = yaml.safe_dump(
        {
            "title": "w",
            "logsource": {"product": "x"},
            "detection": {"sel": {"f": pattern}, "condition": "sel"},
        }
    )
    rs = rules_from_yaml(rule, pipeline="none")
    assert rs.errors == []
    assert bool(rs.match({"f": value})) == _reference_wildcard(pattern, value)


@given(
    st.text(max_size=8),
    st.lists(st.text(min_size=1, max_size=3), min_size=1, max_size=4),
    st.booleans(),
    st.booleans(),
)
def test_wildcard_sequence_equals_regex(
    value: str, parts: list[str], start: bool, end: bool
) -> None:
    regex = ("" if start else ".*") + ".*".join(map(re.escape, parts)) + ("" if end else ".*")
    expected = re.fullmatch(regex, value, re.S) is not None
    assert wildcard_seq(value, tuple(parts), start, end) == expected


@given(
    st.integers(-1000, 1000),
    st.integers(-1000, 1000),
    st.sampled_from(["lt", "lte", "gt", "gte"]),
    st.booleans(),
)
def test_comparisons_on_numbers_and_numeric_strings(
    limit: int, value: int, op: str, as_text: bool
) -> None:
    rule = yaml.safe_dump(
        {
            "title": "c",
            "logsource": {"product": "x"},
            "detection": {"sel": {f"n|{op}": limit}, "condition": "sel"},
        }
    )
    rs = rules_from_yaml(rule, pipeline="none")
    expected = {
        "lt": value < limit,
        "lte": value <= limit,
        "gt": value > limit,
        "gte": value >= limit,
    }[op]
    assert bool(rs.match({"n": str(value) if as_text else value})) == expected
