"""Graph sign-ins, Intune managed devices and the Office 365 Management Activity API,
pulled from a local server that answers like Microsoft's (tests/cloud_double.py):
auth, paging, 429/Retry-After, token renewal, late records, content expiry,
checkpoints and restarts."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from cloud_double import TENANT, CloudDouble
from conftest import ROOT
from test_device_state import ListSink, managed_device

from connectors.ingest import ingest
from connectors.inputs.cloud import (
    DEVICE_SELECT,
    RETRIEVED_ANNOTATION,
    GraphDevicesInput,
    GraphSignInInput,
    ManagementActivityInput,
    cloud_input,
)
from connectors.inputs.graph import GraphError, GraphInput
from zonewatch.config import GraphSettings, KafkaSettings, Settings
from zonewatch.errors import ConfigError


def _settings(double: CloudDouble, **kw: Any) -> GraphSettings:
    return GraphSettings(
        tenant_id=TENANT, client_id=double.client_id, client_secret=double.client_secret,
        base_url=double.url, token_url=f"{double.url}/token", once=True,
        lookback_s=3 * 86400, page_size=2, **kw,
    )  # fmt: skip


def signin(n: int, created: str) -> dict[str, Any]:
    return {
        "id": f"signin-{n}", "createdDateTime": created, "appId": "4765445b",
        "userPrincipalName": "tanaka.hanako@city.example.lg.jp", "ipAddress": "192.0.2.4",
        "status": {"errorCode": 0}, "isInteractive": True,
    }  # fmt: skip


def _ids(records: Any) -> list[str]:
    return [orjson.loads(r.data)["id"] for r in records if r is not None]


def test_signins_follow_pages_wait_out_429_and_renew_an_expired_token() -> None:
    with CloudDouble(page_size=2, throttle=2, token_uses=3) as double:
        double.signins = [signin(n, f"2026-11-26T00:0{n}:00.1234567Z") for n in range(7)]
        source = GraphSignInInput(_settings(double, since="2026-11-26T00:00:00Z"))
        assert _ids(source) == [f"signin-{n}" for n in range(7)]
        assert source.retries == 2 and double.throttled == 2
        assert double.tokens_issued >= 2  # the first token died after three requests
        assert sum("skiptoken" in r for r in double.requests) >= 3
        # the high-water mark is the newest sign-in handed out
        assert source.checkpoint()["hwm"] == "2026-11-26T00:06:00.123456Z"


def test_signins_written_late_are_picked_up_once() -> None:
    with CloudDouble() as double:
        double.signins = [signin(n, f"2026-11-26T00:1{n}:00Z") for n in range(3)]
        first = GraphSignInInput(_settings(double, since="2026-11-26T00:00:00Z"))
        assert _ids(first) == ["signin-0", "signin-1", "signin-2"]
        # Entra writes a sign-in of 00:11:30 after the poll saw 00:12:00
        double.signins.append(signin(9, "2026-11-26T00:11:30Z"))
        double.signins.append(signin(3, "2026-11-26T00:13:00Z"))
        second = GraphSignInInput(_settings(double))
        second.restore(orjson.loads(orjson.dumps(first.checkpoint())))
        assert _ids(second) == ["signin-9", "signin-3"]
        # a poll without news hands out nothing
        third = GraphSignInInput(_settings(double))
        third.restore(second.checkpoint())
        assert _ids(third) == []


def test_signins_restart_mid_poll_neither_repeats_nor_skips() -> None:
    with CloudDouble(page_size=2) as double:
        double.signins = [signin(n, f"2026-11-26T00:0{n}:00Z") for n in range(6)]
        crashed = GraphSignInInput(_settings(double, since="2026-11-26T00:00:00Z"))
        it = iter(crashed)
        got = [orjson.loads(next(it).data)["id"] for _ in range(3)]
        resumed = GraphSignInInput(_settings(double))
        resumed.restore(orjson.loads(orjson.dumps(crashed.checkpoint())))
        got += _ids(resumed)
        assert got == [f"signin-{n}" for n in range(6)]


def test_bad_credentials_and_missing_permission_say_what_to_fix() -> None:
    with CloudDouble() as double:
        wrong = GraphSettings(
            tenant_id=TENANT, client_id="nobody", client_secret="x", base_url=double.url,
            token_url=f"{double.url}/token", once=True,
        )  # fmt: skip
        with pytest.raises(GraphError, match="401"):
            list(GraphSignInInput(wrong))
    assert GraphSignInInput.PERMISSION == "AuditLog.Read.All"
    assert "secret" not in repr(wrong) and "x'" not in repr(wrong)


def _test_settings(tmp_path: Path) -> Settings:
    return Settings(kafka=KafkaSettings(bootstrap_servers="unused:9092")).updated(
        connectors={
            "zones_file": ROOT / "rules" / "zones.yaml",
            "checkpoint_dir": tmp_path / "checkpoints",
        }
    )


def _changes(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["event"]["action"], e["host"]["name"]) for e in events]


def test_two_device_polls_through_ingest_give_the_changes_and_survive_a_restart(
    tmp_path: Path,
) -> None:
    settings = _test_settings(tmp_path)
    with CloudDouble(page_size=2) as double:
        double.devices = [managed_device(k, "2026-11-26T00:00:00Z") for k in "ABC"]
        first = ListSink()
        source = cloud_input("intune", "devices", _settings(double))
        assert isinstance(source, GraphDevicesInput)
        ingest(settings, "intune", "devices", source, sink=first, stop_on_signal=False)
        assert [a for a, _ in _changes(first.events)] == ["device-observed"] * 3
        listing = [r for r in double.requests if "managedDevices" in r]
        assert all("%24select=" in r or "$select=" in r for r in listing)
        assert "complianceState" in listing[0] and "azureADDeviceId" in listing[0]
        # between the polls the connector restarts; A turns non-compliant, C is retired
        double.devices = [
            managed_device("A", "2026-11-26T02:00:00Z", "noncompliant"),
            managed_device("B", "2026-11-26T00:00:00Z"),
        ]
        second = ListSink()
        source = cloud_input("intune", "devices", _settings(double))
        ingest(settings, "intune", "devices", source, sink=second, stop_on_signal=False)
        assert _changes(second.events) == [
            ("device-compliance-changed", "LT-0142"),
            ("device-removed", "BYOD-SATO-IPHONE"),
        ]


def test_device_pages_carry_the_time_they_were_asked_for() -> None:
    with CloudDouble(page_size=2) as double:
        double.devices = [managed_device(k, "2026-11-26T00:00:00Z") for k in "ABC"]
        source = GraphDevicesInput(_settings(double))
        pages = [orjson.loads(r.data) for r in source if r is not None]
        assert [len(p["value"]) for p in pages] == [2, 1]
        assert "@odata.nextLink" in pages[0] and "@odata.nextLink" not in pages[1]
        assert all(p[RETRIEVED_ANNOTATION].endswith("Z") for p in pages)
        assert set(pages[0]["value"][0]) <= set(DEVICE_SELECT.split(","))
        assert source.polls == 1


def audit(n: int, created: str) -> dict[str, Any]:
    return {
        "CreationTime": created, "Id": f"rec-{n}", "Operation": "FileDownloaded",
        "OrganizationId": TENANT, "RecordType": 6, "UserType": 0, "Workload": "SharePoint",
        "UserId": "sato.kenji@city.example.lg.jp", "UserKey": "i:0h.f|membership|1003",
        "ClientIP": "198.51.100.23", "ObjectId": f"https://cityexample.sharepoint.com/f{n}.xlsx",
        "SourceFileName": f"f{n}.xlsx",
    }  # fmt: skip


def _m365(double: CloudDouble, **kw: Any) -> ManagementActivityInput:
    return ManagementActivityInput(
        _settings(double, **kw), content_types=("Audit.SharePoint", "Audit.General"),
        publisher_id="46b472a7-c68e-4adf-8ade-3db49497518e", lag_s=60, now=double.now,
    )  # fmt: skip


def _records(source: ManagementActivityInput) -> list[str]:
    return [rec["Id"] for r in source if r is not None for rec in orjson.loads(r.data)]


def test_m365_lists_windows_downloads_each_blob_once_and_skips_expired_content() -> None:
    with CloudDouble(page_size=2, throttle=1) as double:
        # three days back: three 24-hour windows; blobs page by two
        created = ["2026-11-24T03:00:00.000Z", "2026-11-24T09:00:00.000Z",
                   "2026-11-24T15:00:00.000Z", "2026-11-25T10:00:00.000Z",
                   "2026-11-26T22:00:00.000Z", "2026-11-26T23:59:30.000Z"]  # fmt: skip
        for n, when in enumerate(created):
            double.add_blob("Audit.SharePoint", when, [audit(n, when[:19])])
        noon, one = "2026-11-26T12:00:00", "2026-11-26T13:00:00"
        gone = double.add_blob(
            "Audit.SharePoint", noon + ".000Z", [audit(7, noon)], expires="2026-11-26T23:00:00Z"
        )
        double.expired.add(double.add_blob("Audit.General", one + ".000Z", [audit(8, one)]))
        source = _m365(double, since="2026-11-24T00:00:00Z")
        assert _records(source) == [f"rec-{n}" for n in range(5)]  # rec-5: inside the lag
        assert source.expired == 2 and gone  # one past contentExpiration, one AF20051
        assert double.subscriptions == {"Audit.SharePoint", "Audit.General"}
        assert all(
            "PublisherIdentifier=46b472a7" in r
            for r in double.requests
            if "/api/" in r and "/audit/" not in r
        )
        listings = [
            r for r in double.requests if "subscriptions/content" in r and "SharePoint" in r
        ]
        assert any("nextPage=" in r for r in listings)  # NextPageUri followed
        assert double.throttled == 1
        # the next poll, a little later: only the blob that was inside the lag, once
        double.clock += timedelta(minutes=10)
        later = _m365(double)
        later.restore(orjson.loads(orjson.dumps(source.checkpoint())))
        assert _records(later) == ["rec-5"]
        assert _records(later) == []  # subscriptions already enabled: AF20024 tolerated


def test_m365_restart_inside_a_window_neither_repeats_nor_skips() -> None:
    with CloudDouble(page_size=10) as double:
        for n in range(5):
            when = f"2026-11-26T0{n}:00:00.000Z"
            double.add_blob("Audit.SharePoint", when, [audit(n, when[:19])])
        crashed = _m365(double, since="2026-11-26T00:00:00Z")
        it = iter(crashed)
        got = [rec["Id"] for rec in orjson.loads(next(it).data)]
        got += [rec["Id"] for rec in orjson.loads(next(it).data)]
        resumed = _m365(double)
        resumed.restore(orjson.loads(orjson.dumps(crashed.checkpoint())))
        got += _records(resumed)
        assert got == [f"rec-{n}" for n in range(5)]


def test_m365_cursor_older_than_seven_days_moves_forward() -> None:
    with CloudDouble() as double:
        double.add_blob(
            "Audit.SharePoint", "2026-11-22T00:00:00.000Z", [audit(1, "2026-11-22T00:00:00")]
        )
        source = _m365(double)
        source.restore({"Audit.SharePoint": {"start": "2026-11-01T00:00:00", "done": []}})
        assert _records(source) == ["rec-1"]  # no AF20030: the window starts inside the 7 days


def test_pull_inputs_by_source_and_format() -> None:
    s = GraphSettings(tenant_id=TENANT, client_id="c", client_secret="s")
    assert type(cloud_input("intune", "graph", s)) is GraphInput
    m365 = cloud_input("identity", "m365-audit", s)
    assert isinstance(m365, ManagementActivityInput)
    assert m365.root == f"https://manage.office.com/api/v1.0/{TENANT}/activity/feed"
    with pytest.raises(ConfigError, match="nothing to pull"):
        cloud_input("firewall", "fortigate", s)
    with pytest.raises(ConfigError, match="unknown content type"):
        ManagementActivityInput(s, content_types=("Audit.Everything",))
