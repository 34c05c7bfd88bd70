from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.base import ParseContext
from connectors.intune import parse_devices, parse_diagnostic, parse_graph
from zonewatch.errors import ParseError


def _device(state: str, owner: str = "Corporate", when: str = "2026-03-02T00:10:00Z", **kw):
    props = {
        "DeviceId": "6c4217e6-bc89-4e7f-a04c-129f04866de4",
        "DeviceName": "LT-0142",
        "UPN": "tanaka.hanako@city.example.lg.jp",
        "CompliantState": state,
        "Ownership": owner,
        "InGracePeriodUntil": "9999-12-31 23:59:59.9999999",
        **kw,
    }
    return json.dumps(
        {"time": when, "category": "Devices", "operationName": "Devices", "properties": props}
    )


def test_snapshots_turn_into_change_events_only_when_something_changed() -> None:
    ctx = ParseContext("intune", "devices")
    [first] = parse_devices(_device("Compliant"), ctx)
    assert first["event"]["action"] == "device-observed"
    assert first["intune"]["compliance"] == "compliant"
    assert parse_devices(_device("Compliant", when="2026-03-02T01:10:00Z"), ctx) == []
    [changed] = parse_devices(
        _device(
            "Noncompliant", when="2026-03-02T02:10:00Z", InGracePeriodUntil="2026-03-05 00:00:00"
        ),
        ctx,
    )
    assert changed["event"]["action"] == "device-compliance-changed"
    assert changed["intune"]["compliance"] == "noncompliant"
    assert changed["intune"]["previous"]["compliance"] == "compliant"
    assert changed["intune"]["grace_period_until"] == "2026-03-05T00:00:00.000Z"
    assert changed["device"]["id"] == "6c4217e6-bc89-4e7f-a04c-129f04866de4"
    assert changed["@timestamp"] == "2026-03-02T02:10:00.000Z"


def test_byod_ownership_change_and_state_survives_a_restart() -> None:
    ctx = ParseContext("intune", "devices")
    parse_devices(_device("Compliant"), ctx)
    saved = orjson.loads(orjson.dumps(ctx.state))  # what the checkpoint stores
    restarted = ParseContext("intune", "devices", state=saved)
    [ev] = parse_devices(_device("Compliant", owner="Personal"), restarted)
    assert ev["event"]["action"] == "device-ownership-changed"
    assert ev["intune"]["ownership"] == "personal"


def test_log_analytics_rows_and_event_hub_batches() -> None:
    row = {
        "TimeGenerated": "2026-03-02T00:00:00Z",
        "Type": "IntuneDevices",
        "DeviceId": "d-1",
        "DeviceName": "BYOD-SATO-IPHONE",
        "UPN": "sato.kenji@city.example.lg.jp",
        "CompliantState": "Noncompliant",
        "Ownership": "Personal",
    }
    [ev] = parse_diagnostic(json.dumps(row), ParseContext("intune", "diagnostic"))
    assert (ev["intune"]["compliance"], ev["intune"]["ownership"]) == ("noncompliant", "personal")
    batch = json.dumps(
        {"records": [json.loads(_device("Compliant")), json.loads(_device("Error"))]}
    )
    events = parse_diagnostic(batch, ParseContext("intune", "diagnostic"))
    assert [e["intune"]["compliance"] for e in events] == ["compliant", "error"]
    assert json.loads(events[1]["event"]["original"])["properties"]["CompliantState"] == "Error"


def test_graph_page_from_the_docs(shared_dir) -> None:
    page = (
        shared_dir / "samples/raw/intune/graph_auditEvents_list_response_example.json"
    ).read_text()
    [ev] = parse_graph(page, ParseContext("intune", "graph"))
    assert ev["@timestamp"] == "2017-01-01T07:59:51.636Z"  # -08:00 in the source
    assert ev["user"]["name"] == "User Principal Name value"
    assert ev["event"]["action"] == "activity-value"
    assert ev["event"]["id"] == "59653ce8-3ce8-5965-e83c-6559e83c6559"


def test_not_intune_is_a_parse_error() -> None:
    with pytest.raises(ParseError):
        parse_diagnostic(
            "Feb 12 06:43:08 host sshd[1]: hello", ParseContext("intune", "diagnostic")
        )
    with pytest.raises(ParseError):
        parse_graph('{"value": [{"activity": "x"}]}', ParseContext("intune", "graph"))


GOLDEN = (
    '{"time":"2026-02-12T06:43:08.8107000Z","category":"AuditLogs","operationName":"Delete X",'
    '"properties":{"Actor":{"UPN":"a@b"},"AuditEventId":"1"},"resultType":"Success"}'
)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=300),
        st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
        st.integers(0, len(GOLDEN)).flatmap(
            lambda i: st.text(max_size=5).map(lambda t: GOLDEN[:i] + t + GOLDEN[i:])
        ),
    )
)
def test_random_and_mutated_lines_parse_or_raise_parse_error(line: str) -> None:
    for fn, fmt in (
        (parse_diagnostic, "diagnostic"),
        (parse_graph, "graph"),
        (parse_devices, "devices"),
    ):
        try:
            events = fn(line, ParseContext("intune", fmt))
        except ParseError:
            continue
        for ev in events:
            assert ev["@timestamp"].endswith("Z")
