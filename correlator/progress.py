"""When an input stops holding event time back, and how far time moves it (pure).

Both correlator loops order their correlation input by event time and so wait
for the slowest input: the single-member merge (``correlator/ordering.py``)
per Kafka partition, the scale-out detection stage per source partition (its
watermark records). A quiet input would hold everything back for ever, so an
input turns *idle* and stops holding the others back once

1. the consumer knows it is read to its end (no fetch answer yet counts as
   unread: its backlog would otherwise arrive behind the others), and
2. nothing of it waits in a buffer, and
3. it has delivered nothing for ``idle_polls`` polls AND ``idle_s`` seconds
   of wall time. Both: under load one poll may take longer than ``idle_s``,
   and a burst of polls may come faster than a fetch.

Once every input is idle nothing older can still come, so time itself moves
the watermark on: from each input's newest event time, at the wall clock's
pace, once it has been quiet for ``idle_s`` (a record stamped just now may
still be on its way through the producer and the broker):
:func:`idle_progress`. For a live source that is the wall clock less
``idle_s``. It is not the wall clock itself: a replay of a past day that
pauses for a moment (a busy producer, a slow relay) would jump the watermark
days ahead and the rest of the replay would be late. A source's delivery
delay (``correlator.sources``) holds it longer (correlation/clock.py).

The rule is per source (:class:`ProgressPolicy`), so a source that is known to
deliver late (a cloud audit log, minutes behind) can be given its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zonewatch.config import CorrelatorSettings

IDLE_POLLS = 3


def idle_progress(newest: float, quiet_for: float, idle_s: float) -> float:
    """How far an idle input lets the watermark go: its newest event time,
    moved on at the wall clock's pace once it has been quiet for ``idle_s``."""
    return newest + max(0.0, quiet_for - idle_s)


@dataclass(frozen=True, slots=True)
class IdleRule:
    """One source's idle rule and what time alone does for it."""

    idle_s: float = 1.0
    idle_polls: int = IDLE_POLLS

    def idle(
        self, *, quiet_s: float, quiet_polls: int, behind: bool = False, buffered: int = 0
    ) -> bool:
        """Whether the input no longer holds the others back (steps 1-3 above)."""
        return (
            not behind
            and buffered <= 0
            and quiet_s >= self.idle_s
            and quiet_polls >= self.idle_polls
        )

    def progress(self, newest: float, quiet_s: float) -> float:
        """How far time moves an idle input on (:func:`idle_progress`)."""
        return idle_progress(newest, quiet_s, self.idle_s)


@dataclass(frozen=True, slots=True)
class ProgressPolicy:
    """The idle rule of each source (by name: ``firewall``, ``vdi``, ...)."""

    default: IdleRule = IdleRule()
    sources: Mapping[str, IdleRule] = field(default_factory=dict)

    @classmethod
    def of(cls, idle_s: float, idle_polls: int = IDLE_POLLS) -> ProgressPolicy:
        return cls(IdleRule(idle_s, idle_polls))

    @classmethod
    def from_settings(cls, settings: CorrelatorSettings) -> ProgressPolicy:
        """The policy both loops run (one rule for every source; a source's
        delivery delay is correlation/clock.py SourceClock's)."""
        return cls.of(settings.input_idle_s)

    def rule(self, source: str | None) -> IdleRule:
        if source is None:
            return self.default
        return self.sources.get(source, self.default)
