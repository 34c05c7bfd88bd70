"""Making attacker-controlled strings safe to show in a Teams card.

Every value shown comes from logs an attacker can influence (user agents,
URLs, user names). Teams renders a markdown subset in TextBlocks and facts,
turns bare URLs into links and expands ``{{DATE(...)}}`` functions, so values
are stripped of control characters, markdown-escaped, defanged and truncated
before they reach a card.
"""

from __future__ import annotations

import re
from typing import Any

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]+")
# Only what can start markup mid-line; line-start markers are handled below.
_MARKDOWN = re.compile(r"([\\`*_\[\]~])")
# Block markers count only when followed by a space ("- x", "1. x"; "10.20.1.15" is no list).
_LINE_START = re.compile(r"^(\s*)(?:([-+#](?=\s|$)|>)|(\d+)\.(?=\s|$))")
_HTTP = re.compile(r"(?i)\bhttp(s?)://")
_SCHEME = re.compile(r"://")


def clean(value: Any, limit: int = 200) -> str:
    """One line, at most ``limit`` characters, no markup, no live links."""
    text = "" if value is None else str(value)
    text = _CONTROL.sub(" ", text).strip()
    if len(text) > limit:
        text = text[: max(limit - 1, 0)].rstrip() + "…"
    text = _HTTP.sub(lambda m: f"hxxp{m.group(1)}://", text)
    text = _SCHEME.sub(":/\u200b/", text)
    # Teams date functions: break the "{{" opener so it is shown, not run.
    text = text.replace("{{", "{\u200b{")
    text = _MARKDOWN.sub(r"\\\1", text)
    # CommonMark escapes: "\- item", "\# title", "1\. item"
    return _LINE_START.sub(
        lambda m: f"{m[1]}\\{m[2]}" if m[2] else f"{m[1]}{m[3]}\\.", text, count=1
    )


def join_values(
    values: list[str], shown: int = 3, limit: int = 120, more: str = "(+{n} more)"
) -> str:
    """``a, b, c (+4 more)`` with every value cleaned (``more``: the words
    for the rest, ``{n}`` their number)."""
    head = ", ".join(clean(v, limit) for v in values[:shown])
    rest = len(values) - shown
    return f"{head} {more.format(n=rest)}" if rest > 0 else head
