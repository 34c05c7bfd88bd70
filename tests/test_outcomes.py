"""One outcome vocabulary: each vendor's decision words, read from real-looking
lines, give the outcome their vendor table says; a word outside the table
keeps event.action and says unknown."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import orjson
import pytest

from connectors.base import ParseContext
from connectors.cisco_asa import parse_asa
from connectors.cisco_asa.fields import _FTD_ACTIONS
from connectors.firewall import parse_fortigate, parse_panos
from connectors.gateway import parse_cef, parse_zscaler
from connectors.outcomes import (
    CEF_GENERIC,
    CEF_VENDORS,
    FORTIGATE_EVENT,
    FORTIGATE_TRAFFIC,
    FORTIGATE_UTM,
    PANOS,
    ZSCALER,
    Verdict,
)

NOW = datetime(2026, 11, 27, tzinfo=UTC)


def ctx(source: str, fmt: str) -> ParseContext:
    return ParseContext(source, fmt, timezone=ZoneInfo("Asia/Tokyo"), now=NOW)


def _check(ev: dict, word: str, verdict: Verdict | None) -> None:
    event = ev["event"]
    assert event["action"] == word.lower()
    if verdict is None:
        assert event["outcome"] == "unknown"
        assert not {"allowed", "denied"} & set(event.get("type", []))
    else:
        assert event["outcome"] == verdict.outcome
        if verdict.type is not None:
            assert verdict.type in event["type"]


FORTI = (
    'date=2026-11-26 time=10:00:00 tz="+0900" logid="{logid}" type="{type}" subtype="{sub}" '
    'level="notice" vd="root" srcip=10.10.4.21 srcport=51000 dstip=203.0.113.80 dstport=443 '
    'proto=6 action="{word}" policyid=12'
)


@pytest.mark.parametrize(
    ("table", "logtype", "sub"),
    [(FORTIGATE_TRAFFIC, "traffic", "forward"), (FORTIGATE_UTM, "utm", "webfilter"),
     (FORTIGATE_EVENT, "event", "system")],
    ids=["traffic", "utm", "event"],
)  # fmt: skip
def test_fortigate_words(table: dict[str, Verdict], logtype: str, sub: str) -> None:
    for word, verdict in [*table.items(), ("no-such-word", None)]:
        line = FORTI.format(logid="0000000013", type=logtype, sub=sub, word=word)
        (ev,) = parse_fortigate(line, ctx("firewall", "fortigate"))
        _check(ev, word, verdict)


def test_fortigate_status_wins_over_the_action_word() -> None:
    line = FORTI.format(logid="0101037129", type="event", sub="vpn", word="tunnel-up")
    (ev,) = parse_fortigate(line + ' status="failure"', ctx("firewall", "fortigate"))
    assert ev["event"]["outcome"] == "failure"


PAN = (
    "1,2026/11/26 10:00:01,013201001234,THREAT,url,2817,2026/11/26 10:00:00,10.10.4.22,"
    "203.0.113.120,198.51.100.2,203.0.113.120,core-to-web,,,web-browsing,vsys1,core,internet,"
    "ethernet1/2,ethernet1/1,fwd,2026/11/26 10:00:00,88002,1,51030,80,40211,80,0xb000,tcp,"
    "{word},upload.example.net/put,(9999),online-storage,informational,client-to-server,7302"
)


def test_panos_words() -> None:
    for word, verdict in [*PANOS.items(), ("no-such-word", None)]:
        (ev,) = parse_panos(PAN.format(word=word), ctx("firewall", "panos"))
        _check(ev, word, verdict)


def test_zscaler_words() -> None:
    for word, verdict in [*ZSCALER.items(), ("Isolated", None)]:
        line = orjson.dumps({"time": "Thu Nov 26 10:00:00 2026", "action": word,
                             "eurl": "www.example.jp/", "cip": "10.10.4.21"}).decode()  # fmt: skip
        (ev,) = parse_zscaler(line, ctx("gateway", "zscaler"))
        _check(ev, word, verdict)


@pytest.mark.parametrize("vendor", [*sorted(CEF_VENDORS), "Unknown Vendor"])
def test_cef_words_per_vendor(vendor: str) -> None:
    table = {**CEF_GENERIC, **CEF_VENDORS.get(vendor, {})}
    for word, verdict in [*CEF_VENDORS.get(vendor, CEF_GENERIC).items(), ("zzz-word", None)]:
        line = f"CEF:0|{vendor}|Product|1.0|100|Name|5|act={word} src=10.10.4.21 rt=1795658703000"
        (ev,) = parse_cef(line, ctx("gateway", "cef"))
        _check(ev, word, table.get(word) if verdict is not None else None)


def test_ftd_rule_actions() -> None:
    for word, verdict in [*_FTD_ACTIONS.items(), ("Quarantine", None)]:
        line = (
            f"<113>Nov 26 2026 10:05:00 ftd01 : %FTD-1-430002: ConnectionID: 1, "
            f"AccessControlRuleAction: {word}, SrcIP: 10.10.4.21, DstIP: 203.0.113.80, "
            "SrcPort: 51010, DstPort: 443, Protocol: tcp"
        )
        (ev,) = parse_asa(line, ctx("firewall", "asa"))
        assert ev["event"]["action"] == "connection-started"
        assert ev["event"]["outcome"] == (verdict.outcome if verdict else "unknown")
