"""``--format auto``: sniff a stream's format once, then stick to it.

A file, a stdin stream or one syslog sender (the record's ``peer``) is one
*stream*. Its first record that exactly one format recognises (the format's
``sniff``) decides the stream's format. Later records go straight to that
parser, so lines no sniff recognises on their own (ELFF rows after a
``#Fields:`` header, the second half of a mixed Event Hub batch) are read
the way the stream started. When the chosen parser refuses a record that
exactly one other format recognises, the stream has clearly changed format
(a relay that forwards two devices, a file rotated to another feed): the
other format parses it and the stream sticks to that one from then on.

Every choice and every switch is reported through ``on_choice``, and the
records each format parsed are counted, so a user can see what was chosen.
A record that no format recognises, or that the chosen format refuses with
nothing else recognising it, is refused with the parser's own reason: a
line is never read by a format that merely happened to accept it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from connectors.base import Format, ParseContext
from zonewatch.errors import ParseError

# Syslog listeners key streams by sender; a bound keeps a scan of spoofed
# senders from growing the map (the oldest sender is forgotten first).
MAX_STREAMS = 4096


@dataclass(frozen=True, slots=True)
class Choice:
    """One decision of the detector: ``stream`` now reads as ``format``."""

    stream: str | None
    format: str
    previous: str | None
    position: int | None


ChoiceHook = Callable[[Choice], None]


class AutoFormat:
    """Chooses and remembers the format of each stream of one source."""

    def __init__(self, source: str, formats: list[Format], on_choice: ChoiceHook | None = None):
        self.source = source
        self.formats = [f for f in formats if f.sniff is not None]
        self.on_choice = on_choice
        self.current: dict[str | None, Format] = {}
        self.records: Counter[str] = Counter()  # records parsed, per format
        self.switches = 0
        self.tried: str | None = None  # the format of the last parse attempt

    def recognised(self, text: str, exclude: Format | None = None) -> list[Format]:
        return [f for f in self.formats if f is not exclude and f.sniff(text)]  # type: ignore[misc]

    def _run(self, fmt: Format, text: str, ctx: ParseContext) -> list[dict[str, Any]]:
        self.tried = fmt.name
        ctx.format = fmt.name  # parsers name the format in event.module
        return fmt.parse(text, ctx)

    def _stick(self, stream: str | None, fmt: Format, position: int | None) -> None:
        previous = self.current.pop(stream, None)
        if previous is None and len(self.current) >= MAX_STREAMS:
            self.current.pop(next(iter(self.current)))
        self.current[stream] = fmt
        if previous is not None:
            self.switches += 1
        if self.on_choice is not None:
            self.on_choice(Choice(stream, fmt.name, previous.name if previous else None, position))

    def parse(
        self, text: str, ctx: ParseContext, stream: str | None = None, position: int | None = None
    ) -> list[dict[str, Any]]:
        """The events of one record; raises ParseError when no format may read it."""
        current = self.current.get(stream)
        refused: str | None = None
        if current is not None:
            try:
                events = self._run(current, text, ctx)
            except ParseError as exc:
                others = self.recognised(text, exclude=current)
                if len(others) != 1:
                    raise
                fmt, refused = others[0], str(exc)
            else:
                self.records[current.name] += 1
                return events
        else:
            hits = self.recognised(text)
            if not hits:
                self.tried = None
                raise ParseError(f"format auto: no {self.source} format recognises this line")
            if len(hits) > 1:
                self.tried = None
                names = ", ".join(sorted(f.name for f in hits))
                raise ParseError(f"format auto: ambiguous between {names}; pass --format")
            fmt = hits[0]
        try:
            events = self._run(fmt, text, ctx)
        except ParseError as exc:
            if current is not None:
                raise ParseError(
                    f"{exc} (the stream reads as {current.name}, which refused it: {refused})"
                ) from exc
            raise
        self._stick(stream, fmt, position)
        self.records[fmt.name] += 1
        return events
