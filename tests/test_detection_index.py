"""The literal index and prefilter: an optimisation must never change what matches.

The main property: for generated rule sets and events, the indexed matcher
(rules grouped by the literals they need, woken by one multi-literal search
per event) fires exactly the rules that evaluating every rule on every event
fires (``index=False``). The parts it relies on are checked on their own:
the multi-literal search and the literals required by regular expressions
(the inline field lookup: tests/test_fieldpath.py).
"""

from __future__ import annotations

from typing import Any

import re2
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from correlator.detection import rules_from_yaml
from correlator.detection.anchors import regex_literals
from correlator.detection.prefilter import LiteralIndex

# Letters whose case mapping differs between str.lower and RE2's case
# folding (long s, Kelvin sign, dotted I, final sigma), next to plain ones.
ALPHABET = "abcsS/.-Kſİσς"
TEXT = st.text(alphabet=ALPHABET, max_size=8)
WORD = st.text(alphabet=ALPHABET, min_size=3, max_size=5)


# -- the whole matcher ----------------------------------------------------------


@st.composite
def regex(draw: st.DrawFn) -> str:
    atoms = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["lit", "lit", "dot", "class", "alt", "group"]))
        if kind == "lit":
            atom = re2.escape(draw(WORD))
        elif kind == "dot":
            atom = "."
        elif kind == "class":
            atom = "[ab]"
        elif kind == "alt":
            atom = (
                "("
                + "|".join(re2.escape(w) for w in draw(st.lists(WORD, min_size=2, max_size=3)))
                + ")"
            )
        else:
            atom = "(?:" + re2.escape(draw(WORD)) + ")"
        atom += draw(st.sampled_from(["", "", "?", "+", "*", "{2}"]))
        atoms.append(atom)
    return draw(st.sampled_from(["", "(?i)"])) + "".join(atoms)


@st.composite
def item(draw: st.DrawFn) -> tuple[str, Any]:
    field = draw(st.sampled_from(["a", "b.c", "d"]))
    mod = draw(
        st.sampled_from(
            [
                "",
                "|contains",
                "|startswith",
                "|endswith",
                "|cased",
                "|contains|cased",
                "|re",
                "|re|i",
            ]
        )
    )
    if mod.startswith("|re"):
        return field + mod, draw(regex())
    values = draw(
        st.lists(st.one_of(WORD, st.builds(lambda w: f"*{w}*", WORD), TEXT), min_size=1, max_size=3)
    )
    if len(values) > 1 and draw(st.booleans()):
        mod += "|all"
    return field + mod, values if len(values) > 1 else values[0]


@st.composite
def rule(draw: st.DrawFn, n: int) -> dict[str, Any]:
    sel1 = dict(draw(st.lists(item(), min_size=1, max_size=3)))
    sel2: Any = dict(draw(st.lists(item(), min_size=1, max_size=2)))
    if draw(st.integers(0, 4)) == 0:
        sel2 = draw(st.lists(WORD, min_size=1, max_size=3))  # keywords
    condition = draw(
        st.sampled_from(["sel1", "sel1 and sel2", "sel1 or sel2", "sel1 and not sel2", "not sel1"])
    )
    return {
        "title": f"r{n}",
        "id": f"00000000-0000-4000-8000-{n:012d}",
        "logsource": {"product": "test"},
        "detection": {"sel1": sel1, "sel2": sel2, "condition": condition},
    }


@st.composite
def event(draw: st.DrawFn) -> dict[str, Any]:
    value = st.one_of(TEXT, st.lists(TEXT, max_size=3), st.integers(0, 99), st.none())
    out: dict[str, Any] = {}
    if draw(st.booleans()):
        out["a"] = draw(value)
    shape = draw(st.sampled_from(["nested", "flat", "none"]))
    if shape == "nested":
        out["b"] = {"c": draw(value)}
    elif shape == "flat":
        out["b.c"] = draw(value)
    if draw(st.booleans()):
        out["d"] = draw(TEXT)
    return out


@st.composite
def rule_set(draw: st.DrawFn) -> str:
    # Enough rules that many literals go through the RE2 set, not the short loop.
    rules = [draw(rule(n)) for n in range(draw(st.integers(1, 16)))]
    return "---\n".join(yaml.safe_dump(r, sort_keys=False, allow_unicode=True) for r in rules)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule_set(), st.lists(event(), min_size=1, max_size=10))
def test_indexed_matcher_fires_exactly_what_evaluating_every_rule_fires(
    text: str, events: list[dict[str, Any]]
) -> None:
    indexed = rules_from_yaml(text, pipeline="none")
    plain = rules_from_yaml(text, pipeline="none", index=False)
    assert indexed.errors == plain.errors == []
    for e in events:
        assert sorted(r.title for r in indexed.match(e)) == sorted(
            r.title for r in plain.match(e)
        ), e


def test_rules_wake_only_on_their_literals() -> None:
    """A realistic set: an event holding none of the rules' literals runs none of them,
    and the one rule whose literal it holds fires."""
    docs = []
    for n in range(40):
        docs.append(
            {
                "title": f"ua {n}",
                "logsource": {"category": "proxy"},
                "detection": {
                    "sel": {"c-useragent|contains": [f"evilbot{n:02d}/", f"scanner-{n:02d}/"]},
                    "condition": "sel",
                },
            }
        )
    rs = rules_from_yaml("---\n".join(yaml.safe_dump(d) for d in docs))
    calls: list[str] = []
    (fn,) = rs._routes["gateway"]
    table = next(v for k, v in fn.__globals__.items() if k.startswith("_CL_"))
    for k, cluster in enumerate(table):
        table[k] = lambda E, hits, c=cluster, k=k: (calls.append(k), c(E, hits))[1]
    quiet = {"event": {"dataset": "gateway"}, "user_agent": {"original": "Mozilla/5.0"}}
    assert rs.match(quiet) == [] and calls == []
    loud = {"event": {"dataset": "gateway"}, "user_agent": {"original": "X Scanner-17/ v2"}}
    assert [r.title for r in rs.match(loud)] == ["ua 17"]
    assert len(calls) == 1


def test_whole_values_anchor_rules_too_even_short_ones() -> None:
    """Equalities wake their rules through an exact-value lookup, so short values
    ('x', the empty user agent) still keep their rules off other events."""
    docs = [
        {"title": "empty", "detection": {"sel": {"c-useragent": ""}, "condition": "sel"}},
        {"title": "x", "detection": {"sel": {"c-useragent": "x"}, "condition": "sel"}},
        {"title": "cased", "detection": {"sel": {"c-useragent|cased": "Xy"}, "condition": "sel"}},
    ]
    for d in docs:
        d["logsource"] = {"category": "proxy"}
    rs = rules_from_yaml("---\n".join(yaml.safe_dump(d) for d in docs))
    from correlator.detection.compiler import compile_rule

    assert all(compile_rule(r.sigma, "t").anchor is not None for r in rs.detections)

    def fired(ua: Any) -> list[str]:
        event = {"event": {"dataset": "gateway"}, "user_agent": {"original": ua}}
        return sorted(r.title for r in rs.match(event))

    assert fired("") == ["empty"]
    assert fired("X") == ["x"]
    assert fired(["curl", "x"]) == ["x"]
    assert fired("Xy") == ["cased"] and fired("xy") == []
    assert fired("Mozilla/5.0") == [] and fired(None) == []


def test_rules_sharing_a_value_share_one_cluster() -> None:
    """Ten rules on the same crossing wake together: one function, one field read."""
    docs = [
        {
            "title": f"port {n}",
            "logsource": {"product": "zonewatch", "service": "firewall"},
            "detection": {
                "sel": {"zone.crossing": "vdi->lgwan", "destination.port": 3000 + n},
                "condition": "sel",
            },
        }
        for n in range(10)
    ]
    rs = rules_from_yaml("---\n".join(yaml.safe_dump(d) for d in docs))
    (fn,) = rs._routes["firewall"]
    table = next(v for k, v in fn.__globals__.items() if k.startswith("_CL_"))
    assert len(table) == 1
    event = {"event": {"dataset": "firewall"}, "zone": {"crossing": "VDI->LGWAN"}}
    assert [r.title for r in rs.match({**event, "destination": {"port": 3007}})] == ["port 7"]


def test_clusters_compile_on_first_use_unless_loaded_eagerly() -> None:
    from correlator.detection.codegen import LazyCluster

    docs = [
        {
            "title": f"domain {n}",
            "logsource": {"category": "proxy"},
            "detection": {"sel": {"cs-host|endswith": f".bad{n:02d}.example"}, "condition": "sel"},
        }
        for n in range(30)
    ]
    text = "---\n".join(yaml.safe_dump(d) for d in docs)

    def table(rs: Any) -> list[Any]:
        (fn,) = rs._routes["gateway"]
        return next(v for k, v in fn.__globals__.items() if k.startswith("_CL_"))

    lazy, eager = rules_from_yaml(text), rules_from_yaml(text, eager=True)
    assert all(isinstance(c, LazyCluster) for c in table(lazy))
    assert not any(isinstance(c, LazyCluster) for c in table(eager))
    hit = {"event": {"dataset": "gateway"}, "url": {"domain": "x.BAD07.example"}}
    assert [r.title for r in lazy.match(hit)] == [r.title for r in eager.match(hit)] == ["domain 7"]
    assert sum(isinstance(c, LazyCluster) for c in table(lazy)) == len(table(lazy)) - 1
    assert [r.title for r in lazy.match(hit)] == ["domain 7"]  # compiled once, reused


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value)
    except ValueError:
        return None


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(-20, 20), min_size=1, max_size=4),
    st.one_of(
        st.integers(-20, 20),
        st.floats(-20, 20, allow_nan=False).map(lambda f: round(f, 1)),
        st.text(alphabet="0123456789.+- e", max_size=5),
        st.lists(st.one_of(st.integers(-20, 20), st.text(alphabet="0123456789.", max_size=3))),
        st.booleans(),
    ),
)
def test_number_values_compare_numerically(numbers: list[int], value: Any) -> None:
    """One number, a short list and a long (merged) list all compare numerically,
    for JSON numbers, numeric strings and lists of them (JSON integers take a
    shortcut through their spelling)."""
    text = yaml.safe_dump(
        {
            "title": "n",
            "logsource": {"product": "x"},
            "detection": {
                "sel": {"n": numbers if len(numbers) > 1 else numbers[0]},
                "condition": "sel",
            },
        }
    )
    rs = rules_from_yaml(text, pipeline="none")
    values = value if isinstance(value, list) else [value]
    expected = any(_as_number(v) in {float(n) for n in numbers} for v in values)
    assert bool(rs.match({"n": value})) == expected


# -- the parts ----------------------------------------------------------------------


@given(st.lists(WORD, min_size=1, max_size=30, unique=True), TEXT, TEXT)
def test_literal_index_finds_every_literal_present(
    literals: list[str], left: str, right: str
) -> None:
    for planted in (None, *literals[:3]):
        text = left + (planted or "") + right
        index = LiteralIndex(literals, [[i] for i in range(len(literals))])
        expected = [i for i, lit in enumerate(literals) if lit in text]
        assert list(index.find(text)) == expected


@settings(max_examples=300, deadline=None)
@given(regex(), TEXT, TEXT)
def test_regex_literals_are_necessary(pattern: str, left: str, right: str) -> None:
    literals = regex_literals(pattern, ignorecase=False)
    if literals is None:
        return
    compiled = re2.compile(pattern)
    # Texts likely to match: the pattern's own literal runs around random text.
    for middle in ("", *literals, pattern.replace("\\", "")):
        for text in (left + middle + right, (left + middle + right).upper()):
            if compiled.search(text) is not None:
                assert any(lit in text.lower() for lit in literals), (pattern, text)


def test_regex_literals_of_real_patterns() -> None:
    assert regex_literals(r"-s-account\.workers\.dev|\.up\.railway\.app", False) == {
        "-s-account.workers.dev",
        ".up.railway.app",
    }
    assert regex_literals(r"(abcd)?efgh", False) == {"efgh"}
    assert regex_literals(r"[[:alpha:]]xyz", False) is None  # POSIX class: RE2 and Python differ
    assert regex_literals(r"\pLabcd", False) is None  # RE2-only syntax
    # Case folding: RE2 matches U+017F for "s"; lower() would not, so no run spans an s.
    assert regex_literals("(?i)password", False) == {"word"}
