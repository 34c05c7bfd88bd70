"""Intune device state per source: successive exports and Graph polls give exactly
the changes between them (observed, compliance/ownership/user changed, removed),
also across files and restarts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import ROOT
from test_produce import consume_topic

from connectors.base import ParseContext
from connectors.ingest import ingest_file
from connectors.intune import RETRIEVED_ANNOTATION, parse_devices
from connectors.pipeline import NdjsonSink
from zonewatch.config import KafkaSettings, Settings
from zonewatch.models import DeadLetter

TENANT = "5f1c0d2e-8a34-4c1b-9e77-0c3b2a1d9f10"
LISTING = (
    "https://graph.microsoft.com/v1.0/$metadata#deviceManagement/managedDevices(id,deviceName)"
)
DEVICES = {
    "A": ("8d2f6a10-44c1-4b7e-9a35-1e0c7b5d2a01", "LT-0142", "tanaka.hanako@city.example.lg.jp"),
    "B": ("3b9e1c77-0f52-4d8a-b6e4-9a7c2d1e5f02", "LT-0188", "sato.kenji@city.example.lg.jp"),
    "C": (
        "c4a81e3d-6b27-4f90-8d15-2e9b7a6c3d03",
        "BYOD-SATO-IPHONE",
        "sato.kenji@city.example.lg.jp",
    ),
}


def export_row(
    key: str, when: str, batch: str, state: str = "Compliant", upn: str | None = None, **kw: Any
) -> str:
    """An IntuneDevices record as diagnostic settings deliver it (one export batch)."""
    device_id, name, owner = DEVICES[key]
    props = {
        "DeviceId": device_id, "DeviceName": name, "UPN": upn or owner,
        "CompliantState": state, "Ownership": "Personal" if key == "C" else "Corporate",
        "ManagedBy": "Intune", "DeviceState": kw.pop("device_state", "Managed"),
        "InGracePeriodUntil": "9999-12-31 23:59:59.9999999", "BatchId": batch,
        "ReferenceId": f"entra-{key}", "AADTenantId": TENANT, **kw,
    }  # fmt: skip
    return json.dumps(
        {"time": when, "tenantId": TENANT, "category": "Devices", "operationName": "Devices",
         "resultType": "None", "properties": props}
    )  # fmt: skip


def managed_device(key: str, synced: str, state: str = "compliant", **kw: Any) -> dict[str, Any]:
    """A Graph managedDevice with the $select the devices poller asks for."""
    device_id, name, owner = DEVICES[key]
    return {
        "id": device_id, "deviceName": name, "userPrincipalName": kw.pop("upn", owner),
        "userId": f"user-{key}", "complianceState": state,
        "managedDeviceOwnerType": "personal" if key == "C" else "company",
        "lastSyncDateTime": synced, "operatingSystem": "Windows", "osVersion": "10.0.22631.4460",
        "azureADDeviceId": f"entra-{key}", "complianceGracePeriodExpirationDateTime":
        "9999-12-31T23:59:59Z", **kw,
    }  # fmt: skip


def pages(devices: list[dict[str, Any]], per_page: int, retrieved: str) -> list[str]:
    """A Graph listing as the poller writes it: pages, the last without a nextLink."""
    out = []
    for i in range(0, max(len(devices), 1), per_page):
        page: dict[str, Any] = {"@odata.context": LISTING, "value": devices[i : i + per_page]}
        if i + per_page < len(devices):
            page["@odata.nextLink"] = f"https://graph.microsoft.com/v1.0/next?$skiptoken={i}"
        else:
            page[RETRIEVED_ANNOTATION] = retrieved
        out.append(json.dumps(page))
    return out


def _changes(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["event"]["action"], e["host"]["name"]) for e in events]


def _parse_all(lines: list[str], ctx: ParseContext) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for line in lines:
        out.extend(parse_devices(line, ctx))
    return out


def test_two_graph_polls_give_exactly_the_changes_between_them() -> None:
    ctx = ParseContext("intune", "devices")
    first = [managed_device(k, "2026-11-26T00:00:00Z") for k in "ABC"]
    events = _parse_all(pages(first, 2, "2026-11-26T00:05:00Z"), ctx)
    assert _changes(events) == [
        ("device-observed", "LT-0142"), ("device-observed", "LT-0188"),
        ("device-observed", "BYOD-SATO-IPHONE"),
    ]  # fmt: skip
    assert events[0]["intune"]["azure_ad_device_id"] == "entra-A"
    # the second poll: A non-compliant, B handed to another user, C gone
    second = [
        managed_device("A", "2026-11-26T01:20:00Z", "noncompliant"),
        managed_device("B", "2026-11-26T01:00:00Z", upn="kondo.makoto@city.example.lg.jp"),
    ]
    restarted = ParseContext("intune", "devices", state=orjson.loads(orjson.dumps(ctx.state)))
    events = _parse_all(pages(second, 1, "2026-11-26T01:30:00Z"), restarted)
    assert _changes(events) == [
        ("device-compliance-changed", "LT-0142"), ("device-user-changed", "LT-0188"),
        ("device-removed", "BYOD-SATO-IPHONE"),
    ]  # fmt: skip
    removed = events[-1]
    assert removed["@timestamp"] == "2026-11-26T01:30:00.000Z"  # when the poll asked
    assert removed["event"]["type"] == ["deletion"]
    assert removed["user"]["name"] == "sato.kenji@city.example.lg.jp"  # last known
    assert removed["intune"]["ownership"] == "personal"
    assert events[1]["intune"]["previous"] == {"user": "sato.kenji@city.example.lg.jp"}
    # the same poll again: nothing changed, nothing to say
    assert _parse_all(pages(second, 1, "2026-11-26T01:40:00Z"), restarted) == []


def test_an_unfinished_or_empty_listing_removes_nothing() -> None:
    ctx = ParseContext("intune", "devices")
    first = [managed_device(k, "2026-11-26T00:00:00Z") for k in "ABC"]
    _parse_all(pages(first, 3, "2026-11-26T00:05:00Z"), ctx)
    # a poll cut off after its first page (restart mid-listing): C is not gone yet
    second = [managed_device(k, "2026-11-26T01:00:00Z") for k in "AB"]
    partial = pages(second, 1, "2026-11-26T01:05:00Z")[:1]
    assert _parse_all(partial, ctx) == []
    # the listing read again from its start, complete this time: now C is gone
    again = pages(second, 1, "2026-11-26T01:10:00Z")
    assert _changes(_parse_all(again, ctx)) == [("device-removed", "BYOD-SATO-IPHONE")]
    # an empty listing is more likely a glitch than an empty estate
    assert _parse_all(pages([], 5, "2026-11-26T02:00:00Z"), ctx) == []
    assert len(ctx.state["intune.devices"]) == 2


def test_a_retired_device_is_removed_at_once() -> None:
    ctx = ParseContext("intune", "devices")
    parse_devices(export_row("B", "2026-11-26T00:00:00Z", "b1"), ctx)
    [ev] = parse_devices(export_row("B", "2026-11-26T03:00:00Z", "b1", device_state="Retired"), ctx)
    assert (ev["event"]["action"], ev["@timestamp"]) == (
        "device-removed",
        "2026-11-26T03:00:00.000Z",
    )
    assert ctx.state["intune.devices"] == {}


def _settings(kafka: KafkaSettings, tmp_path: Path) -> Settings:
    return Settings(kafka=kafka).updated(
        connectors={
            "zones_file": ROOT / "rules" / "zones.yaml",
            "checkpoint_dir": tmp_path / "checkpoints",
        }
    )


class ListSink(NdjsonSink):
    """Collects what ingest emits (the Kafka path is tested below)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.letters: list[DeadLetter] = []

    def emit(self, event: dict[str, Any], value: bytes | None = None) -> None:
        self.events.append(event)

    def dead_letter(self, letter: DeadLetter) -> None:
        self.letters.append(letter)

    def commit(self, checkpoint: dict[str, Any] | None = None) -> None:
        pass


def _day_files(tmp_path: Path) -> tuple[Path, Path]:
    day1 = tmp_path / "intune-devices-2026-11-26.jsonl"
    day1.write_text(
        "\n".join(export_row(k, "2026-11-26T23:00:00Z", "batch-26") for k in "ABC") + "\n"
    )
    day2 = tmp_path / "intune-devices-2026-11-27.jsonl"
    day2.write_text(
        export_row("A", "2026-11-27T23:00:00Z", "batch-27", "Noncompliant") + "\n"
        + export_row("B", "2026-11-27T23:00:00Z", "batch-27",
                     upn="kondo.makoto@city.example.lg.jp") + "\n"
    )  # fmt: skip
    return day1, day2


EXPECTED_DAY2 = [
    ("device-compliance-changed", "LT-0142"),
    ("device-user-changed", "LT-0188"),
    ("device-removed", "BYOD-SATO-IPHONE"),
]


def test_successive_export_files_continue_from_the_state_of_the_source(tmp_path: Path) -> None:
    """Each ingest is a fresh process (a restart): the second file is compared
    with the first, not announced again; reading it again changes nothing."""
    settings = _settings(KafkaSettings(bootstrap_servers="unused:9092"), tmp_path)
    day1, day2 = _day_files(tmp_path)
    first = ListSink()
    from connectors.ingest import ingest
    from connectors.inputs.file import FileInput

    ingest(settings, "intune", "devices", FileInput(day1), sink=first, stop_on_signal=False)
    assert _changes(first.events) == [
        ("device-observed", "LT-0142"), ("device-observed", "LT-0188"),
        ("device-observed", "BYOD-SATO-IPHONE"),
    ]  # fmt: skip
    second = ListSink()
    ingest(settings, "intune", "devices", FileInput(day2), sink=second, stop_on_signal=False)
    assert _changes(second.events) == EXPECTED_DAY2
    # absent from the export taken on day 2
    assert second.events[-1]["@timestamp"] == "2026-11-27T23:00:00.000Z"
    # restarted on the same file: its checkpoint says done, nothing again
    third = ListSink()
    ingest(settings, "intune", "devices", FileInput(day2), sink=third, stop_on_signal=False)
    assert third.events == [] and third.letters == []
    state = json.loads((tmp_path / "checkpoints" / "state" / "intune.json").read_text())
    assert set(state["keys"]["intune.devices"]["value"]) == {DEVICES[k][0] for k in "AB"}


def _consume(settings: KafkaSettings, topic: str, n: int) -> list[dict[str, Any]]:
    records = [orjson.loads(rec.value) for rec in consume_topic(settings, topic, n)]
    return sorted(records, key=lambda e: (e["@timestamp"], e["event"]["action"]))


@pytest.mark.integration
@pytest.mark.parametrize("worker", [False, True], ids=["inline", "parse-worker"])
def test_successive_export_files_through_kafka(
    tmp_path: Path, kafka_settings: KafkaSettings, worker: bool
) -> None:
    settings = _settings(kafka_settings, tmp_path)
    day1, day2 = _day_files(tmp_path)
    stats1 = ingest_file(settings, "intune", "devices", day1, parse_worker=worker)
    stats2 = ingest_file(settings, "intune", "devices", day2, parse_worker=worker)
    assert (stats1.produced, stats2.produced) == (3, 3)
    events = _consume(kafka_settings, kafka_settings.events_topic("intune"), 6)
    assert sorted(_changes(events)[3:]) == sorted(EXPECTED_DAY2)
    assert [a for a, _ in _changes(events)[:3]] == ["device-observed"] * 3


def test_policy_change_then_violation_fires_on_device_state_polled_from_graph() -> None:
    """Scenario 12 with Graph-fed state: the admin raises the minimum build at
    09:30, the next managedDevices poll finds LT-0188 non-compliant, Sato opens
    a My Number session: the chain fires as it does with export files."""
    from cloud_double import CloudDouble

    from connectors.inputs import Record
    from connectors.inputs.cloud import GraphDevicesInput
    from connectors.pipeline import Pipeline
    from correlator.detection import load_rules
    from correlator.detection.ruletests import replay
    from zonewatch.config import GraphSettings
    from zonewatch.zones import load_zone_map

    zones = load_zone_map(ROOT / "rules" / "zones.yaml")
    devices = Pipeline("intune", "devices", zones=zones)
    events: list[dict[str, Any]] = []
    with CloudDouble(page_size=2) as double:
        settings = GraphSettings(
            tenant_id="t", client_id=double.client_id, client_secret=double.client_secret,
            base_url=double.url, token_url=f"{double.url}/token", once=True,
        )  # fmt: skip
        for synced, sato_state in (("2026-11-25T23:55:00Z", "compliant"),
                                   ("2026-11-26T00:40:12Z", "noncompliant")):  # fmt: skip
            double.devices = [
                managed_device("A", "2026-11-25T23:55:00Z"),
                managed_device("B", synced, sato_state),
            ]
            for record in GraphDevicesInput(settings):
                found, letter = devices.handle(record)
                assert letter is None
                events.extend(found)
    assert [e["event"]["action"] for e in events] == [
        "device-observed", "device-observed", "device-compliance-changed",
    ]  # fmt: skip
    audit = Pipeline("intune", "graph", zones=zones)
    for line in (ROOT / "samples" / "intune-audit.jsonl").read_bytes().splitlines():
        events.extend(audit.handle(Record(line))[0])
    vdi = Pipeline("vdi", "horizon", zones=zones)
    session = (
        "<14>1 2026-11-26T09:47:30.530+09:00 hzn-cs01.city.example.lg.jp View - 110 [View@6876 "
        'Severity="INFO" Module="Agent" EventType="AGENT_CONNECTED" '
        'UserSID="S-1-5-21-1004336348-1177238915-682003330-1107" DesktopId="mynumber-pool" '
        'MachineName="vdi-mn-03" MachineIpAddress="10.50.10.23" ClientIpAddress="10.10.22.51" '
        'BrokerSessionId="b1d9e2f0-0003"] User CITY\\sato.k has logged on to a new session'
    )
    events.extend(vdi.handle(Record(session.encode()))[0])
    pack = load_rules([ROOT / "rules"])
    names = {str(c.id): c.name for c in pack.correlations}
    fired = {names.get(a.rule_id) for a in replay(pack, events)}
    assert "zw_intune_change_then_untrusted_session" in fired
