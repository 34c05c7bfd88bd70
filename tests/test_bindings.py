"""Learned identities: addresses, devices and restricted VDI sessions, learned from
Intune, sign-ins and VDI, filled into firewall/gateway/VDI events; bounded,
expiring, kept in files other connectors read and that survive restarts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.bindings import IdentityMap, Limits, epoch
from connectors.identity_store import IdentityStore
from connectors.inputs import Record
from connectors.pipeline import Pipeline
from zonewatch.zones import load_zone_map

ZONES = load_zone_map(ROOT / "rules" / "zones.yaml")
STATIC = {"LT-0142": "tanaka.hanako@city.example.lg.jp"}
HOUR = 3600.0


def _store(directory: Path | None, source: str, ttl_s: float = 4 * HOUR) -> IdentityStore:
    return IdentityStore(
        directory, source, limits=Limits(ttl_s=ttl_s), static=STATIC, reload_interval_s=0
    )


def _pipeline(source: str, fmt: str, store: IdentityStore) -> Pipeline:
    return Pipeline(source, fmt, zones=ZONES, identity=store)


def _events(pipeline: Pipeline, *lines: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for line in lines:
        found, letter = pipeline.handle(Record(line.encode()))
        assert letter is None, letter.reason if letter else ""
        out.extend(found)
    return out


def managed_device(ip: str, synced: str, upn: str = "sato.kenji@city.example.lg.jp") -> str:
    """A Graph (beta) managedDevice whose hardware inventory reports its wired address."""
    return json.dumps(
        {
            "@odata.context": "https://graph.microsoft.com/beta/$metadata#deviceManagement/"
            "managedDevices(id,deviceName,userPrincipalName,complianceState,hardwareInformation)",
            "value": [
                {
                    "id": "3b9e1c77-0f52-4d8a-b6e4-9a7c2d1e5f02",
                    "deviceName": "LT-0188",
                    "userPrincipalName": upn,
                    "complianceState": "compliant",
                    "managedDeviceOwnerType": "company",
                    "lastSyncDateTime": synced,
                    "azureADDeviceId": "9c1a2d7e-3f44-4b61-8a0e-5d2c7b9e1f02",
                    "hardwareInformation": {"wiredIPv4Addresses": [ip], "ipAddressV4": ip},
                }
            ],
        }
    )


def forti(hms: str, src: str, day: str = "2026-11-26") -> str:
    return (
        f'date={day} time={hms} devname="city-fw01" devid="FG200FTK23004711" tz="+0900" '
        'logid="0000000013" type="traffic" subtype="forward" level="notice" vd="root" '
        f'srcip={src} srcport=51514 srcintf="core" dstip=10.200.5.10 dstport=443 '
        'dstintf="lgwan" sessionid=4411 proto=6 action="deny" policyid=12 service="HTTPS"'
    )


def test_a_firewall_event_gets_the_user_of_the_device_that_held_its_address(
    tmp_path: Path,
) -> None:
    """Intune (one connector) learns LT-0188 on 10.10.22.51 at 09:00 JST; the
    firewall connector (another process: its own store on the same files) fills
    the user while the binding holds (4 h after the last sighting), not after."""
    intune = _store(tmp_path, "intune")
    _events(
        _pipeline("intune", "devices", intune),
        managed_device("10.10.22.51", "2026-11-26T00:00:00Z"),
    )
    intune.persist(force=True)
    firewall = _pipeline("firewall", "fortigate", _store(tmp_path, "firewall"))
    [during] = _events(firewall, forti("11:30:00", "10.10.22.51"))
    assert during["user"]["name"] == "sato.kenji@city.example.lg.jp"
    assert during["host"]["name"] == "LT-0188"
    assert during["device"]["id"] == "3b9e1c77-0f52-4d8a-b6e4-9a7c2d1e5f02"
    assert during["zonewatch"]["binding"] == {
        "from": "address", "origin": "intune",
        "first_seen": "2026-11-26T00:00:00.000Z", "last_seen": "2026-11-26T00:00:00.000Z",
    }  # fmt: skip
    assert during["zonewatch"]["identity"] == "known"  # normalized like any named user
    [expired] = _events(firewall, forti("13:00:01", "10.10.22.51"))  # 4 h after 09:00 JST
    assert "user" not in expired and "binding" not in expired.get("zonewatch", {})
    [before] = _events(firewall, forti("08:58:00", "10.10.22.51"))  # before the first sighting
    assert "user" not in before
    [other] = _events(firewall, forti("11:30:00", "10.10.22.52"))
    assert "user" not in other


def test_an_address_handed_to_another_device_answers_for_each_time(tmp_path: Path) -> None:
    identity = _store(None, "intune")
    pipeline = _pipeline("intune", "devices", identity)
    _events(pipeline, managed_device("10.10.22.51", "2026-11-26T00:00:00Z"))
    _events(
        pipeline,
        managed_device("10.10.22.51", "2026-11-26T02:00:00Z", "kondo.makoto@city.example.lg.jp"),
    )
    view = identity.view
    assert (
        view.address("10.10.22.51", epoch("2026-11-26T01:00:00Z"))[0]
        == "sato.kenji@city.example.lg.jp"
    )
    assert (
        view.address("10.10.22.51", epoch("2026-11-26T03:00:00Z"))[0]
        == "kondo.makoto@city.example.lg.jp"
    )


def test_an_address_seen_for_two_users_at_once_is_shared_and_fills_nothing() -> None:
    m = IdentityMap(Limits(ttl_s=HOUR))
    t0 = epoch("2026-11-26T00:00:00Z")
    for minute in range(0, 60, 5):  # a NAT address: both users all along
        m.observe_address("192.0.2.4", t0 + minute * 60, "tanaka.hanako@city.example.lg.jp")
        m.observe_address("192.0.2.4", t0 + minute * 60 + 30, "sato.kenji@city.example.lg.jp")
    assert m.address("192.0.2.4", t0 + 20 * 60) is None
    assert m.conflicts == 1


def test_the_static_device_list_of_the_zone_map_names_the_user_of_a_host() -> None:
    store = IdentityStore(None, "gateway", static={"LT-0142": "tanaka.hanako@city.example.lg.jp"})
    event: dict[str, Any] = {
        "@timestamp": "2026-11-26T00:00:00.000Z",
        "event": {"dataset": "gateway"},
        "host": {"name": "lt-0142"},
    }
    store.enrich_before(event)
    assert event["user"]["name"] == "tanaka.hanako@city.example.lg.jp"
    assert event["zonewatch"]["binding"] == {"from": "host", "origin": "static"}


def test_sources_that_name_their_own_users_are_never_filled() -> None:
    store = _store(None, "vdi")
    store.view.observe_address(
        "10.10.22.51", epoch("2026-11-26T00:00:00Z"), "sato.kenji@city.example.lg.jp"
    )
    for dataset in ("identity", "intune"):
        event = {"@timestamp": "2026-11-26T00:10:00.000Z", "event": {"dataset": dataset},
                 "source": {"ip": "10.10.22.51"}}  # fmt: skip
        store.enrich_before(event)
        assert "user" not in event
    named = {"@timestamp": "2026-11-26T00:10:00.000Z", "event": {"dataset": "firewall"},
             "source": {"ip": "10.10.22.51"}, "user": {"name": "CITY\\kondo.m"}}  # fmt: skip
    store.enrich_before(named)
    assert named["user"]["name"] == "CITY\\kondo.m"


HORIZON = (
    "<14>1 2026-11-26T{hms}.000+09:00 hzn-cs01.city.example.lg.jp View - 1 [View@6876 "
    'Severity="INFO" Module="Agent" EventType="{kind}" '
    'UserSID="S-1-5-21-1004336348-1177238915-682003330-1105" DesktopId="lgwan-pool" '
    'MachineName="vdi-lg-07" MachineIpAddress="10.50.20.17" ClientIpAddress="10.10.21.34" '
    'BrokerSessionId="b1d9e2f0-0001"] User CITY\\tanaka.h session event'
)


def signin(hms: str, ip: str = "198.51.100.77") -> str:
    return json.dumps(
        {"id": f"s-{hms}", "createdDateTime": f"2026-11-26T{hms}Z", "appId": "a",
         "userPrincipalName": "tanaka.hanako@city.example.lg.jp", "ipAddress": ip,
         "status": {"errorCode": 0}}
    )  # fmt: skip


def test_a_sign_in_while_the_users_restricted_vdi_session_is_open_is_marked(
    tmp_path: Path,
) -> None:
    vdi = _store(tmp_path, "vdi")
    _events(
        _pipeline("vdi", "horizon", vdi), HORIZON.format(hms="08:31:21", kind="AGENT_CONNECTED")
    )
    vdi.persist(force=True)
    identity = _pipeline("identity", "signins", _store(tmp_path, "identity"))
    [during] = _events(identity, signin("01:05:12"))  # 10:05 JST
    assert during["zonewatch"]["vdi_session"] == {
        "target": "lgwan", "since": "2026-11-25T23:31:21.000Z", "pool": "lgwan-pool",
        "session_id": "b1d9e2f0-0001",
    }  # fmt: skip
    _events(
        _pipeline("vdi", "horizon", vdi), HORIZON.format(hms="11:51:02", kind="AGENT_DISCONNECTED")
    )
    vdi.persist(force=True)
    [after] = _events(identity, signin("03:00:00"))  # 12:00 JST, the session ended 11:51
    assert "vdi_session" not in after.get("zonewatch", {})
    [earlier] = _events(identity, signin("01:30:00"))  # still open at 10:30 JST
    assert earlier["zonewatch"]["vdi_session"]["target"] == "lgwan"
    # and VDI taught the client address too
    assert vdi.view.address("10.10.21.34", epoch("2026-11-26T00:00:00Z"))[0] == (
        "tanaka.hanako@city.example.lg.jp"
    )


def test_what_was_learned_survives_a_restart_and_two_writers_of_a_source(tmp_path: Path) -> None:
    t0 = epoch("2026-11-26T00:00:00Z")
    one, two = _store(tmp_path, "vdi"), _store(tmp_path, "vdi")
    one.own.observe_address("10.10.1.1", t0, "a@city.example.lg.jp")
    two.own.observe_address("10.10.1.2", t0, "b@city.example.lg.jp")
    one.persist(force=True)
    two.persist(force=True)  # merges what the first wrote
    restarted = _store(tmp_path, "vdi")
    assert restarted.own.address("10.10.1.1", t0)[0] == "a@city.example.lg.jp"
    assert restarted.own.address("10.10.1.2", t0)[0] == "b@city.example.lg.jp"
    reader = _store(tmp_path, "firewall")
    assert reader.view.address("10.10.1.1", t0 + HOUR)[0] == "a@city.example.lg.jp"
    # a reader picks up a later write without a restart
    three = _store(tmp_path, "vdi")
    three.own.observe_address("10.10.1.3", t0, "c@city.example.lg.jp")
    three.persist(force=True)
    reader._checked = 0.0
    reader.refresh()
    assert reader.view.address("10.10.1.3", t0)[0] == "c@city.example.lg.jp"


def test_the_map_is_bounded_and_forgets_what_expired() -> None:
    m = IdentityMap(Limits(ttl_s=HOUR, max_addresses=100, per_address=2))
    t0 = epoch("2026-11-26T00:00:00Z")
    for i in range(250):
        m.observe_address(f"10.10.{i // 250}.{i % 250}", t0 + i, f"user{i}@city.example.lg.jp")
    assert len(m.addresses) == 100
    assert "10.10.0.249" in m.addresses and "10.10.0.0" not in m.addresses  # oldest went first
    for n in range(5):
        m.observe_address("10.10.9.9", t0 + n * 2 * HOUR, f"u{n}@city.example.lg.jp")
    assert len(m.addresses["10.10.9.9"]) == 2
    m.expire(t0 + 20 * HOUR)
    assert m.addresses == {}


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 20 * 3600), min_size=1, max_size=8),
    st.integers(-3600, 30 * 3600),
)
def test_one_users_address_answers_exactly_within_its_lifetime(
    sightings: list[int], probe: int
) -> None:
    limits = Limits(ttl_s=4 * HOUR, skew_s=60)
    m = IdentityMap(limits)
    for s in sightings:
        m.observe_address("10.10.1.1", float(s), "a@city.example.lg.jp")
    covered = min(sightings) - limits.skew_s <= probe <= max(sightings) + limits.ttl_s
    found = m.address("10.10.1.1", float(probe))
    assert (found is not None) == covered


def test_source_user_names_are_normalized_like_user_name() -> None:
    pipeline = Pipeline("firewall", "fortigate", zones=ZONES)
    line = forti("10:00:00", "10.10.22.51") + ' user="sato.k"'
    [ev] = _events(pipeline, line)
    assert ev["source"]["user"]["name"] == "sato.kenji@city.example.lg.jp"
    assert ev["user"]["name"] == "sato.kenji@city.example.lg.jp"
    assert "sato.k" in ev["related"]["user"]


@pytest.mark.parametrize("source", ["identity", "intune", "vdi"])
def test_learning_sources_persist_only_when_something_changed(tmp_path: Path, source: str) -> None:
    store = _store(tmp_path, source)
    store.persist(force=True)
    assert not (tmp_path / f"{source}.json").exists()
    store.own.observe_address("10.10.1.1", 0.0, "a@city.example.lg.jp")
    store.persist(force=True)
    assert (tmp_path / f"{source}.json").exists()


def test_addresses_with_a_role_in_the_zone_map_are_never_bound() -> None:
    """The first office sign-in of the morning comes through the city's NAT
    egress: that address is everyone's, not the first user's."""
    store = _store(None, "identity")
    [office] = _events(_pipeline("identity", "signins", store), signin("23:20:05", ip="192.0.2.4"))
    assert office["zone"]["source_role"] == "city_egress"
    assert "192.0.2.4" not in store.view.addresses
    _events(_pipeline("identity", "signins", store), signin("23:40:00", ip="198.51.100.9"))
    assert "198.51.100.9" in store.view.addresses


@pytest.mark.parametrize(
    ("source", "fmt", "lines", "learned"),
    [
        (
            "vdi",
            "horizon",
            [
                HORIZON.format(hms="08:31:21", kind="AGENT_CONNECTED"),
                HORIZON.format(hms="11:51:02", kind="AGENT_DISCONNECTED"),
            ],
            ("addresses", "sessions"),
        ),
        (
            "identity",
            "signins",
            [signin("01:05:12"), signin("02:00:00", "198.51.100.78")],
            ("addresses",),
        ),
        (
            "intune",
            "devices",
            [managed_device("10.20.4.17", "2026-11-26T00:10:00Z")],
            ("addresses", "devices"),
        ),
    ],
)
def test_a_learning_connectors_own_map_and_its_view_learn_the_same_from_each_event(
    source: str, fmt: str, lines: list[str], learned: tuple[str, ...]
) -> None:
    store = _store(None, source)
    _events(_pipeline(source, fmt, store), *lines)
    own, view = store.own.snapshot(), store.view.snapshot()
    for kind in learned:
        assert own[kind], f"nothing learned into {kind}"
    assert own == view
