from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.base import ParseContext
from connectors.enrich import Enricher
from connectors.vdi import parse_avd, parse_citrix, parse_citrix_adc, parse_horizon
from zonewatch.errors import ParseError
from zonewatch.zones import load_zone_map

ROOT = Path(__file__).resolve().parent.parent
TANAKA_SID = "S-1-5-21-1004336348-1177238915-682003330-1105"


def test_horizon_rfc5424_sample_from_sc4s(shared_dir: Path) -> None:
    line = (shared_dir / "samples/raw/vdi_horizon/sc4s_test_vmware_horizon_ietf.txt").read_text()
    line = line.splitlines()[1]
    [ev] = parse_horizon(line, ParseContext("vdi", "horizon"))
    assert ev["@timestamp"] == "2020-06-18T13:44:09.039Z"
    assert ev["event"]["action"] == "vdi-login"
    assert ev["user"]["id"] == "S-1-5-21-873381292-3070774752-20851"


def test_horizon_sid_becomes_upn_and_pool_host_gets_zone() -> None:
    line = (
        '<14>1 2026-03-02T09:15:00.000+09:00 cs01 View - 73 [View@6876 Severity="INFO" '
        f'Module="Agent" EventType="AGENT_CONNECTED" UserSID="{TANAKA_SID}" '
        'MachineName="lg-vdi-07.city.local" MachineIPAddress="10.50.20.17" '
        'ClientIpAddress="10.10.4.21" DesktopId="lgwan-pool" BrokerSessionId="8d1f"] '
        "User CITY\\tanaka.h has logged in to a new session"
    )
    [ev] = parse_horizon(line, ParseContext("vdi", "horizon"))
    Enricher(load_zone_map(ROOT / "rules/zones.yaml"))(ev)
    assert ev["@timestamp"] == "2026-03-02T00:15:00.000Z"
    assert ev["event"]["action"] == "vdi-connect"
    assert ev["user"]["name"] == "tanaka.hanako@city.example.lg.jp"
    assert ev["vdi"] == {"pool": "lgwan-pool", "session_id": "8d1f"}
    assert ev["host"]["name"] == "lg-vdi-07.city.local"
    assert ev["zone"]["crossing"] == "core->vdi"
    assert ev["zone"]["destination_target"] == "lgwan"


def test_horizon_event_database_json_auth_failure() -> None:
    row = {
        "EventType": "BROKER_USER_AUTHFAILED_BAD_USER_PASSWORD",
        "Severity": "AUDIT_FAIL",
        "Module": "Broker",
        "Time": "2026-03-02 09:00:01",
        "UserDisplayName": "CITY\\sato.k",
        "ModuleAndEventText": "User CITY\\sato.k failed to authenticate",
    }
    [ev] = parse_horizon(json.dumps(row), ParseContext("vdi", "horizon"))
    assert ev["event"]["action"] == "vdi-login-failed"
    assert ev["event"]["outcome"] == "failure"
    assert ev["@timestamp"] == "2026-03-02T00:00:01.000Z"  # no offset: Asia/Tokyo


def test_citrix_odata_page_sessions_and_connections() -> None:
    page = {
        "@odata.context": "x",
        "value": [
            {
                "SessionKey": "a1",
                "ConnectionState": 2,
                "StartDate": "2026-03-02T00:00:00Z",
                "ModifiedDate": "2026-03-02T01:00:00Z",
                "User": {"Upn": "suzuki.yui@city.example.lg.jp"},
                "Machine": {
                    "DnsName": "mn-vdi-01",
                    "IPAddress": "10.50.10.5",
                    "DesktopGroup": {"Name": "MyNumber"},
                },
            },
            {
                "Id": 7,
                "SessionKey": "a1",
                "ClientAddress": "10.10.9.9",
                "LogOnEndDate": "2026-03-02T00:00:05Z",
                "Protocol": "HDX",
            },
        ],
    }
    sess, conn = parse_citrix(json.dumps(page), ParseContext("vdi", "citrix"))
    assert sess["event"]["action"] == "vdi-disconnect"
    assert sess["vdi"]["pool"] == "MyNumber"
    assert sess["destination"]["ip"] == "10.50.10.5"
    assert conn["event"]["action"] == "vdi-connect"
    assert conn["source"]["ip"] == "10.10.9.9"
    assert conn["vdi"]["session_id"] == "a1"


def test_avd_rows_grouped_by_correlation_id() -> None:
    ctx = ParseContext("vdi", "avd")
    base = {
        "CorrelationId": "c-1",
        "UserName": "watanabe.taro@city.example.lg.jp",
        "ClientSideIPAddress": "10.10.3.3:50312",
        "SessionHostIPAddress": "10.50.30.4",
        "SessionHostName": "inet-vdi-4.city.local",
        "_ResourceId": "/subscriptions/s/resourcegroups/r/providers/"
        "microsoft.desktopvirtualization/hostpools/inet-pool",
    }
    started = parse_avd(
        json.dumps({**base, "State": "Started", "TimeGenerated": "2026-03-02T00:00:00Z"}), ctx
    )
    again = parse_avd(
        json.dumps({**base, "State": "Started", "TimeGenerated": "2026-03-02T00:00:00Z"}), ctx
    )
    done = parse_avd(
        json.dumps({**base, "State": "Completed", "TimeGenerated": "2026-03-02T00:30:00Z"}), ctx
    )
    assert [e["event"]["action"] for e in started + again + done] == ["vdi-login", "vdi-disconnect"]
    assert done[0]["event"]["duration"] == 30 * 60 * 10**9
    assert done[0]["vdi"]["pool"] == "inet-pool"
    assert done[0]["source"]["ip"] == "10.10.3.3"


def test_citrix_adc_login_failed_and_garbage() -> None:
    ok = (
        "<134> 03/02/2026:00:00:00 GMT adc01 0-PPE-0 : default AAA LOGIN_FAILED 1234 0 : "
        'User sato.k - Client_ip 10.10.7.7 - Failure_reason "Invalid credentials"'
    )
    [ev] = parse_citrix_adc(ok, ParseContext("vdi", "citrix-adc"))
    assert ev["event"]["action"] == "vdi-login-failed"
    assert ev["source"]["ip"] == "10.10.7.7"
    assert ev["user"]["name"] == "sato.k"


PARSERS = [
    (parse_horizon, "horizon"),
    (parse_citrix, "citrix"),
    (parse_citrix_adc, "citrix-adc"),
    (parse_avd, "avd"),
]
SEED = (
    "<134> 08/18/2026:10:02:00 GMT adc.example.com 0-PPE-0 : default SSLVPN ICASTART 700003 0 "
    ": Source 192.0.2.12:55003 - Destination 198.51.100.22:2598 - username:domainname bob:x"
)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=300),
        st.integers(0, len(SEED)).flatmap(
            lambda i: st.text(max_size=6).map(lambda t: SEED[:i] + t + SEED[i + 3 :])
        ),
        st.dictionaries(
            st.sampled_from(
                [
                    "State",
                    "CorrelationId",
                    "TimeGenerated",
                    "EventType",
                    "Time",
                    "SessionKey",
                    "ConnectionState",
                    "StartDate",
                ]
            ),
            st.one_of(st.text(max_size=20), st.integers(), st.none()),
        ).map(json.dumps),
    )
)
def test_random_and_mutated_lines_parse_or_raise_parse_error(line: str) -> None:
    for fn, fmt in PARSERS:
        try:
            events = fn(line, ParseContext("vdi", fmt))
        except ParseError:
            continue
        for ev in events:
            assert ev["@timestamp"].endswith("Z")
            assert ev["event"]["action"]


def test_avd_completed_connections_leave_the_open_map_and_state_stays_bounded() -> None:
    from connectors.vdi import avd as vdi

    ctx = ParseContext("vdi", "avd")

    def row(corr: str, state: str, minute: int) -> str:
        return json.dumps({
            "CorrelationId": corr, "State": state, "UserName": "u@example.jp",
            "TimeGenerated": f"2026-03-02T00:{minute:02d}:00Z",
        })  # fmt: skip

    n = vdi._AVD_MAX_DONE + 500
    for i in range(n):
        for minute, state in enumerate(("Started", "Connected", "Completed")):
            parse_avd(row(f"c{i}", state, minute), ctx)
    assert ctx.state[vdi._AVD_OPEN] == {}
    assert len(ctx.state[vdi._AVD_DONE]) == vdi._AVD_MAX_DONE
    last = f"c{n - 1}"
    assert parse_avd(row(last, "Completed", 9), ctx) == []  # exported twice
    [late] = parse_avd(row(last, "Reconnecting", 9), ctx)  # a new state still counts
    assert late["vdi"]["session_id"] == last and "duration" not in late["event"]
