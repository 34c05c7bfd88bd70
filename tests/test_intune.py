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


# An Entra ID sign-in as its diagnostic setting sends it to Event Hub (the
# SignInLogs category of microsoft.aadiam), and as Graph /auditLogs/signIns lists it.
ENTRA_SIGNIN_HUB = {
    "time": "2026-11-26T00:12:03.0000000Z",
    "resourceId": "/tenants/5f1c0d2e-8a34-4c1b-9e77-0c3b2a1d9f10/providers/Microsoft.aadiam",
    "operationName": "Sign-in activity",
    "operationVersion": "1.0",
    "category": "SignInLogs",
    "tenantId": "5f1c0d2e-8a34-4c1b-9e77-0c3b2a1d9f10",
    "resultType": "0",
    "callerIpAddress": "203.0.113.7",
    "identity": "Tanaka Hanako",
    "properties": {
        "createdDateTime": "2026-11-26T00:12:03.0000000+00:00",
        "userPrincipalName": "tanaka.hanako@city.example.lg.jp",
        "appDisplayName": "Azure Virtual Desktop Client",
        "ipAddress": "203.0.113.7",
        "status": {"errorCode": 0},
    },
}
ENTRA_SIGNIN_GRAPH = {
    "id": "66ea54eb-6301-4ee5-be62-ff5a759b0100",
    "createdDateTime": "2026-11-26T00:12:03Z",
    "userPrincipalName": "tanaka.hanako@city.example.lg.jp",
    "appDisplayName": "Azure Virtual Desktop Client",
    "ipAddress": "203.0.113.7",
    "conditionalAccessStatus": "success",
    "status": {"errorCode": 0},
}
ENTRA_DIRECTORY_AUDIT = {
    "id": "Directory_1",
    "category": "UserManagement",
    "activityDateTime": "2026-11-26T00:20:00Z",
    "activityDisplayName": "Update user",
    "loggedByService": "Core Directory",
    "initiatedBy": {"user": {"userPrincipalName": "kondo.makoto@city.example.lg.jp"}},
    "targetResources": [{"userPrincipalName": "tanaka.hanako@city.example.lg.jp"}],
    "result": "success",
}


@pytest.mark.parametrize("fmt", ["diagnostic", "devices", "graph"])
@pytest.mark.parametrize(
    ("record", "said"),
    [
        (ENTRA_SIGNIN_HUB, "Entra ID sign-in"),
        (ENTRA_SIGNIN_GRAPH, "Entra ID sign-in"),
        (ENTRA_DIRECTORY_AUDIT, "Entra ID"),
        ({**ENTRA_SIGNIN_HUB, "category": "AuditLogs", "properties": {
            "activityDisplayName": "Update user", "loggedByService": "Core Directory"}},
         "Entra ID audit"),
    ],
)  # fmt: skip
def test_records_of_other_services_are_refused_not_mislabelled(
    fmt: str, record: dict, said: str
) -> None:
    from connectors.inputs import Record
    from connectors.pipeline import Pipeline

    for name in (fmt, "auto"):
        pipeline = Pipeline("intune", name, zones=None)
        events, letter = pipeline.handle(Record(json.dumps(record).encode(), position=1))
        assert events == []
        assert letter is not None, f"{name} accepted {record}"
        if name == fmt and fmt != "devices":
            assert said in letter.reason and "not an Intune record" in letter.reason


def test_operational_logs_name_the_host_by_its_machine_name() -> None:
    """DeviceHostName is what firewall and VDI logs call the machine;
    DeviceName is Intune's editable display name."""
    row = {
        "time": "2026-11-26T00:05:00Z",
        "category": "OperationalLogs",
        "operationName": "Enrollment",
        "resultType": "Success",
        "resourceId": "/TENANTS/5f1c/PROVIDERS/MICROSOFT.INTUNE",
        "properties": {
            "IntuneDeviceId": "8d2f6a10-44c1-4b7e-9a35-1e0c7b5d2a01",
            "DeviceName": "tanaka_Windows_11/26/2026_9:05 AM",
            "DeviceHostName": "LT-0142",
            "UPN": "tanaka.hanako@city.example.lg.jp",
            "Os": "Windows",
            "OsVersion": "10.0.22631.4460",
            "EnrollmentType": "AzureDomainJoined",
        },
    }
    [ev] = parse_diagnostic(json.dumps(row), ParseContext("intune", "diagnostic"))
    assert ev["host"]["name"] == "LT-0142"
    assert ev["host"]["os"] == {"name": "Windows", "version": "10.0.22631.4460"}
    assert ev["intune"]["device_name"] == "tanaka_Windows_11/26/2026_9:05 AM"
    assert ev["device"]["id"] == "8d2f6a10-44c1-4b7e-9a35-1e0c7b5d2a01"
