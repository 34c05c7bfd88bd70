"""The contract every log format implements, and the registry of formats.

A format is a function ``parse(raw: str, ctx: ParseContext) -> list[dict]``
that turns one input record (a line, or one JSON document) into zero or more
ECS events as nested dicts. It raises :class:`zonewatch.errors.ParseError`
with a reason a person can act on when the record is not of that format;
the caller dead-letters the raw bytes with that reason. Zero events means
"understood, but nothing to emit" (a header line such as ``#Fields:``).

Formats may keep state across records of one stream (ProxySG's ``#Fields:``
header, Intune snapshot diffs): such state lives on ``ctx.state`` so one
``ParseContext`` per input stream keeps streams apart. Keys a format lists in
``shared_state`` describe the source rather than one stream (the devices
Intune knows, the users' last sign-in positions): ``zonewatch ingest`` keeps
them per source under ``checkpoint_dir``, so tomorrow's export file or a
Graph poller continues from today's (``connectors/state.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

ParseFn = Callable[[str, "ParseContext"], list[dict[str, Any]]]


@dataclass
class ParseContext:
    """Per-stream parsing context."""

    source: str
    format: str
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Tokyo"))
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    state: dict[str, Any] = field(default_factory=dict)
    # True under --format auto: a format then refuses records that another
    # format reads more specifically (Intune device rows go to ``devices``)
    auto: bool = False


@dataclass(frozen=True)
class Format:
    source: str
    name: str
    parse: ParseFn
    description: str = ""
    # cheap test used by --format auto; None means "never auto-detected"
    sniff: Callable[[str], bool] | None = None
    # ctx.state keys kept per source, not per input stream
    shared_state: tuple[str, ...] = ()
    # called when a finite input ends (an export file read to its end): the
    # events only the end of the input decides (devices missing from a snapshot)
    finish: Callable[[ParseContext], list[dict[str, Any]]] | None = None


FORMATS: dict[tuple[str, str], Format] = {}


def register(
    source: str,
    name: str,
    description: str = "",
    sniff: Callable[[str], bool] | None = None,
    shared_state: tuple[str, ...] = (),
    finish: Callable[[ParseContext], list[dict[str, Any]]] | None = None,
) -> Callable[[ParseFn], ParseFn]:
    """Decorator: ``@register("firewall", "panos")`` on a parse function."""

    def wrap(fn: ParseFn) -> ParseFn:
        FORMATS[(source, name)] = Format(
            source, name, fn, description or (fn.__doc__ or ""), sniff, shared_state, finish
        )
        return fn

    return wrap
