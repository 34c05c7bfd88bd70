"""``zonewatch.pysource.wrap`` only moves line breaks inside brackets (and adds
brackets where they change nothing): the wrapped program has the same syntax
tree, on random expressions of every kind Python has near ``and``/``or``."""

from __future__ import annotations

import ast

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from zonewatch.pysource import wrap

ATOMS = st.sampled_from(["a", "b", "c1", "0", "17", "'x'", "'long text here'", "f'{a}'", "None"])


def _combine(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    def maybe_paren(e: str, paren: bool) -> str:
        return f"({e})" if paren else e

    two = st.tuples(children, children, st.booleans(), st.booleans())
    forms = [
        two.map(lambda t: f"{maybe_paren(t[0], t[2])} and {maybe_paren(t[1], t[3])}"),
        two.map(lambda t: f"{maybe_paren(t[0], t[2])} or {maybe_paren(t[1], t[3])}"),
        two.map(lambda t: f"{maybe_paren(t[0], t[2])} == {maybe_paren(t[1], t[3])}"),
        two.map(lambda t: f"{maybe_paren(t[0], t[2])} is not {maybe_paren(t[1], t[3])}"),
        two.map(lambda t: f"{maybe_paren(t[0], t[2])} * {maybe_paren(t[1], t[3])}"),
        children.map(lambda e: f"not {e}"),
        st.tuples(children, children, children).map(lambda t: f"{t[0]} if {t[1]} else {t[2]}"),
        st.tuples(children, children).map(lambda t: f"f({t[0]}, {t[1]})"),
        st.tuples(children, children).map(lambda t: f"f(k={t[0]}, *{t[1]})"),
        st.tuples(children, children).map(lambda t: f"{{{t[0]}: {t[1]}}}"),
        st.tuples(children, children).map(lambda t: f"x[{t[0]}:{t[1]}]"),
        st.tuples(children, children).map(lambda t: f"[{t[0]}, {t[1]},]"),
        children.map(lambda e: f"(lambda q: {e})"),
        children.map(lambda e: f"(t := {e})"),
        st.tuples(children, children, children).map(
            lambda t: f"[{t[0]} for v in {t[1]} if {t[2]}]"
        ),
        children.map(lambda e: f"({e})"),
        st.just("'ab' 'cd' f'{e}'"),
    ]
    return st.one_of(*forms)


EXPR = st.recursive(ATOMS, _combine, max_leaves=25)
STATEMENT = st.sampled_from(["if {}:\n    pass\n", "v = {}\n", "f({})\n", "{}\n"])


HEADS = ["", "def g():\n", "def g():\n    if x:\n"]  # the statement 0, 1 or 2 levels deep


@settings(max_examples=500, deadline=None)
@given(EXPR, STATEMENT, st.integers(10, 60), st.integers(0, 2))
def test_wrapping_keeps_the_program(expr: str, statement: str, width: int, depth: int) -> None:
    body = statement.format(expr).splitlines()
    source = HEADS[depth] + "".join("    " * depth + line + "\n" for line in body)
    try:
        tree = ast.dump(ast.parse(source))
    except SyntaxError:
        assume(False)
        return
    assert ast.dump(ast.parse(wrap(source, width))) == tree, wrap(source, width)


def test_breaks_at_the_loosest_operator_and_brackets_mixed_operands() -> None:
    source = "if aaaa == 1 or bbbb == 2 and cccc == 3 and dddd(4, 5):\n    pass\n"
    assert wrap(source, 40) == (
        "if (\n"
        "    aaaa == 1\n"
        "    or (\n"
        "        bbbb == 2\n"
        "        and cccc == 3\n"
        "        and dddd(4, 5)\n"
        "    )\n"
        "):\n"
        "    pass\n"
    )


@settings(max_examples=300, deadline=None)
@given(EXPR)
def test_the_fast_tokenizer_agrees_with_tokenize(expr: str) -> None:
    from zonewatch.pysource import _tokenize, _tokens

    assert _tokens(expr) == _tokenize(expr)
