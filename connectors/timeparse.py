"""Timestamps of vendor logs -> UTC RFC 3339 strings.

Every parser funnels its timestamp through here so that ``@timestamp`` has one
shape everywhere: ``YYYY-MM-DDTHH:MM:SS.mmmZ``. The width is fixed (always
milliseconds, always ``Z``) so that timestamps sort correctly as strings in
Kafka keys, DuckDB and NDJSON; sub-millisecond digits are truncated, not
rounded, so an event never moves into the next second.

Rules:

* an explicit offset (``+09:00``, ``-0400``, ``Z``) or zone name (``EDT``,
  ``Asia/Tokyo``) in the text wins;
* otherwise the caller's zone (``ctx.timezone``, default ``Asia/Tokyo``);
* a timestamp without a year (syslog ``Sep 25 15:47:07``) gets the year that
  puts it nearest to ``now`` (a December line read in January is last year's),
  but never more than a month in the future (a January line read in November
  is this year's, not next year's);
* epoch numbers are seconds, milliseconds, microseconds or nanoseconds by
  magnitude.

Results are memoised: log lines arrive in bursts sharing the same second, so
most calls are a dictionary hit. Zone objects are built once per name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from zonewatch.errors import ParseError

MONTHS: dict[str, int] = {
    m: i
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}

# Fixed offsets for the abbreviations devices print. An abbreviation names an
# offset, not a rule set: "EDT" is -04:00 even in January, which is what the
# device meant when it printed it. Ambiguous ones take the reading most common
# in device logs: CST = US Central, IST = India, BST = British Summer.
ABBREVIATIONS: dict[str, int] = {  # minutes east of UTC
    "UTC": 0, "UT": 0, "GMT": 0, "Z": 0, "WET": 0, "WEST": 60, "BST": 60,
    "CET": 60, "CEST": 120, "MET": 60, "MEST": 120, "EET": 120, "EEST": 180,
    "MSK": 180, "IST": 330, "ICT": 420, "WIB": 420, "HKT": 480, "SGT": 480,
    "AWST": 480, "PHT": 480, "JST": 540, "KST": 540, "ACST": 570, "ACDT": 630,
    "AEST": 600, "AEDT": 660, "NZST": 720, "NZDT": 780,
    "HST": -600, "AKST": -540, "AKDT": -480, "PST": -480, "PDT": -420,
    "MST": -420, "MDT": -360, "CST": -360, "CDT": -300, "EST": -300, "EDT": -240,
    "AST": -240, "ADT": -180, "NST": -210, "NDT": -150,
}  # fmt: skip

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_OFFSET_RE = re.compile(r"([+-])(\d{2}):?(\d{2})?")
# "UTC-5", "UTC+05:30", "GMT+9", "UTC +9:00", "-5": an offset after an
# optional UTC/GMT, hours with one or two digits (FortiAnalyzer, Windows and
# many appliances write zones this way). The sign means what it says: UTC-5
# is five hours behind UTC (unlike POSIX TZ strings; IANA's inverted
# Etc/GMT+5 names still go through ZoneInfo).
_NAMED_OFFSET_RE = re.compile(r"(?:UTC|GMT|UT)?\s*([+-])\s*(\d{1,2})(?::?(\d{2}))?", re.I)

# 2026-11-27T01:23:45.123+09:00, 2026/11/27 01:23:45, 2026-11-27 01:23:45 JST
_ISO_RE = re.compile(
    r"(\d{4})[-/](\d{1,2})[-/](\d{1,2})(?:[T ]|\s+)(\d{1,2}):(\d{2})(?::(\d{2}))?(?:[.,](\d{1,9}))?"
    r"\s*(Z|z|[+-]\d{2}(?::?\d{2})?|[A-Za-z][A-Za-z0-9_/+-]*)?"
)

# Sep 25 15:47:07 | Apr 15 2013 09:36:50.123 EDT | Fri Dec 31 07:07:07 2021 |
# Sep 25 2026 15:47:07 +0900
_MONTHNAME_RE = re.compile(
    r"(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]*,?\s+)?"
    r"([A-Za-z]{3})[a-z]*\s+(\d{1,2}),?\s+(?:(\d{4})\s+)?"
    r"(\d{1,2}):(\d{2}):(\d{2})(?:[.,](\d{1,9}))?"
    r"(?:\s*(Z|[+-]\d{2}:?\d{2}|[A-Z][A-Za-z0-9_/+-]*))?(?:\s+(\d{4}))?"
)

# 27/Nov/2026:01:23:45 +0900 (Apache/Squid common log format)
_CLF_RE = re.compile(r"(\d{1,2})/([A-Za-z]{3})/(\d{4}):(\d{2}):(\d{2}):(\d{2})(?:\s+([+-]\d{4}))?")

_EPOCH_RE = re.compile(r"\d{1,20}(?:\.\d{1,9})?")


def format_utc(dt: datetime) -> str:
    """An aware datetime as ``YYYY-MM-DDTHH:MM:SS.mmmZ``."""
    if dt.tzinfo is not UTC:
        dt = dt.astimezone(UTC)
    return (
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:"
        f"{dt.second:02d}.{dt.microsecond // 1000:03d}Z"
    )


@lru_cache(maxsize=16)
def now_stamp(now: datetime) -> str:
    """``format_utc(now)`` for the lines that carry no time of their own; the
    input refreshes ``ctx.now`` rarely, so this is nearly always a cache hit."""
    return format_utc(now)


@lru_cache(maxsize=256)
def zone_for(name: str) -> tzinfo:
    """A tzinfo for an abbreviation (``EDT``), offset (``+0900``) or IANA name.

    Raises ParseError for a name that is none of these.
    """
    upper = name.upper()
    minutes = ABBREVIATIONS.get(upper)
    if minutes is not None:
        return UTC if minutes == 0 else timezone(timedelta(minutes=minutes), upper)
    m = _OFFSET_RE.fullmatch(name) or _NAMED_OFFSET_RE.fullmatch(name.strip())
    if m:
        sign, hh, mm = m.groups()
        total = int(hh) * 60 + int(mm or 0)
        if total >= 24 * 60 or int(mm or 0) >= 60:
            raise ParseError(f"offset {name!r} is out of range")
        return UTC if total == 0 else timezone(timedelta(minutes=total if sign == "+" else -total))
    if "/" in name or name in ("UTC", "Etc/UTC"):
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ParseError(f"unknown time zone {name!r}") from exc
    raise ParseError(f"unknown time zone abbreviation {name!r}; give an offset or IANA name")


def _fraction_us(frac: str | None) -> int:
    if not frac:
        return 0
    return int((frac + "00000")[:6])


def _build(
    year: int, month: int, day: int, hour: int, minute: int, second: int, micro: int, tz: tzinfo
) -> datetime:
    if second == 60:  # leap second: keep the event, pin it to :59.999
        second, micro = 59, 999_999
    try:
        dt = datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)
    except ValueError as exc:
        raise ParseError(f"invalid date or time: {exc}") from exc
    try:
        # fold=0 picks the first of a repeated DST hour; a skipped hour moves
        # forward, as the device's own clock would have.
        return dt.astimezone(UTC)
    except OverflowError as exc:
        raise ParseError("timestamp out of range") from exc


# Logs of a quiet device (a VDI broker, an MDM) carry a new second on nearly
# every line, so the text caches of the parsers below miss; what a miss costs
# is mostly turning the local minute into UTC, and that is shared by the
# minute's seconds.
_MINUTE = timedelta(seconds=59, microseconds=999_999)


@lru_cache(maxsize=4096)
def _minute_prefix(
    year: int, month: int, day: int, hour: int, minute: int, tz: tzinfo
) -> str | None:
    """``YYYY-MM-DDTHH:MM:`` in UTC of a local minute whose every second lands
    in one UTC minute (its offset is whole minutes and no transition falls
    inside it); None when it does not, or is not a valid time."""
    try:
        first = _build(year, month, day, hour, minute, 0, 0, tz)
        last = _build(year, month, day, hour, minute, 59, 999_999, tz)
    except ParseError:
        return None
    if first.second or first.microsecond or last - first != _MINUTE:
        return None
    return format_utc(first)[:17]


def _utc_text(
    year: int, month: int, day: int, hour: int, minute: int, second: int, micro: int, tz: tzinfo
) -> str:
    """``format_utc(_build(...))``, through the minute's cached UTC prefix
    when it has one."""
    if second == 60:  # as _build: a leap second is pinned to :59.999
        second, micro = 59, 999_999
    if second < 60:
        prefix = _minute_prefix(year, month, day, hour, minute, tz)
        if prefix is not None:
            return f"{prefix}{second:02d}.{micro // 1000:03d}Z"
    return format_utc(_build(year, month, day, hour, minute, second, micro, tz))


# How far ahead of "now" a year-less date may land before it is read as last
# year's: enough for a Dec 31 -> Jan 1 rollover and skewed device clocks, small
# enough that a months-old line replayed from a file never lands in the future.
FUTURE_TOLERANCE_DAYS = 31


def nearest_year(month: int, day: int, now: date) -> int:
    """The year putting ``month``/``day`` nearest to ``now``, never more than
    ``FUTURE_TOLERANCE_DAYS`` ahead of it (logs record the past)."""
    best_year, best_gap = now.year, None
    for year in (now.year - 1, now.year, now.year + 1):
        try:
            delta = (date(year, month, day) - now).days
        except ValueError:  # Feb 29 in a non-leap year
            continue
        if delta > FUTURE_TOLERANCE_DAYS:
            continue
        if best_gap is None or abs(delta) < best_gap:
            best_year, best_gap = year, abs(delta)
    if best_gap is None:
        # Feb 29 when neither this year nor last is a leap year: the latest
        # leap year before now is the only honest reading.
        year = now.year - 1
        while year > now.year - 8:
            try:
                date(year, month, day)
                return year
            except ValueError:
                year -= 1
        raise ParseError(f"no year has day {month:02d}-{day:02d}")
    return best_year


@lru_cache(maxsize=8192)
def parse_iso(text: str, tz: tzinfo = UTC) -> str:
    """ISO 8601 / RFC 3339 (``T`` or space, ``-`` or ``/``, any fraction, offset or zone)."""
    m = _ISO_RE.fullmatch(text.strip())
    if m is None:
        raise ParseError(f"not an ISO 8601 timestamp: {text[:60]!r}")
    y, mo, d, h, mi, s, frac, zone = m.groups()
    if zone:
        tz = zone_for(zone)
    return _utc_text(int(y), int(mo), int(d), int(h), int(mi), int(s or 0), _fraction_us(frac), tz)


@lru_cache(maxsize=8192)
def parse_monthname(text: str, tz: tzinfo = UTC, today: date | None = None) -> str:
    """``Sep 25 15:47:07 [EDT]``, ``Apr 15 2013 09:36:50``, ``Fri Dec 31 07:07:07 2021``.

    ``today`` (UTC date of "now") chooses the year when the text has none.
    """
    m = _MONTHNAME_RE.fullmatch(text.strip())
    if m is None:
        raise ParseError(f"not a month-name timestamp: {text[:60]!r}")
    mon, d, year1, h, mi, s, frac, zone, year2 = m.groups()
    month = MONTHS.get(mon.lower())
    if month is None:
        raise ParseError(f"unknown month {mon!r}")
    if zone:
        tz = zone_for(zone)
    year_s = year1 or year2
    day = int(d)
    if year_s:
        year = int(year_s)
    else:
        if not 1 <= day <= 31:
            raise ParseError(f"invalid day {day}")
        year = nearest_year(month, day, today or datetime.now(UTC).date())
    return _utc_text(year, month, day, int(h), int(mi), int(s), _fraction_us(frac), tz)


@lru_cache(maxsize=4096)
def parse_clf(text: str, tz: tzinfo = UTC) -> str:
    """Common log format ``27/Nov/2026:01:23:45 +0900``."""
    m = _CLF_RE.fullmatch(text.strip())
    if m is None:
        raise ParseError(f"not a common-log-format timestamp: {text[:60]!r}")
    d, mon, y, h, mi, s, off = m.groups()
    month = MONTHS.get(mon.lower())
    if month is None:
        raise ParseError(f"unknown month {mon!r}")
    if off:
        tz = zone_for(off)
    return _utc_text(int(y), month, int(d), int(h), int(mi), int(s), 0, tz)


@lru_cache(maxsize=4096)
def _utc_second(seconds: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` of a whole epoch second (lines of one burst
    share their second, so this is nearly always a cache hit)."""
    dt = _EPOCH + timedelta(seconds=seconds)
    return (
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}"
    )


def parse_epoch(value: str | int | float) -> str:
    """Epoch number -> UTC string; unit chosen by magnitude.

    Below 1e11 is seconds (until year 5138), below 1e14 milliseconds, below
    1e17 microseconds, else nanoseconds. FortiOS switched ``eventtime`` from
    seconds to micro- and then nanoseconds between versions; this reads all.
    The magnitudes are unambiguous for instants from 1973-03-03 to 5138.
    """
    if isinstance(value, str) and value.isdigit() and value.isascii() and len(value) <= 20:
        n, frac = int(value), ""  # the common case (FortiOS eventtime), without the regex
    elif isinstance(value, str):
        text = value.strip()
        if not _EPOCH_RE.fullmatch(text):
            raise ParseError(f"not an epoch number: {value[:40]!r}")
        whole, _, frac = text.partition(".")
        n = int(whole)
    elif isinstance(value, bool):
        raise ParseError("epoch must be a number")
    elif isinstance(value, int):
        n, frac = value, ""
    else:
        if value != value or value < 0:  # NaN or negative
            raise ParseError(f"invalid epoch {value!r}")
        n = int(value)
        frac = f"{value - n:.6f}"[2:]
    if n < 0:
        raise ParseError(f"invalid epoch {value!r}")
    if n < 100_000_000_000:
        seconds, millis = n, int((frac + "000")[:3]) if frac else 0
    elif n < 100_000_000_000_000:
        seconds, millis = divmod(n, 1000)
    elif n < 100_000_000_000_000_000:
        seconds, millis = n // 1_000_000, n // 1000 % 1000
    else:
        seconds, millis = n // 1_000_000_000, n // 1_000_000 % 1000
    try:
        return f"{_utc_second(seconds)}.{millis:03d}Z"
    except OverflowError as exc:
        raise ParseError(f"epoch {value!r} is out of range") from exc


def parse_timestamp(text: str, tz: tzinfo = UTC, now: datetime | None = None) -> str:
    """Any of the shapes above, tried cheapest-first. For formats that do not
    know in advance which shape a device writes."""
    t = text.strip()
    if not t:
        raise ParseError("empty timestamp")
    c = t[0]
    if c.isdigit():
        if len(t) >= 8 and t[4:5] in ("-", "/"):
            return parse_iso(t, tz)
        if "/" in t[:6]:
            return parse_clf(t, tz)
        return parse_epoch(t)
    if c.isalpha():
        today = (now or datetime.now(UTC)).date()
        return parse_monthname(t, tz, today)
    raise ParseError(f"unrecognised timestamp {t[:60]!r}")


# --- syslog headers ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SyslogHeader:
    """The parts of an RFC 3164 or RFC 5424 header; ``message`` is the rest."""

    priority: int | None
    timestamp: str | None  # UTC RFC 3339, None if the line had none
    hostname: str | None
    appname: str | None
    procid: str | None
    msgid: str | None
    structured_data: str | None
    message: str

    @property
    def facility(self) -> int | None:
        return None if self.priority is None else self.priority >> 3

    @property
    def severity(self) -> int | None:
        return None if self.priority is None else self.priority & 7


_PRI_RE = re.compile(r"<(\d{1,3})>")
_RFC5424_RE = re.compile(
    r"<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) "
    # Possessive (Python 3.11+): one pass over the structured data, no
    # backtracking into it, whatever an attacker puts in a line.
    r"(-|(?:\[(?:[^\]\\]++|\\.)*+\])+)(?: (.*))?",
    re.S,
)
# RFC 3164 as devices really send it: optional PRI, "Mmm dd hh:mm:ss" with
# optional year/fraction/zone, or an ISO timestamp; optional host; optional tag.
_RFC3164_RE = re.compile(
    r"(?:<(\d{1,3})>)?"
    r"((?:[A-Z][a-z]{2}\s+\d{1,2}(?:\s+\d{4})?\s+\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?"
    r"(?:\s+(?:[A-Z]{2,5}|[+-]\d{2}:?\d{2}))?(?=[\s:]))"
    r"|(?:\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:?\d{2})?))"
    r":?\s+(.*)",
    re.S,
)
_TAG_RE = re.compile(r"([A-Za-z0-9_./-]{1,48})(?:\[([^\]]{1,32})\])?:\s?(.*)", re.S)


def _pri(text: str | None) -> int | None:
    if text is None:
        return None
    value = int(text)
    if value > 191:
        raise ParseError(f"syslog priority {value} is above 191")
    return value


def parse_rfc5424(line: str) -> SyslogHeader:
    """``<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG`` (RFC 5424)."""
    m = _RFC5424_RE.fullmatch(line)
    if m is None:
        raise ParseError("not an RFC 5424 syslog line")
    pri, ts, host, app, proc, msgid, sd, msg = m.groups()
    # "-" is RFC 5424's NILVALUE (written out: a helper call per field cost more)
    return SyslogHeader(
        _pri(pri),
        None if ts == "-" else parse_iso(ts, UTC),
        None if host == "-" else host,
        None if app == "-" else app,
        None if proc == "-" else proc,
        None if msgid == "-" else msgid,
        None if sd == "-" else sd,
        (msg or "").removeprefix("\ufeff"),
    )


def parse_rfc3164(
    line: str, tz: tzinfo = UTC, now: datetime | None = None, with_tag: bool = True
) -> SyslogHeader:
    """``[<PRI>]Mmm dd hh:mm:ss [host] [tag[pid]:] msg`` (RFC 3164 and what
    devices send under that name: a year, a zone, or an ISO timestamp).

    A word after the timestamp is taken as the hostname when a further word
    follows; ``with_tag=False`` leaves ``tag:`` in the message for formats
    (ASA) whose message starts with its own marker.
    """
    m = _RFC3164_RE.fullmatch(line)
    if m is None:
        raise ParseError("not an RFC 3164 syslog line (no timestamp after the priority)")
    pri, ts, rest = m.groups()
    if ts[0].isdigit():
        stamp = parse_iso(ts, tz)
    else:
        stamp = parse_monthname(ts, tz, (now or datetime.now(UTC)).date())
    host: str | None = None
    first, sep, tail = rest.partition(" ")
    if sep and not first.endswith(":") and not first.startswith("%") and "=" not in first:
        host, rest = first, tail
    app = proc = None
    if with_tag:
        t = _TAG_RE.fullmatch(rest)
        if t is not None:
            app, proc, rest = t.groups()
    return SyslogHeader(_pri(pri), stamp, host, app, proc, None, None, rest)


def parse_syslog(
    line: str, tz: tzinfo = UTC, now: datetime | None = None, with_tag: bool = True
) -> SyslogHeader:
    """RFC 5424 when the line says version 1 after the priority, else RFC 3164."""
    if line.startswith("<"):
        m = _PRI_RE.match(line)
        if m and line.startswith("1 ", m.end()):
            return parse_rfc5424(line)
    return parse_rfc3164(line, tz, now, with_tag)
