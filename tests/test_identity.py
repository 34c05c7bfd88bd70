"""Source ``identity``: Entra ID sign-ins and the Microsoft 365 unified audit log.

Golden records in tests/data/identity/ were written from Microsoft's published
schemas (Graph ``signIn`` resource, Azure Monitor ``SigninLogs`` /
``AADNonInteractiveUserSignInLogs`` tables, diagnostic-settings records as
Event Hub delivers them, the Office 365 Management Activity API schema, whose
reference sample "Add User." is used verbatim); each ``*.expected.json`` lists
per event the fields a user of zonewatch relies on (``null``: must be absent).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import ROOT
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.base import ParseContext
from connectors.entra import TRAVEL_KEEP, distance_km
from connectors.identity import parse_m365, parse_signins
from connectors.inputs import Record
from connectors.m365 import action_slug
from connectors.pipeline import Pipeline
from zonewatch.ecs import get_field
from zonewatch.errors import ParseError
from zonewatch.zones import load_zone_map

DATA = ROOT / "tests" / "data" / "identity"
GOLDEN = [
    ("graph_signins_page", parse_signins),
    ("eventhub_signins_batch", parse_signins),
    ("la_noninteractive_row", parse_signins),
    ("m365_content_blob", parse_m365),
]


def _line(path: Path) -> str:
    """A pretty-printed golden file as the one line a file input would read."""
    return json.dumps(json.loads(path.read_text(encoding="utf-8")), ensure_ascii=False)


@pytest.mark.parametrize(("name", "parse"), GOLDEN, ids=[g[0] for g in GOLDEN])
def test_golden_records_map_to_the_expected_ecs_fields(name: str, parse: Any) -> None:
    events = parse(_line(DATA / f"{name}.json"), ParseContext("identity", name))
    expected = json.loads((DATA / f"{name}.expected.json").read_text(encoding="utf-8"))
    assert len(events) == len(expected)
    for n, (event, fields) in enumerate(zip(events, expected, strict=True)):
        got = {field: get_field(event, field) for field in fields}
        assert got == fields, f"{name} event {n}"
        # each event of a batch keeps only its own record as event.original
        original = orjson.loads(event["event"]["original"])
        assert "records" not in original and "value" not in original


def test_every_delivery_of_one_sign_in_reads_the_same() -> None:
    """Graph object, Event Hub record and Log Analytics row of one sign-in agree."""
    graph = {
        "id": "a1b2", "createdDateTime": "2026-11-26T00:42:31Z",
        "userPrincipalName": "sato.kenji@city.example.lg.jp", "userId": "u-1",
        "appId": "app-1", "appDisplayName": "Microsoft Teams", "ipAddress": "192.0.2.4",
        "status": {"errorCode": 53000, "failureReason": "Device is not compliant."},
        "deviceDetail": {"deviceId": "d-1", "displayName": "LT-0188", "isCompliant": False,
                         "isManaged": True, "trustType": "Hybrid Azure AD joined"},
        "conditionalAccessStatus": "failure", "isInteractive": True,
        "location": {"city": "Chiyoda", "countryOrRegion": "JP",
                     "geoCoordinates": {"latitude": 35.69, "longitude": 139.75}},
    }  # fmt: skip
    eventhub = {
        "time": "2026-11-26T00:42:31.0000000Z", "category": "SignInLogs",
        "operationName": "Sign-in activity", "resultType": "53000",
        "tenantId": "t-1", "properties": graph,
    }  # fmt: skip
    row = {
        "TimeGenerated": "2026-11-26T00:42:31Z", "Type": "SigninLogs", "Category": "SignInLogs",
        "ResultType": "53000", "ResultDescription": "Device is not compliant.",
        "Id": "a1b2", "CreatedDateTime": "2026-11-26T00:42:31Z",
        "UserPrincipalName": "sato.kenji@city.example.lg.jp", "UserId": "u-1", "AppId": "app-1",
        "AppDisplayName": "Microsoft Teams", "IPAddress": "192.0.2.4",
        "Status": {"errorCode": 53000, "failureReason": "Device is not compliant."},
        "DeviceDetail": graph["deviceDetail"], "ConditionalAccessStatus": "failure",
        "IsInteractive": True, "Location": "JP", "LocationDetails": graph["location"],
    }  # fmt: skip
    fields = [
        "@timestamp", "event.action", "event.outcome", "error.code", "event.reason", "event.id",
        "user.name", "user.id", "source.ip", "source.geo.location", "device.id", "host.name",
        "entra.device_posture", "entra.device_trust", "entra.conditional_access_status",
        "entra.app_display_name", "entra.status.error_code",
    ]  # fmt: skip
    readings = [
        {f: get_field(parse_signins(json.dumps(rec), ParseContext("identity", "s"))[0], f)
         for f in fields}
        for rec in (graph, eventhub, row)
    ]  # fmt: skip
    assert readings[0] == readings[1] == readings[2]
    assert readings[0]["entra.device_trust"] == "hybrid_joined"
    assert readings[0]["entra.device_posture"] == "noncompliant"


def _signin(code: Any, **kw: Any) -> str:
    rec: dict[str, Any] = {
        "id": f"s-{code}", "createdDateTime": kw.pop("when", "2026-11-26T00:00:00Z"),
        "userPrincipalName": kw.pop("upn", "tanaka.hanako@city.example.lg.jp"), "appId": "a",
        "ipAddress": kw.pop("ip", "192.0.2.4"),
    }  # fmt: skip
    if code is not None:
        rec["status"] = {"errorCode": code}
    rec.update(kw)
    return json.dumps(rec)


@pytest.mark.parametrize(
    ("code", "outcome"),
    [(0, "success"), (50126, "failure"), (50074, "failure"), (53003, "failure"), (None, "unknown")],
)
def test_outcome_follows_the_documented_error_code(code: Any, outcome: str) -> None:
    [ev] = parse_signins(_signin(code), ParseContext("identity", "signins"))
    assert ev["event"]["outcome"] == outcome
    assert ("error" in ev) == (outcome == "failure")


@pytest.mark.parametrize(
    ("detail", "posture", "trust"),
    [
        ({"deviceId": "d", "isManaged": True, "isCompliant": True, "trustType": "Azure AD joined"},
         "compliant", "joined"),
        ({"deviceId": "d", "isManaged": True, "isCompliant": False,
          "trustType": "Microsoft Entra hybrid joined"}, "noncompliant", "hybrid_joined"),
        ({"deviceId": "d", "isManaged": False, "trustType": "Azure AD registered"},
         "unmanaged", "registered"),
        ({"deviceId": "", "operatingSystem": "Android"}, "unmanaged", "none"),
        ({}, "unmanaged", "none"),
    ],
)  # fmt: skip
def test_device_posture_and_trust(detail: dict[str, Any], posture: str, trust: str) -> None:
    [ev] = parse_signins(_signin(0, deviceDetail=detail), ParseContext("identity", "signins"))
    assert (ev["entra"]["device_posture"], ev["entra"]["device_trust"]) == (posture, trust)


TOKYO = {"city": "Chiyoda", "countryOrRegion": "JP",
         "geoCoordinates": {"latitude": 35.694, "longitude": 139.754}}  # fmt: skip
SINGAPORE = {"city": "Singapore", "countryOrRegion": "SG",
             "geoCoordinates": {"latitude": 1.2897, "longitude": 103.8501}}  # fmt: skip
OSAKA = {"city": "Osaka", "countryOrRegion": "JP",
         "geoCoordinates": {"latitude": 34.6937, "longitude": 135.5023}}  # fmt: skip


def test_travel_measures_from_the_previous_successful_sign_in() -> None:
    ctx = ParseContext("identity", "signins")
    [first] = parse_signins(_signin(0, when="2026-11-26T00:00:00Z", location=TOKYO), ctx)
    assert "travel" not in first["entra"]
    # a failed attempt from abroad teaches nothing and carries no travel
    [failed] = parse_signins(_signin(50126, when="2026-11-26T00:30:00Z", location=SINGAPORE), ctx)
    assert "travel" not in failed["entra"]
    [far] = parse_signins(
        _signin(0, when="2026-11-26T01:40:00Z", location=SINGAPORE, ip="198.51.100.77"), ctx
    )
    travel = far["entra"]["travel"]
    assert 5280 < travel["distance_km"] < 5330  # Tokyo - Singapore
    assert travel["hours"] == pytest.approx(100 / 60, abs=1e-3)
    assert 3150 < travel["speed_kmh"] < 3200
    assert travel["previous"] == {
        "@timestamp": "2026-11-26T00:00:00.000Z", "ip": "192.0.2.4",
        "country_iso_code": "JP", "city_name": "Chiyoda",
    }  # fmt: skip
    # the state is JSON (it is checkpointed) and a restart measures on from it
    restarted = ParseContext("identity", "signins", state=orjson.loads(orjson.dumps(ctx.state)))
    [back] = parse_signins(_signin(0, when="2026-11-26T09:00:00Z", location=TOKYO), restarted)
    assert back["entra"]["travel"]["previous"]["country_iso_code"] == "SG"
    assert back["entra"]["travel"]["speed_kmh"] < 1000  # 7 h 20 min for 5,300 km


def test_a_late_record_is_measured_against_the_sign_in_before_it() -> None:
    ctx = ParseContext("identity", "signins")
    parse_signins(_signin(0, when="2026-11-26T00:00:00Z", location=TOKYO), ctx)
    parse_signins(_signin(0, when="2026-11-26T05:00:00Z", location=OSAKA), ctx)
    [late] = parse_signins(_signin(0, when="2026-11-26T00:20:00Z", location=OSAKA), ctx)
    # against 00:00 Tokyo (400 km in 20 min), not against 05:00 Osaka
    assert late["entra"]["travel"]["previous"]["city_name"] == "Chiyoda"
    assert late["entra"]["travel"]["speed_kmh"] > 1000
    assert len(ctx.state["identity.signins"]["tanaka.hanako@city.example.lg.jp"]) == TRAVEL_KEEP


def test_distance_is_the_great_circle() -> None:
    assert distance_km((35.694, 139.754), (35.694, 139.754)) == 0
    assert 395 < distance_km((35.694, 139.754), (34.6937, 135.5023)) < 405  # Tokyo - Osaka


def test_records_of_other_kinds_are_parse_errors_with_a_reason() -> None:
    intune = json.dumps(
        {"time": "2026-11-26T00:00:00Z", "category": "Devices", "operationName": "Devices",
         "properties": {"DeviceId": "d"}}
    )  # fmt: skip
    with pytest.raises(ParseError, match="not a sign-in log"):
        parse_signins(intune, ParseContext("identity", "signins"))
    with pytest.raises(ParseError, match="not an Entra sign-in record"):
        parse_signins('{"CreationTime": "2026-11-26T00:00:00", "Operation": "x"}',
                      ParseContext("identity", "signins"))  # fmt: skip
    with pytest.raises(ParseError, match="Management Activity"):
        parse_m365(_signin(0), ParseContext("identity", "m365-audit"))


@pytest.mark.parametrize(
    ("operation", "slug"),
    [("FileDownloaded", "file-downloaded"), ("UserLoggedIn", "user-logged-in"),
     ("Add member to role.", "add-member-to-role"), ("Set-Mailbox", "set-mailbox"),
     ("MailItemsAccessed", "mail-items-accessed"), ("TIMailData", "ti-mail-data"),
     ("New-InboxRule", "new-inbox-rule")],
)  # fmt: skip
def test_operations_become_slugs_that_keep_their_words(operation: str, slug: str) -> None:
    assert action_slug(operation) == slug


def test_auto_detection_picks_the_format_and_zones_tag_the_office_egress() -> None:
    zones = load_zone_map(ROOT / "rules" / "zones.yaml")
    pipeline = Pipeline("identity", "auto", zones=zones)
    lines = [
        _line(DATA / "graph_signins_page.json"),
        _line(DATA / "eventhub_signins_batch.json"),
        _line(DATA / "m365_content_blob.json"),
    ]
    events = []
    for line in lines:
        found, letter = pipeline.handle(Record(line.encode()))
        assert letter is None
        events.extend(found)
    modules = {e["event"]["module"] for e in events}
    assert modules == {"signins", "m365-audit"}
    office = events[0]  # the city's NAT address
    assert office["zone"]["source"] == "core"
    assert office["zone"]["source_role"] == "city_egress"
    abroad = next(e for e in events if e["source"].get("ip") == "198.51.100.77")
    assert abroad["zone"]["source"] == "internet"
    # a line of another source is a dead letter with a reason, not an event:
    # in a stream already detected, the chosen format's reason ...
    firewall = b'date=2026-11-26 time=10:00:00 devname="fg" logid="0000000013" srcip=10.10.1.1'
    found, letter = pipeline.handle(Record(firewall))
    assert found == [] and letter is not None and "not JSON" in letter.reason
    # ... and as a stream's first line, that no identity format knows it
    found, letter = Pipeline("identity", "auto", zones=zones).handle(Record(firewall))
    assert found == [] and letter is not None and "no identity format" in letter.reason


GOLDEN_LINE = _line(DATA / "eventhub_signins_batch.json")


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.text(max_size=300),
        st.integers(0, len(GOLDEN_LINE)).flatmap(
            lambda i: st.text(max_size=5).map(lambda t: GOLDEN_LINE[:i] + t + GOLDEN_LINE[i:])
        ),
    )
)
def test_random_and_mutated_lines_parse_or_raise_parse_error(line: str) -> None:
    for fn, fmt in ((parse_signins, "signins"), (parse_m365, "m365-audit")):
        try:
            events = fn(line, ParseContext("identity", fmt))
        except ParseError:
            continue
        for ev in events:
            assert ev["@timestamp"].endswith("Z")
            orjson.dumps(ev)
