"""Generated Python a person can read: long lines wrapped, tracebacks with source.

The detection compiler emits one line per test, and a SigmaHQ rule's test can
be 1,000 characters. ``wrap`` breaks such lines inside brackets only, where
Python ignores line breaks, so the code means the same (tests compare the
syntax trees): at the loosest operator first (commas, then ``if``/``else``,
then ``or``, then ``and``, then between adjacent string literals), else
inside the longest bracket pair, in the style of black. ``if`` headers and
assignments get a pair of brackets to break in.

``compile_source`` compiles generated code under a ``<...>`` file name and
registers the text with ``linecache``, so a traceback through it shows the
line (otherwise Python prints the file name and line number only). The entry
goes when the compiled code's functions are gone.

Pure apart from ``linecache``; no project imports.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import linecache
import re
import tokenize
import weakref
from collections.abc import Iterable
from types import CodeType
from typing import Any

WIDTH = 100

_OPEN = {"(": ")", "[": "]", "{": "}"}
_CLOSE = frozenset(_OPEN.values())
# Break classes, loosest first: a segment breaks at the first class it has at
# its top level. ``"str"`` stands for the gap between adjacent string literals.
_CLASSES: tuple[frozenset[str], ...] = (
    frozenset({","}),
    frozenset({"if", "else", "for"}),
    frozenset({"or"}),
    frozenset({"and"}),
    frozenset({"str"}),
)

# Tokens that bind looser than ``or`` or are no operators at all (keyword
# arguments, dict entries, slices, star arguments, lambdas, comprehensions):
# beside them, bracketing an operand could change the program.
_BINDING = frozenset({"lambda", ":=", "for", "async", "await", "yield", "=", ":", "*", "**"})


# A line's tokens as parallel lists: kind ("s" string, "n" name, "d" number,
# "o" operator, "x" other), text, start and end column.
_Toks = tuple[list[str], list[str], list[int], list[int]]


def wrap(source: str, width: int = WIDTH) -> str:
    """``source`` with every line longer than ``width`` broken inside brackets."""
    if all(len(line) <= width for line in source.splitlines()):
        return source
    out: list[str] = []
    for line in source.splitlines():
        out.extend(wrap_line(line, width) if len(line) > width else (line,))
    return "\n".join(out) + ("\n" if source.endswith("\n") else "")


def wrap_line(line: str, width: int = WIDTH) -> list[str]:
    """One statement line -> lines of at most ``width`` where brackets allow."""
    code = line.lstrip()
    indent = line[: len(line) - len(code)]
    if code.startswith("#"):
        return [line]
    toks = _tokens(code)
    if toks is None:
        return [line]
    w = _Wrapper(code, toks, width)
    kind, text = toks[0], toks[1]
    n = len(kind)
    if text[0] == "if" and text[-1] == ":" and n > 2:
        return w.bracketed("if ", 1, n - 1, ":", indent)
    if n > 2 and text[1] == "=" and kind[0] == "n":
        return w.bracketed(f"{text[0]} = ", 2, n, "", indent)
    return w.segment(0, n, indent, in_brackets=False)


# The tokens generated code is made of, for a one-line statement: strings
# (with prefixes; no triple quotes), names, numbers, operators. Several times
# faster than ``tokenize``, which stays the fallback for anything else.
_TOKEN = re.compile(
    r"""[ \t]*(?:
    (?P<s>[rRbBuUfF]{0,2}(?:'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*"))
    | (?P<n>[^\W\d]\w*)
    | (?P<d>\.?\d[\w.]*)
    | (?P<o>:=|==|!=|<=|>=|->|\*\*=?|//=?|<<=?|>>=?|[-+*/%&|^@<>]=|[()\[\]{},:;.=+\-*/%&|^~<>@!])
    | (?P<x>\S)
    )""",
    re.X,
)
_TRIPLE = ("'" * 3, '"' * 3)
_KIND = {tokenize.STRING: "s", tokenize.NAME: "n", tokenize.NUMBER: "d", tokenize.OP: "o"}


def _tokens(code: str) -> _Toks | None:
    if not any(q in code for q in _TRIPLE):
        matches = list(_TOKEN.finditer(code))
        groups = [m.lastgroup or "x" for m in matches]
        if matches and "x" not in groups:  # "x": a character the pattern does not know
            return (
                groups,
                [m.group(g) for m, g in zip(matches, groups, strict=True)],
                [m.start(g) for m, g in zip(matches, groups, strict=True)],
                [m.end() for m in matches],
            )
    return _tokenize(code)


def _tokenize(code: str) -> _Toks | None:
    try:
        raw = list(tokenize.generate_tokens(io.StringIO(code).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return None
    toks: _Toks = ([], [], [], [])
    for t in raw:
        if t.type in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER, tokenize.COMMENT):
            continue
        if t.start[0] != 1 or t.end[0] != 1:
            return None  # not one physical line: leave it
        toks[0].append(_KIND.get(t.type, "x"))
        toks[1].append(t.string)
        toks[2].append(t.start[1])
        toks[3].append(t.end[1])
    return toks if toks[0] else None


class _Wrapper:
    def __init__(self, code: str, toks: _Toks, width: int):
        self.code, self.width = code, width
        self.kind, self.tt, self.start, self.end = toks
        # Index of the matching bracket for every bracket token.
        self.match: dict[int, int] = {}
        stack: list[int] = []
        for i, (k, t) in enumerate(zip(self.kind, self.tt, strict=True)):
            if k == "o" and t in _OPEN:
                stack.append(i)
            elif k == "o" and t in _CLOSE and stack:
                j = stack.pop()
                self.match[i], self.match[j] = j, i

    def text(self, a: int, b: int) -> str:
        return self.code[self.start[a] : self.end[b - 1]] if a < b else ""

    def fits(self, a: int, b: int, indent: str, extra: int = 0) -> bool:
        return len(indent) + len(self.text(a, b)) + extra <= self.width

    def bracketed(self, head: str, a: int, b: int, tail: str, indent: str) -> list[str]:
        """``head`` + tokens a..b + ``tail`` as one line, or the tokens broken
        inside a bracket pair: theirs when they are one group, else a new one."""
        if self.fits(a, b, indent, len(head) + len(tail)):
            return [f"{indent}{head}{self.text(a, b)}{tail}"]
        if self.tt[a] in _OPEN and self.match.get(a) == b - 1:
            open_, close = self.tt[a], self.tt[b - 1]
            inner = self.segment(a + 1, b - 1, indent + "    ", in_brackets=True)
            return [f"{indent}{head}{open_}", *inner, f"{indent}{close}{tail}"]
        inner = self.segment(a, b, indent + "    ", in_brackets=True)
        return [f"{indent}{head}(", *inner, f"{indent}){tail}"]

    def segment(self, a: int, b: int, indent: str, in_brackets: bool) -> list[str]:
        """Tokens a..b (a whole expression or statement) as lines at ``indent``."""
        if self.fits(a, b, indent):
            return [indent + self.text(a, b)]
        if in_brackets:
            kind, cuts = self._cuts(a, b)
            if cuts:
                return self._split(a, b, kind, cuts, indent)
        return self._open_group(a, b, indent)

    def _top_level(self, a: int, b: int) -> Iterable[int]:
        i = a
        while i < b:
            yield i
            i = self.match[i] + 1 if i in self.match and self.match[i] > i else i + 1

    def _cuts(self, a: int, b: int) -> tuple[str, list[int]]:
        """Where to break the top level of a..b, for the loosest class present:
        (``","``: after these commas | ``"op"``: before these operators |
        ``"plain"``: before these words, adding no brackets | ``"str"``: before
        these string literals, []). Beside ``_BINDING`` tokens an operand's
        extent is not the text between operators: no brackets then, and no
        breaking at ``and``/``or``."""
        top = list(self._top_level(a, b))
        kind, tt = self.kind, self.tt
        binding = any(tt[i] in _BINDING and kind[i] in "no" for i in top)
        for cls in _CLASSES:
            if "str" in cls:
                found = [j for i, j in itertools.pairwise(top) if kind[i] == kind[j] == "s"]
                if found:
                    return "str", found
            elif "," in cls:
                found = [i for i in top if tt[i] == "," and kind[i] == "o"]
                if found:
                    return ",", found
            elif binding and "if" not in cls:
                continue
            else:
                found = [i for i in top if i > a and tt[i] in cls and kind[i] == "n"]
                if found:
                    return ("plain" if binding else "op"), found
        return "", []

    def _split(self, a: int, b: int, kind: str, cuts: list[int], indent: str) -> list[str]:
        bounds = [a, *((c + 1) if kind == "," else c for c in cuts), b]
        if bounds[1] >= b:  # one operand with a trailing comma: nothing to break
            return self._open_group(a, b, indent)
        lines: list[str] = []
        for s, e in itertools.pairwise(bounds):
            if s >= e:
                continue
            if kind == "plain":
                lines.extend(self.segment(s, e, indent, in_brackets=True))
                continue
            head = ""
            if kind == "op" and s != a:
                head, s = self.tt[s] + " ", s + 1  # "and X": the operator leads
            lines.extend(self._operand(head, s, e, indent, grouped=kind == "op"))
        return lines

    def _operand(self, head: str, a: int, b: int, indent: str, grouped: bool) -> list[str]:
        """``head`` + tokens a..b; an operand that must break and mixes looser
        operators gets brackets of its own (the syntax tree is the same), so
        ``or x and y`` never reads as three alternatives."""
        if a >= b:
            return [indent + head.rstrip()]
        if self.fits(a, b, indent, len(head)):
            return [indent + head + self.text(a, b)]
        if head and self.tt[a] in _OPEN and self.match.get(a) == b - 1:
            open_, close = self.tt[a], self.tt[b - 1]
            inner = self.segment(a + 1, b - 1, indent + "    ", in_brackets=True)
            return [f"{indent}{head}{open_}", *inner, f"{indent}{close}"]
        if grouped and self._cuts(a, b)[1]:
            inner = self.segment(a, b, indent + "    ", in_brackets=True)
            return [f"{indent}{head}(", *inner, f"{indent})"]
        body = self.segment(a, b, indent, in_brackets=True)
        return [indent + head + body[0][len(indent) :], *body[1:]]

    def _open_group(self, a: int, b: int, indent: str) -> list[str]:
        """Break inside the longest bracket pair at the top level of a..b."""
        best = None
        for i in self._top_level(a, b):
            j = self.match.get(i)
            if j is None or not (i + 1 < j < b):
                continue
            size = self.end[j] - self.start[i]
            if best is None or size >= best[2]:
                best = (i, j, size)
        if best is None:
            return [indent + self.text(a, b)]  # no bracket to break in: leave it long
        i, j, _ = best
        head = self.code[self.start[a] : self.end[i]]
        tail = self.code[self.start[j] : self.end[b - 1]]
        inner = self.segment(i + 1, j, indent + "    ", in_brackets=True)
        return [indent + head, *inner, indent + tail]


_serial = itertools.count(1)


def unique_name(label: str) -> str:
    """A ``<...>`` file name no other generated source has (``<label #n>``)."""
    return f"<{label} #{next(_serial)}>"


def compile_source(source: str, filename: str) -> CodeType:
    """``compile(source, filename, "exec")``, with ``source`` kept in ``linecache``
    so tracebacks through it show their line; see ``forget_with``."""
    code = compile(source, filename, "exec")
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    return code


def forget_with(owner: Any, filename: str) -> None:
    """Drop ``filename`` from ``linecache`` once ``owner`` (a function compiled
    from it) is garbage, so reloading rules does not keep every old source."""
    with contextlib.suppress(TypeError):  # not weakly referenceable: keep the entry
        weakref.finalize(owner, linecache.cache.pop, filename, None)
