"""``--since`` / ``--until`` values: ISO dates and times, or ages like ``24h``."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from zonewatch.errors import QueryError

_AGE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
OPEN_START = "-infinity"
OPEN_END = "infinity"


def parse_time(value: str, now: datetime | None = None, tz: str = "Asia/Tokyo") -> str:
    """An ISO 8601 UTC timestamp for ``value``.

    ``24h``/``7d``/``30m`` mean that long before now; ``now`` is now; a date
    or a time without offset is read in ``tz`` (the office's local time,
    which is what an analyst types).
    """
    text = value.strip()
    now = now or datetime.now(UTC)
    if text.lower() == "now":
        return now.isoformat()
    age = _AGE.match(text.lower())
    if age:
        return (now - timedelta(seconds=float(age[1]) * _UNITS[age[2]])).isoformat()
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise QueryError(
            f"cannot read time {value!r}: use ISO 8601 (2026-11-02, 2026-11-02T09:00+09:00) "
            "or an age like 30m, 24h, 7d"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=ZoneInfo(tz))
    return when.astimezone(UTC).isoformat()


def time_params(
    since: str | None, until: str | None, now: datetime | None = None
) -> dict[str, str]:
    return {
        "since": parse_time(since, now) if since else OPEN_START,
        "until": parse_time(until, now) if until else OPEN_END,
    }
