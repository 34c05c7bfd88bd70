"""Timestamps of vendor lines -> UTC RFC 3339."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.timeparse import (
    format_utc,
    nearest_year,
    parse_clf,
    parse_epoch,
    parse_iso,
    parse_monthname,
    parse_syslog,
    parse_timestamp,
    zone_for,
)
from zonewatch.errors import ParseError

TOKYO = ZoneInfo("Asia/Tokyo")


@pytest.mark.parametrize(
    ("text", "tz", "want"),
    [
        ("2026-11-27T01:23:45.123456789+09:00", UTC, "2026-11-26T16:23:45.123Z"),
        ("2026-11-27T01:23:45Z", TOKYO, "2026-11-27T01:23:45.000Z"),
        ("2026-11-27 10:23:45", TOKYO, "2026-11-27T01:23:45.000Z"),
        ("2018/11/30 16:09:07", UTC, "2018-11-30T16:09:07.000Z"),
        ("2026-04-02 17:31:09 -0700", UTC, "2026-04-03T00:31:09.000Z"),
        ("2026-07-01 12:00:00 America/New_York", UTC, "2026-07-01T16:00:00.000Z"),
    ],
)
def test_iso_offsets_and_local_zone(text: str, tz: ZoneInfo, want: str) -> None:
    assert parse_iso(text, tz) == want


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("Sep 25 15:47:07 EDT", "2026-09-25T19:47:07.000Z"),
        ("Jan 22 14:05:11 PST", "2026-01-22T22:05:11.000Z"),
        ("Apr 15 2013 09:36:50", "2013-04-15T00:36:50.000Z"),  # Tokyo local
        ("Fri Dec 31 07:07:07 2021", "2021-12-30T22:07:07.000Z"),
        ("Nov 27 10:00:00.250 JST", "2026-11-27T01:00:00.250Z"),
        ("Nov 27 01:00:00 CEST", "2026-11-26T23:00:00.000Z"),
    ],
)
def test_month_name_stamps(text: str, want: str) -> None:
    assert parse_monthname(text, TOKYO, date(2026, 11, 27)) == want


def test_year_rolls_back_for_december_lines_read_in_january() -> None:
    assert parse_monthname("Dec 31 23:59:59", UTC, date(2027, 1, 1)).startswith("2026-12-31")


def test_year_rolls_forward_only_for_small_clock_skew() -> None:
    assert parse_monthname("Jan  1 00:00:01", UTC, date(2026, 12, 31)).startswith("2027-01-01")
    # a January line read in November is from this January, not next year's
    assert parse_monthname("Jan 22 09:05:05", UTC, date(2026, 11, 27)).startswith("2026-01-22")


def test_february_29_finds_a_leap_year() -> None:
    assert nearest_year(2, 29, date(2026, 11, 27)) == 2024


@given(st.dates(min_value=date(1971, 1, 1), max_value=date(9000, 12, 1)), st.integers(-200, 200))
def test_inferred_year_is_never_far_in_the_future(today: date, offset: int) -> None:
    day = today + timedelta(days=offset)
    if (day.month, day.day) == (2, 29):
        return
    year = nearest_year(day.month, day.day, today)
    delta = (date(year, day.month, day.day) - today).days
    assert -366 <= delta <= 31


@pytest.mark.parametrize(
    ("value", "want"),
    [
        ("1557513467", "2019-05-10T18:37:47.000Z"),  # seconds (FortiOS 5)
        ("1557513467369", "2019-05-10T18:37:47.369Z"),  # milliseconds
        ("1557513467369913", "2019-05-10T18:37:47.369Z"),  # microseconds (FortiOS 6)
        ("1557513467369913239", "2019-05-10T18:37:47.369Z"),  # nanoseconds (FortiOS 7)
        ("1157689312.049", "2006-09-08T04:21:52.049Z"),  # Squid
        (1557513467, "2019-05-10T18:37:47.000Z"),
    ],
)
def test_epoch_units_by_magnitude(value: str | int, want: str) -> None:
    assert parse_epoch(value) == want


# Units are told apart by magnitude, which is unambiguous from 1973-03-03
# (1e17 ns) until 5138 (1e11 s): every log this project will read.
@given(st.datetimes(min_value=datetime(1973, 3, 4), max_value=datetime(2200, 1, 1)))
def test_epoch_round_trips_in_every_unit(dt: datetime) -> None:
    aware = dt.replace(tzinfo=UTC)
    micros = int(aware.timestamp()) * 1_000_000 + aware.microsecond
    want = format_utc(aware)
    assert parse_epoch(str(micros * 1000)) == want
    assert parse_epoch(str(micros)) == want
    assert parse_epoch(str(micros // 1000)) == want[:-4] + f"{aware.microsecond // 1000:03d}Z"


@given(
    st.datetimes(min_value=datetime(1900, 1, 2), max_value=datetime(9998, 12, 30)),
    st.integers(-14 * 60, 14 * 60),
)
def test_iso_with_offset_is_the_same_instant(dt: datetime, minutes: int) -> None:
    tz = timezone(timedelta(minutes=minutes))
    aware = dt.replace(tzinfo=tz)
    assert parse_iso(aware.isoformat(), TOKYO) == format_utc(aware)


def test_clf() -> None:
    assert parse_clf("27/Nov/2026:10:23:45 +0900") == "2026-11-27T01:23:45.000Z"


def test_unknown_and_invalid_inputs_raise_parse_error() -> None:
    for bad in ("Foo 12 10:00:00", "2026-13-01T00:00:00Z", "yesterday", "", "Feb 30 2026 10:00:00"):
        with pytest.raises(ParseError):
            parse_timestamp(bad, UTC, datetime(2026, 11, 27, tzinfo=UTC))
    with pytest.raises(ParseError):
        zone_for("XYZT")


@given(st.text(max_size=60))
def test_parse_timestamp_raises_only_parse_error(text: str) -> None:
    try:
        out = parse_timestamp(text, TOKYO, datetime(2026, 11, 27, tzinfo=UTC))
    except ParseError:
        return
    assert len(out) == 24 and out.endswith("Z")


def test_rfc5424_header() -> None:
    line = (
        "<111>1 2020-06-18T08:44:09.039-05:00 host View - 73 "
        '[View@6876 Severity="AUDIT_SUCCESS" EventType="BROKER_USERLOGGEDIN"] hello'
    )
    h = parse_syslog(line)
    assert (h.priority, h.facility, h.severity) == (111, 13, 7)
    assert h.timestamp == "2020-06-18T13:44:09.039Z"
    assert (h.hostname, h.appname, h.procid, h.msgid) == ("host", "View", None, "73")
    assert h.structured_data is not None and "BROKER_USERLOGGEDIN" in h.structured_data
    assert h.message == "hello"


def test_rfc3164_header_with_tag_and_without_priority() -> None:
    now = datetime(2026, 11, 27, tzinfo=UTC)
    h = parse_syslog("Jan  8 03:37:09 example-host kernel: iptables DROP_INPUT: IN=eth0", UTC, now)
    assert h.priority is None
    assert h.timestamp == "2026-01-08T03:37:09.000Z"
    assert (h.hostname, h.appname) == ("example-host", "kernel")
    assert h.message == "iptables DROP_INPUT: IN=eth0"
    h = parse_syslog("<6>2021-03-12T14:10:18Z fw kernel: hello", TOKYO, now)
    assert (h.priority, h.timestamp, h.hostname) == (6, "2021-03-12T14:10:18.000Z", "fw")


def test_syslog_rejects_lines_without_header() -> None:
    with pytest.raises(ParseError):
        parse_syslog("just some text")
    with pytest.raises(ParseError):
        parse_syslog("<999>Jan  8 03:37:09 host x: y")


@pytest.mark.parametrize(
    ("name", "minutes"),
    [
        ("UTC-5", -300), ("UTC+2", 120), ("UTC+05:30", 330), ("GMT+9", 540), ("UTC +9:00", 540),
        ("-5", -300), ("+0900", 540), ("-03:30", -210), ("JST", 540), ("UTC", 0), ("utc-5", -300),
    ],
)  # fmt: skip
def test_zones_as_appliances_write_them(name: str, minutes: int) -> None:
    """FortiAnalyzer's tz="UTC-5", Windows' "UTC+05:30", abbreviations: the
    sign means what it says (UTC-5 is five hours behind)."""
    offset = zone_for(name).utcoffset(datetime(2026, 11, 26))
    assert offset == timedelta(minutes=minutes)


def test_iana_etc_zones_keep_their_inverted_sign() -> None:
    assert zone_for("Etc/GMT+5").utcoffset(datetime(2026, 11, 26)) == timedelta(hours=-5)


@pytest.mark.parametrize("name", ["UTC+25", "XYZ", "+99", "GMT+9:99"])
def test_impossible_zones_are_refused(name: str) -> None:
    with pytest.raises(ParseError):
        zone_for(name)


@pytest.mark.parametrize(
    ("text", "now", "want"),
    [
        # a December line read just after New Year belongs to last year
        ("Dec 31 23:59:58", datetime(2027, 1, 1, 0, 0, 5, tzinfo=UTC), "2026-12-31T14:59:58.000Z"),
        # a New Year line read by a collector whose clock is still in December
        ("Jan  1 00:00:03", datetime(2026, 12, 31, 14, 59, tzinfo=UTC), "2026-12-31T15:00:03.000Z"),
        # a months-old line replayed from a file is never put in the future
        ("Mar  1 10:00:00", datetime(2026, 11, 27, tzinfo=UTC), "2026-03-01T01:00:00.000Z"),
    ],
)  # fmt: skip
def test_missing_year_around_new_year(text: str, now: datetime, want: str) -> None:
    assert parse_monthname(text, TOKYO, now.astimezone(TOKYO).date()) == want


@pytest.mark.parametrize(
    "value",
    ["1795658703", "1795658703000", "1795658703000000", "1795658703000000000", "1795658703.250"],
)
def test_epoch_seconds_milli_micro_nano(value: str) -> None:
    assert parse_epoch(value).startswith("2026-11-26T02:05:03.")


def test_the_default_zone_applies_only_when_the_line_has_none() -> None:
    from connectors.base import ParseContext
    from connectors.firewall import parse_fortigate

    line = (
        'date=2026-11-26 time=10:00:00 logid="0000000013" type="traffic" subtype="forward" '
        'srcip=10.10.4.21 dstip=203.0.113.80 action="accept"'
    )
    for tz in ("UTC", "Asia/Tokyo", "America/New_York"):
        ctx = ParseContext("firewall", "fortigate", timezone=ZoneInfo(tz))
        (with_zone,) = parse_fortigate(line + ' tz="+0900"', ctx)
        assert with_zone["@timestamp"] == "2026-11-26T01:00:00.000Z"
        (without,) = parse_fortigate(line, ctx)
        local = datetime(2026, 11, 26, 10, tzinfo=ZoneInfo(tz)).astimezone(UTC)
        assert without["@timestamp"] == format_utc(local)


@pytest.mark.parametrize(
    ("zone", "day"),
    [
        ("America/New_York", date(2026, 3, 8)),  # 02:00 -> 03:00
        ("America/New_York", date(2026, 11, 1)),  # 01:00-02:00 twice
        ("Australia/Lord_Howe", date(2026, 4, 5)),  # a 30-minute shift
        ("Asia/Tokyo", date(1887, 12, 31)),  # local mean time, +09:18:59
        ("Africa/Monrovia", date(1971, 12, 31)),  # -00:44:30 until 1972
    ],
)
def test_every_second_of_a_day_with_a_transition_or_an_odd_offset(zone: str, day: date) -> None:
    """The seconds of one local minute share its UTC conversion only when its
    offset is whole minutes and constant: checked against datetime itself."""
    tz = ZoneInfo(zone)
    for hour in range(24):
        for minute in range(60):
            for second in (0, 1, 59):
                local = datetime(day.year, day.month, day.day, hour, minute, second, 250_000, tz)
                text = f"{day.isoformat()} {hour:02d}:{minute:02d}:{second:02d}.250"
                assert parse_iso(text, tz) == format_utc(local.astimezone(UTC)), text
