"""Gateway formats: what an analyst sees from real-looking proxy lines."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.base import FORMATS, ParseContext
from connectors.gateway import (
    cef_extensions,
    parse_cef,
    parse_proxysg,
    parse_squid,
    parse_zscaler,
)
from connectors.gateway.proxysg import _ELFF_TOKEN_RE, _elff_values
from zonewatch.ecs import get_field
from zonewatch.errors import ParseError

NOW = datetime(2026, 11, 27, tzinfo=UTC)


def ctx(fmt: str, tz: str = "Asia/Tokyo", source: str = "gateway") -> ParseContext:
    return ParseContext(source, fmt, timezone=ZoneInfo(tz), now=NOW)


def test_squid_denied_request_is_blocked() -> None:
    line = (
        "1157689337.481      4 10.105.47.218 TCP_DENIED/407 1661 GET http://hi5.com/ - "
        "NONE/- text/html"
    )
    (ev,) = parse_squid(line, ctx("squid"))
    assert ev["@timestamp"] == "2006-09-08T04:22:17.481Z"
    assert get_field(ev, "event.action") == "blocked"
    assert get_field(ev, "event.outcome") == "failure"
    assert get_field(ev, "source.ip") == "10.105.47.218"
    assert get_field(ev, "http.response.status_code") == 407
    assert get_field(ev, "url.domain") == "hi5.com"
    assert get_field(ev, "user.name") is None
    assert get_field(ev, "squid.result_code") == "TCP_DENIED"


def test_squid_absurd_counters_are_left_out() -> None:
    line = (
        f"1157689337.481 {'9' * 15} 10.105.47.218 TCP_MISS/200 {'9' * 20} GET http://hi5.com/ - "
        "DIRECT/203.0.113.5 text/html"
    )
    (ev,) = parse_squid(line, ctx("squid"))
    # 15 digits of milliseconds overflow 64 bits once in nanoseconds; 20-digit bytes never fit
    assert get_field(ev, "event.duration") is None
    assert get_field(ev, "destination.bytes") is None
    assert get_field(ev, "destination.ip") == "203.0.113.5"
    orjson.dumps(ev)


def test_squid_connect_keeps_host_and_port() -> None:
    line = (
        "1157689312.049   5006 10.105.21.199 TCP_MISS/200 19763 CONNECT login.yahoo.com:443 "
        "badeyek DIRECT/175.16.199.115 -"
    )
    (ev,) = parse_squid(line, ctx("squid"))
    assert get_field(ev, "user.name") == "badeyek"
    assert get_field(ev, "destination.ip") == "175.16.199.115"
    assert (get_field(ev, "url.domain"), get_field(ev, "url.port")) == ("login.yahoo.com", 443)
    assert get_field(ev, "event.outcome") == "success"


def test_squid_all_golden_lines_parse(shared_dir: Path) -> None:
    lines = (shared_dir / "samples/golden/squid/test-access.log").read_text().splitlines()
    c = ctx("squid")
    events = [e for ln in lines for e in parse_squid(ln, c)]
    assert len(events) == len(lines) == 100
    assert {get_field(e, "event.action") for e in events} == {"allowed", "blocked"}


def test_squid_rejects_other_formats() -> None:
    with pytest.raises(ParseError):
        parse_squid("Jan  8 03:37:09 host kernel: IN=eth0 OUT= SRC=1.2.3.4", ctx("squid"))


ZS = (
    '{"sourcetype":"zscalernss-web","event":{"time":"Fri Nov 27 10:00:00 2026","tz":"JST",'
    '"login":"taro.yamada@city.example.lg.jp","proto":"HTTPS","eurl":"files.example.com/up?x=1",'
    '"action":"Blocked","cintip":"10.20.1.5","cip":"203.0.113.9","sip":"198.51.100.7",'
    '"reqmethod":"POST","respcode":"403","rulelabel":"Block_Upload","reqsize":"5120",'
    '"respsize":"300","devicehostname":"PC-0012"}}'
)


def test_zscaler_blocked_upload() -> None:
    (ev,) = parse_zscaler(ZS, ctx("zscaler"))
    assert ev["@timestamp"] == "2026-11-27T01:00:00.000Z"
    assert get_field(ev, "user.name") == "taro.yamada@city.example.lg.jp"
    assert get_field(ev, "source.ip") == "10.20.1.5"  # the internal address, for zones
    assert get_field(ev, "source.nat.ip") == "203.0.113.9"
    assert get_field(ev, "destination.ip") == "198.51.100.7"
    assert get_field(ev, "url.full") == "https://files.example.com/up?x=1"
    assert get_field(ev, "url.query") == "x=1"
    assert (get_field(ev, "event.action"), get_field(ev, "event.outcome")) == ("blocked", "failure")
    assert get_field(ev, "rule.name") == "Block_Upload"
    assert get_field(ev, "host.name") == "PC-0012"


def test_zscaler_without_zone_uses_source_timezone() -> None:
    line = ZS.replace('"tz":"JST",', "")
    (ev,) = parse_zscaler(line, ctx("zscaler", "Asia/Tokyo"))
    assert ev["@timestamp"] == "2026-11-27T01:00:00.000Z"
    (ev,) = parse_zscaler(line, ctx("zscaler", "UTC"))
    assert ev["@timestamp"] == "2026-11-27T10:00:00.000Z"


@pytest.mark.parametrize("bad", ["not json", "[1,2]", '{"event": 3}', '{"event": {"login": "a"}}'])
def test_zscaler_bad_records(bad: str) -> None:
    with pytest.raises(ParseError):
        parse_zscaler(bad, ctx("zscaler"))


def test_proxysg_header_sets_columns_and_extra_trailing_values_are_ignored() -> None:
    c = ctx("proxysg")
    assert parse_proxysg("#Software: SGOS 6.7.5.14", c) == []
    header = "#Fields: date time c-ip cs-username sc-filter-result sc-status cs-method cs-uri s-ip"
    assert parse_proxysg(header, c) == []
    row = (
        "2026-11-27 01:00:00 10.30.0.8 CITY\\sato DENIED 403 GET "
        '"http://bad.example.net/x.exe" 10.0.0.2 extra1 "extra two"'
    )
    (ev,) = parse_proxysg(row, c)
    assert ev["@timestamp"] == "2026-11-27T01:00:00.000Z"  # ELFF times are UTC
    assert get_field(ev, "user.name") == "CITY\\sato"
    assert get_field(ev, "source.ip") == "10.30.0.8"
    assert get_field(ev, "observer.ip") == "10.0.0.2"
    assert get_field(ev, "url.extension") == "exe"
    assert get_field(ev, "event.action") == "blocked"
    assert get_field(ev, "http.response.status_code") == 403


def test_proxysg_rows_shorter_than_header_are_rejected() -> None:
    c = ctx("proxysg")
    parse_proxysg("#Fields: date time c-ip cs-username", c)
    with pytest.raises(ParseError, match="header"):
        parse_proxysg("2026-11-27 01:00:00 10.30.0.8", c)


def test_proxysg_streams_keep_their_own_header() -> None:
    a, b = ctx("proxysg"), ctx("proxysg")
    parse_proxysg("#Fields: date time c-ip", a)
    (ev,) = parse_proxysg("2026-11-27 01:00:00 10.30.0.8", a)
    assert get_field(ev, "source.ip") == "10.30.0.8"
    with pytest.raises(ParseError):  # b still expects the default main format
        parse_proxysg("2026-11-27 01:00:00 10.30.0.8", b)


def test_cef_extension_escapes_and_spaces() -> None:
    ext = r"msg=a\=b c\\d  e src=10.0.0.1 cs1Label=x cs1=multi word value   "
    assert cef_extensions(ext) == {
        "msg": r"a=b c\d  e",
        "src": "10.0.0.1",
        "cs1Label": "x",
        "cs1": "multi word value",
    }


def test_cef_behind_syslog_header_in_firewall_source() -> None:
    line = (
        "<134>Nov 27 10:00:00 fw01 CEF:0|Vendor|NGFW|9.1|100|Traffic denied|5|src=10.20.1.5 "
        "spt=51515 dst=203.0.113.80 dpt=443 proto=TCP act=deny suser=CITY\\\\suzuki"
    )
    (ev,) = parse_cef(line, ctx("cef", source="firewall"))
    assert ev["@timestamp"] == "2026-11-27T01:00:00.000Z"
    assert get_field(ev, "event.dataset") == "firewall"
    assert get_field(ev, "user.name") == "CITY\\suzuki"
    assert (get_field(ev, "event.action"), get_field(ev, "event.outcome")) == ("deny", "failure")
    assert get_field(ev, "destination.port") == 443
    assert get_field(ev, "network.transport") == "tcp"


def test_cef_rt_epoch_millis() -> None:
    line = "CEF:0|V|P|1|1|n|3|rt=1764205200000 request=https://x.example/a"
    (ev,) = parse_cef(line, ctx("cef"))
    assert ev["@timestamp"] == "2025-11-27T01:00:00.000Z"
    assert get_field(ev, "url.domain") == "x.example"


def test_cef_needs_full_header() -> None:
    with pytest.raises(ParseError):
        parse_cef("CEF:0|only|three", ctx("cef"))


def test_sniffers_pick_the_right_format(shared_dir: Path) -> None:
    samples = {
        "squid": "golden/squid/test-access.log",
        "zscaler": "golden/zscaler_zia/test-web.log",
        "cef": "golden/cef/test-cef.log",
    }
    for fmt, rel in samples.items():
        line = (shared_dir / "samples" / rel).read_text().splitlines()[0]
        hits = [
            name
            for (src, name), f in FORMATS.items()
            if src == "gateway" and f.sniff is not None and f.sniff(line)
        ]
        assert hits == [fmt], (fmt, hits)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('" \tab-=,')), max_size=40))
def test_elff_quick_split_matches_the_tokenizer(row: str) -> None:
    """Rows whose quotes wrap whole values take a fast path; whatever the
    quoting, the columns are those of the ELFF tokenizer (quoted = one value)."""
    reference = [plain or quoted for quoted, plain in _ELFF_TOKEN_RE.findall(row)]
    assert _elff_values(row) == reference
