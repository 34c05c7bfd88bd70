"""Pure delivery policy: clocks, backoff with jitter, Retry-After, pacing,
and what an HTTP outcome means for an outbox row.

Time is injected (``Clock``) so tests can play a five-minute Teams outage in
milliseconds.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...
    def wall(self) -> datetime: ...
    def wait(self, event: threading.Event, timeout: float) -> bool:
        """Sleep up to ``timeout`` s or until ``event`` is set; True if set."""
        ...


class RealClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> datetime:
        return datetime.now(UTC)

    def wait(self, event: threading.Event, timeout: float) -> bool:
        return event.wait(max(timeout, 0.0))


class FakeClock:
    """Jumps forward instead of sleeping: waits cost no real time.

    A wait still yields the CPU briefly so other threads (the receiver, the
    test) make progress, and it returns at once when the event is set.
    """

    def __init__(self, start: float = 1_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()
        self._epoch = datetime(2026, 11, 2, 0, 0, tzinfo=UTC).timestamp() - start

    def monotonic(self) -> float:
        with self._lock:
            return self._now

    def wall(self) -> datetime:
        return datetime.fromtimestamp(self._epoch + self.monotonic(), UTC)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += max(seconds, 0.0)

    def wait(self, event: threading.Event, timeout: float) -> bool:
        if event.wait(0.001):
            return True
        self.advance(timeout)
        return event.is_set()


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with 'equal jitter': half fixed, half random, so
    retries never collapse to zero yet many senders do not synchronise."""

    base_s: float = 1.0
    cap_s: float = 60.0
    max_retry_after_s: float = 3600.0

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        ceiling = min(self.cap_s, self.base_s * (2 ** max(failures - 1, 0)))
        r = (rng or random).random()
        return ceiling / 2 + r * ceiling / 2

    def after(
        self, failures: int, retry_after: float | None, rng: random.Random | None = None
    ) -> float:
        """Delay before the next attempt; the server's Retry-After wins."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after_s)
        return self.delay(failures, rng)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)


class Pacer:
    """At most ``rate`` requests in any one-second window of one webhook.

    Requests are spaced ``(1 + guard_s) / rate`` apart, counted from when the
    previous one actually went, under a lock held while waiting, so the
    spacing holds whichever thread sends and however late a request leaves.
    Planned slots exactly 1/rate apart (the first version) put 5 requests
    into some one-second windows: the first and the fifth exactly a second
    apart, or less once one left late (issue 20). The guard keeps the window
    strict at the receiver despite a little jitter on the way.

    Shared by every destination that posts to the same URL, so the limit holds
    per webhook.
    """

    GUARD_S = 0.05

    def __init__(self, rate: float, clock: Clock, guard_s: float = GUARD_S) -> None:
        self.interval = (1.0 + guard_s) / rate
        self.clock = clock
        self._last: float | None = None
        self._lock = threading.Lock()

    def acquire(self, stop: threading.Event) -> bool:
        """Wait for the webhook's next turn and take it; False if ``stop`` was
        set meanwhile (then nothing may be sent)."""
        with self._lock:
            if self._last is not None:
                wait = self._last + self.interval - self.clock.monotonic()
                if wait > 0 and self.clock.wait(stop, wait):
                    return False
            if stop.is_set():
                return False
            self._last = self.clock.monotonic()
            return True


class Outcome(Enum):
    DELIVERED = "delivered"  # 2xx: mark delivered
    RETRY = "retry"  # known not accepted (429, 5xx, refused connection): back off
    UNKNOWN = "unknown"  # request may have arrived (timeout, reset): retry and count
    REJECTED = "rejected"  # the payload itself is refused (400, 413): retrying cannot help
    MISCONFIGURED = "misconfigured"  # 401/403/404/410: keep the row, back off, tell the operator


def classify_status(status: int) -> Outcome:
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if status in (400, 413, 422):
        return Outcome.REJECTED
    if status in (401, 403, 404, 410):
        return Outcome.MISCONFIGURED
    return Outcome.RETRY
