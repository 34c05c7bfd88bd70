"""How a dotted name reads an event: one definition (``zonewatch.fieldpath``),
and the readers both code generators emit (the detection matcher's inline
expression, the correlation engine's group-key and value readers) equal it
on random nested and flat events."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from correlator.correlation.fields import getter, key_getter, norm
from correlator.detection.codegen import _RUNTIME_NAMES, _fetch
from zonewatch.fieldpath import MISSING, exists, get_field

# Keys that spell the same names nested and flat, at any level.
KEYS = st.sampled_from(["a", "b", "c", "a.b", "b.c", "a.b.c", "a.c"])
LEAF = st.one_of(st.none(), st.integers(0, 3), st.just("X"), st.just([1, "Y"]), st.just({}))
TREE = st.recursive(LEAF, lambda inner: st.dictionaries(KEYS, inner, max_size=3), max_leaves=8)
EVENT = st.dictionaries(KEYS, TREE, max_size=4)
NAME = st.sampled_from(["a", "a.b", "a.b.c", "b.c", "a.c", "c.a.b"])


def test_the_three_rules() -> None:
    assert get_field({"a": {"b": 1}}, "a.b") == 1  # the nested path
    assert get_field({"a": {"b": 1}, "a.b": 2}, "a.b") == 1  # nested first
    assert get_field({"a.b": 2}, "a.b") == 2  # absent at the top: the whole name
    assert get_field({"url": {"full.path": "/x"}}, "url.full.path") == "/x"  # rest, one level down
    assert get_field({"a": 5, "a.b": 1}, "a.b") == 1  # not an object: the whole name at the top
    assert get_field({"a": {"b": "x"}, "a.b.c": 3}, "a.b.c") == 3
    assert get_field({"a": {"c": 1}, "a.b": 2}, "a.b") is None  # a present object decides
    assert get_field({}, "a.b", "dflt") == "dflt"
    assert exists({"a": {"b": None}}, "a.b") and not exists({"a": 5}, "a.b")


@settings(max_examples=400, deadline=None)
@given(EVENT, NAME)
def test_detection_inline_read_equals_get_field(event: dict[str, Any], name: str) -> None:
    namespace = dict(_RUNTIME_NAMES, E=event, g=event.get)
    exec(_fetch("r0", name, "")[0], namespace)
    assert namespace["r0"] == get_field(event, name)


@settings(max_examples=400, deadline=None)
@given(EVENT, NAME)
def test_correlation_readers_equal_get_field(event: dict[str, Any], name: str) -> None:
    want = get_field(event, name)
    assert getter(name)(event) == want
    key = norm(want)
    assert key_getter([name])(event) == (None if key is None else (key,))


@settings(max_examples=200, deadline=None)
@given(EVENT, NAME)
def test_exists_agrees_with_get_field(event: dict[str, Any], name: str) -> None:
    assert exists(event, name) is (get_field(event, name, MISSING) is not MISSING)


def test_generated_correlation_readers_show_their_source_in_tracebacks() -> None:
    import linecache

    read = getter("a.b")
    assert linecache.getline(read.__code__.co_filename, 1) == "def get(event):\n"
    assert "_get_field(event, 'a.b')" in "".join(linecache.getlines(read.__code__.co_filename))
