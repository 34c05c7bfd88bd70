"""Firewall formats: allowed versus denied is obvious, addresses and users land
in the ECS fields the correlator reads."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import orjson
import pytest

from connectors.base import FORMATS, ParseContext
from connectors.cisco_asa import parse_asa
from connectors.firewall import (
    parse_fortigate,
    parse_iptables,
    parse_panos,
    split_panos_csv,
)
from zonewatch.ecs import get_field
from zonewatch.errors import ParseError

NOW = datetime(2026, 11, 27, tzinfo=UTC)


def ctx(fmt: str, tz: str = "Asia/Tokyo") -> ParseContext:
    return ParseContext("firewall", fmt, timezone=ZoneInfo(tz), now=NOW)


PAN_TRAFFIC = (
    "Nov 27 10:00:01 PA-3220 1,2026/11/27 10:00:01,012801096514,TRAFFIC,deny,2049,"
    "2026/11/27 10:00:00,10.10.5.21,10.50.0.9,0.0.0.0,0.0.0.0,core-to-lgwan-deny,"
    "city\\tanaka,,ssl,vsys1,core,lgwan,ethernet1/2,ethernet1/3,fwd,2026/11/27 10:00:00,"
    "24242,1,52454,443,0,0,0x0,tcp,deny,624,624,0,8,2026/11/27 09:59:58,0,any,0,32091135,"
    "0x0,10.0.0.0-10.255.255.255,10.0.0.0-10.255.255.255,0,8,0,policy-deny,0,0,0,0,,PA-3220,"
    "from-policy,,,0,,0,,N/A,0,0,0,0"
)


def test_panos_traffic_deny() -> None:
    (ev,) = parse_panos(PAN_TRAFFIC, ctx("panos"))
    assert ev["@timestamp"] == "2026-11-27T01:00:00.000Z"  # generated time, Tokyo
    assert get_field(ev, "event.action") == "deny"
    assert get_field(ev, "event.outcome") == "failure"
    assert "denied" in get_field(ev, "event.type")
    assert get_field(ev, "user.name") == "city\\tanaka"
    assert (get_field(ev, "source.ip"), get_field(ev, "source.port")) == ("10.10.5.21", 52454)
    assert (get_field(ev, "destination.ip"), get_field(ev, "destination.port")) == (
        "10.50.0.9",
        443,
    )
    assert get_field(ev, "source.nat.ip") is None  # 0.0.0.0 means no NAT
    assert get_field(ev, "rule.name") == "core-to-lgwan-deny"
    assert get_field(ev, "observer.ingress.zone") == "core"
    assert get_field(ev, "observer.egress.zone") == "lgwan"
    assert get_field(ev, "network.transport") == "tcp"
    assert "zone" not in ev  # enrichment adds zone.*


def test_panos_threat_url_with_quoted_commas() -> None:
    line = (
        "1,2026/11/27 10:05:00,012801096514,THREAT,url,2049,2026/11/27 10:05:00,10.10.5.21,"
        "203.0.113.50,10.0.0.1,203.0.113.50,web-out,city\\tanaka,,web-browsing,vsys1,core,"
        "internet,ethernet1/2,ethernet1/1,fwd,2026/11/27 10:05:00,5555,1,50000,80,40000,80,0x0,"
        'tcp,block-url,"evil.example.com/a,b/c.php?x=1",(9999),malware,informational,'
        "client-to-server,1234,0x0,10.0.0.0-10.255.255.255,US,0,text/html,0,,,1,"
        '"Mozilla/5.0 (Windows NT 10.0, Win64)",,,'
    )
    (ev,) = parse_panos(line, ctx("panos"))
    assert get_field(ev, "event.action") == "block-url"
    assert get_field(ev, "event.outcome") == "failure"
    assert get_field(ev, "url.domain") == "evil.example.com"
    assert get_field(ev, "url.path") == "/a,b/c.php"
    assert get_field(ev, "user_agent.original") == "Mozilla/5.0 (Windows NT 10.0, Win64)"


def test_panos_csv_braces_and_quotes_stay_one_column() -> None:
    cols = split_panos_csv('a,"b,c",{d,e},"f""g",')
    assert cols == ["a", "b,c", "{d,e}", 'f"g', ""]


def test_panos_short_record_is_rejected() -> None:
    with pytest.raises(ParseError, match="columns"):
        parse_panos(
            "1,2026/11/27 10:00:01,0128,TRAFFIC,end,2049,2026/11/27 10:00:00,1.1.1.1", ctx("panos")
        )


FORTI_TRAFFIC = (
    'date=2026-11-27 time=10:00:00 devname="FG-CITY" devid="FG100F" eventtime={et} '
    'logid="0000000013" type="traffic" subtype="forward" level="notice" vd="root" '
    'srcip=10.10.5.21 srcport=51000 srcintf="core" srcintfrole="lan" dstip=203.0.113.80 '
    'dstport=443 dstintf="wan1" dstintfrole="wan" proto=6 action="{action}" policyid=7 '
    'policyname="core out" service="HTTPS" sentbyte=100 rcvdbyte=2000 user="tanaka"'
)


@pytest.mark.parametrize(
    "eventtime",
    ["1764205200", "1764205200123456", "1764205200123456789"],
    ids=["s (FortiOS 5)", "us (FortiOS 6)", "ns (FortiOS 7)"],
)
def test_fortigate_eventtime_units(eventtime: str) -> None:
    line = FORTI_TRAFFIC.format(et=eventtime, action="accept").replace(
        "date=2026-11-27 time=10:00:00 ", ""
    )
    (ev,) = parse_fortigate(line, ctx("fortigate"))
    assert ev["@timestamp"].startswith("2025-11-27T01:00:00.")


def test_fortigate_deny_and_accept() -> None:
    (deny,) = parse_fortigate(FORTI_TRAFFIC.format(et="1", action="deny"), ctx("fortigate"))
    assert (get_field(deny, "event.action"), get_field(deny, "event.outcome")) == (
        "deny",
        "failure",
    )
    assert deny["@timestamp"] == "2026-11-27T01:00:00.000Z"
    assert get_field(deny, "user.name") == "tanaka"
    assert get_field(deny, "rule.name") == "core out"
    assert get_field(deny, "network.transport") == "tcp"
    assert get_field(deny, "observer.ingress.zone") == "lan"
    assert get_field(deny, "network.bytes") == 2100
    (ok,) = parse_fortigate(FORTI_TRAFFIC.format(et="1", action="close"), ctx("fortigate"))
    assert (get_field(ok, "event.action"), get_field(ok, "event.outcome")) == ("close", "success")


def test_fortigate_syslog_prefix_and_tz_field() -> None:
    line = "<189>Nov 27 10:00:00 fg " + FORTI_TRAFFIC.format(et="1", action="accept").replace(
        "devname=", 'tz="+0100" devname='
    )
    (ev,) = parse_fortigate(line, ctx("fortigate"))
    assert ev["@timestamp"] == "2026-11-27T09:00:00.000Z"


def test_fortigate_needs_fields() -> None:
    with pytest.raises(ParseError):
        parse_fortigate("hello world", ctx("fortigate"))


def test_numbers_beyond_64_bits_are_dropped_not_shipped() -> None:
    """A corrupt counter must not make the event unencodable (orjson, like
    ECS, stops at 64-bit integers): the field is left out instead."""
    cols = PAN_TRAFFIC.split(",")
    cols[31] = "9" * 25  # total bytes
    cols[36] = "9" * 12  # elapsed seconds: fits alone, not once in nanoseconds
    (ev,) = parse_panos(",".join(cols), ctx("panos"))
    assert get_field(ev, "network.bytes") is None
    assert get_field(ev, "event.duration") is None
    assert get_field(ev, "source.bytes") == 624
    orjson.dumps(ev)
    line = (
        FORTI_TRAFFIC.format(et="1", action="deny")
        .replace("sentbyte=100", f"sentbyte={2**62}")
        .replace("rcvdbyte=2000", f"rcvdbyte={2**62}")
    )
    (ev,) = parse_fortigate(line + " duration=99999999999", ctx("fortigate"))
    assert get_field(ev, "source.bytes") == 2**62
    assert get_field(ev, "network.bytes") is None  # the sum would overflow
    assert get_field(ev, "event.duration") is None
    orjson.dumps(ev)


@pytest.mark.parametrize(
    ("line", "action", "outcome", "src", "dst"),
    [
        (
            "Nov 27 10:00:00 asa01 : %ASA-4-106023: Deny tcp src inside:10.10.5.21/51000 dst "
            'lgwan:10.50.0.9/445 by access-group "core_in" [0x0, 0x0]',
            "deny",
            "failure",
            ("10.10.5.21", 51000),
            ("10.50.0.9", 445),
        ),
        (
            "Nov 27 10:00:00 asa01 : %ASA-6-106100: access-list core_in permitted udp "
            "inside/10.10.5.21(5353) -> outside/203.0.113.1(53) hit-cnt 1 first hit [0x1, 0x0]",
            "allow",
            "success",
            ("10.10.5.21", 5353),
            ("203.0.113.1", 53),
        ),
        (
            "Nov 27 10:00:00 asa01 : %ASA-6-302013: Built outbound TCP connection 77 for "
            "outside:203.0.113.80/443 (203.0.113.80/443) to inside:10.10.5.21/51000 "
            "(198.51.100.2/61000)",
            "flow-creation",
            "success",
            ("10.10.5.21", 51000),
            ("203.0.113.80", 443),
        ),
        (
            "Nov 27 10:00:00 asa01 : %ASA-6-302016: Teardown UDP connection 78 for "
            "inside:10.10.5.21/5353 to outside:203.0.113.1/53 duration 0:00:01 bytes 120",
            "flow-expiration",
            "success",
            ("10.10.5.21", 5353),
            ("203.0.113.1", 53),
        ),
    ],
)
def test_asa_messages(line: str, action: str, outcome: str, src: tuple, dst: tuple) -> None:
    (ev,) = parse_asa(line, ctx("asa"))
    assert ev["@timestamp"] == "2026-11-27T01:00:00.000Z"
    assert get_field(ev, "event.action") == action
    assert get_field(ev, "event.outcome") == outcome
    assert (get_field(ev, "source.ip"), get_field(ev, "source.port")) == src
    assert (get_field(ev, "destination.ip"), get_field(ev, "destination.port")) == dst
    assert get_field(ev, "observer.hostname") == "asa01"


def test_asa_outbound_nat_and_zone_abbreviation() -> None:
    line = (
        "Nov 26 20:00:00 EST: %ASA-6-302013: Built outbound TCP connection 77 for "
        "outside:203.0.113.80/443 (203.0.113.80/443) to inside:10.10.5.21/51000 "
        "(198.51.100.2/61000)"
    )
    (ev,) = parse_asa(line, ctx("asa"))
    assert ev["@timestamp"] == "2026-11-27T01:00:00.000Z"
    assert get_field(ev, "source.nat.ip") == "198.51.100.2"


def test_asa_unknown_message_is_still_an_event() -> None:
    """An ID outside the catalogue (or a catalogued ID in a shape it does not
    know) keeps code, time and text, and says its outcome is unknown."""
    for line in (
        "Nov 27 10:00:00 asa01 : %ASA-1-104001: (Primary) Switching to ACTIVE - mate down",
        "Nov 27 10:00:00 asa01 : %ASA-5-111008: User 'enable_15' executed",
    ):
        (ev,) = parse_asa(line, ctx("asa"))
        assert get_field(ev, "event.code") == line.split("-")[2].split(":")[0]
        assert get_field(ev, "event.outcome") == "unknown"
        assert get_field(ev, "event.action") is None
        assert ev["message"] == line.split(": ", 1)[1].split(": ", 1)[1]


def test_iptables_drop_and_ipv6() -> None:
    line = (
        "Nov 27 10:00:00 gw kernel: [12.5] DROP_FWD: IN=eth1 OUT=eth2 MAC=aa:bb:cc:dd:ee:ff:"
        "11:22:33:44:55:66:08:00 SRC=10.10.5.21 DST=10.50.0.9 LEN=60 TTL=63 ID=1 DF PROTO=TCP "
        "SPT=51000 DPT=445 WINDOW=1 RES=0x00 SYN URGP=0"
    )
    (ev,) = parse_iptables(line, ctx("iptables"))
    assert (get_field(ev, "event.action"), get_field(ev, "event.outcome")) == (
        "drop_fwd",
        "failure",
    )
    assert get_field(ev, "destination.port") == 445
    assert get_field(ev, "source.mac") == "11-22-33-44-55-66"
    assert get_field(ev, "observer.egress.interface.name") == "eth2"
    v6 = (
        "Nov 27 10:00:00 gw kernel: nft-accept: IN=eth0 OUT= "
        "SRC=2001:0db8:0000:0000:0000:0000:0000:0001 "
        "DST=2001:db8::2 LEN=104 PROTO=ICMPv6 TYPE=128 CODE=0"
    )
    (ev,) = parse_iptables(v6, ctx("iptables"))
    assert get_field(ev, "source.ip") == "2001:db8::1"
    assert get_field(ev, "network.transport") == "ipv6-icmp"
    assert get_field(ev, "event.outcome") == "success"


def test_iptables_icmp_error_keeps_outer_addresses() -> None:
    line = (
        "Nov 27 10:00:00 DENY: IN=eth0 OUT= SRC=192.168.2.71 DST=192.168.2.83 LEN=88 PROTO=ICMP "
        "TYPE=3 CODE=3 [SRC=192.168.2.83 DST=192.168.2.71 LEN=60 PROTO=UDP SPT=1 DPT=2 ]"
    )
    (ev,) = parse_iptables(line, ctx("iptables"))
    assert (get_field(ev, "source.ip"), get_field(ev, "destination.ip")) == (
        "192.168.2.71",
        "192.168.2.83",
    )
    assert get_field(ev, "event.action") == "deny"


def test_firewall_sniffers_are_unambiguous() -> None:
    lines = {
        "panos": PAN_TRAFFIC,
        "fortigate": FORTI_TRAFFIC.format(et="1", action="deny"),
        "asa": "Nov 27 10:00:00 asa01 : %ASA-4-106023: Deny tcp src a:1.1.1.1/1 dst b:2.2.2.2/2 "
        'by access-group "x"',
        "iptables": "Nov 27 10:00:00 gw kernel: IN=eth0 OUT= SRC=1.1.1.1 DST=2.2.2.2 PROTO=TCP",
    }
    for fmt, line in lines.items():
        hits = [
            name
            for (src, name), f in FORMATS.items()
            if src == "firewall" and f.sniff is not None and f.sniff(line)
        ]
        assert hits == [fmt], (fmt, hits)
