"""The zone policy: longest-prefix lookup, roles, identities, validation errors."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from hypothesis import given
from hypothesis import strategies as st

from zonewatch.errors import ZoneConfigError
from zonewatch.zones import ZoneMap, ZonePolicy, load_zone_map


@pytest.fixture(scope="module")
def zones() -> ZoneMap:
    return load_zone_map(ROOT / "rules" / "zones.yaml")


@pytest.mark.parametrize(
    ("ip", "zone", "role"),
    [
        ("10.10.3.4", "core", None),
        ("10.10.0.10", "core", "web_proxy"),
        ("10.50.10.21", "vdi", "vdi_pool_mynumber"),
        ("10.50.20.7", "vdi", "vdi_pool_lgwan"),
        ("172.16.1.20", "mynumber", "mynumber_relay"),
        ("10.200.5.10", "lgwan", "sanitizer"),
        ("10.201.3.3", "lgwan", "lgwan_asp"),
        ("8.8.8.8", "internet", None),
        ("192.168.1.1", "unknown", None),  # private and not ours: a home network
        ("fd00:10::5", "core", None),
        ("::ffff:10.10.3.4", "core", None),  # IPv4-mapped IPv6 is the same host
        ("not-an-ip", "unknown", None),
    ],
)
def test_city_network_addresses_map_to_their_zone_and_role(
    zones: ZoneMap, ip: str, zone: str, role: str | None
) -> None:
    assert zones.lookup(ip) == (zone, role)


def test_every_alias_of_a_person_resolves_to_one_upn(zones: ZoneMap) -> None:
    upn = "tanaka.hanako@city.example.lg.jp"
    for alias in (
        "CITY\\tanaka.h",
        "city\\TANAKA.H",
        "tanaka.h",
        "htanaka",
        "S-1-5-21-1004336348-1177238915-682003330-1105",
        "Tanaka.Hanako@city.example.lg.jp",
    ):
        assert zones.canonical_user(alias) == upn
    assert zones.canonical_user("someone.else@example.com") is None


def _policy(**over: object) -> dict:
    base: dict = {
        "zones": {"core": {"cidrs": ["10.0.0.0/8"]}, "internet": {"cidrs": []}},
        "roles": {},
        "flows": [],
    }
    base.update(over)
    return base


def test_longest_prefix_wins_across_zones() -> None:
    zm = ZoneMap(
        ZonePolicy.model_validate(
            _policy(
                zones={
                    "core": {"cidrs": ["10.0.0.0/8"]},
                    "lgwan": {"cidrs": ["10.20.0.0/16"]},
                    "internet": {"cidrs": []},
                }
            )
        )
    )
    assert zm.zone_of("10.20.1.1") == "lgwan"
    assert zm.zone_of("10.21.1.1") == "core"


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        (_policy(zones={"core": {"cidrs": ["10.0.0.0/33"]}, "internet": {}}), "invalid CIDR"),
        (
            _policy(
                zones={
                    "core": {"cidrs": ["10.0.0.0/8"]},
                    "lgwan": {"cidrs": ["10.0.0.0/8"]},
                    "internet": {},
                }
            ),
            "claimed by zones",
        ),
        (_policy(roles={"p": {"zone": "nowhere", "kind": "proxy"}}), "unknown zone 'nowhere'"),
        (_policy(flows=[{"from": "core", "to": "internet", "via": "ghost"}]), "unknown role"),
        (
            _policy(roles={"p": {"zone": "core", "kind": "proxy", "cidrs": ["192.168.0.1/32"]}}),
            "not in its zone core",
        ),
        (
            _policy(zones={"core": {"cidrs": ["10.0.0.0/8", "10.1.0.0/16"]}, "internet": {}}),
            "zone core lists overlapping CIDRs 10.0.0.0/8 and 10.1.0.0/16",
        ),
        (
            _policy(
                roles={
                    "vdi_pool": {"zone": "core", "kind": "vdi_pool", "cidrs": ["10.5.0.0/24"]},
                    "proxy": {"zone": "core", "kind": "proxy", "cidrs": ["10.5.0.10/32"]},
                }
            ),
            "roles vdi_pool and proxy claim overlapping CIDRs 10.5.0.0/24 and 10.5.0.10/32",
        ),
        (
            _policy(flows=[{"from": "core", "to": "lgwan"}]),
            r"flow #1 \(core -> lgwan\) names unknown zone 'lgwan' \(zones: core, internet\)",
        ),
        (
            _policy(
                roles={"p": {"zone": "core", "kind": "proxy", "cidrs": ["10.0.0.10/32"]}},
                flows=[{"from": "core", "to": "internet", "via": "ghost"}],
            ),
            r"via unknown role 'ghost' \(roles: p\)",
        ),
        (
            _policy(
                zones={"core": {"cidrs": ["10.0.0.0/8"]}, "lgwan": {}, "internet": {}},
                roles={"s": {"zone": "lgwan", "kind": "sanitizer"}},
                flows=[{"from": "core", "to": "internet", "via": "s"}],
            ),
            "role lies in zone lgwan, which is neither end of the flow",
        ),
        (
            _policy(flows=[{"from": "core", "to": "internet", "ports": ["https"]}]),
            "port 'https': write transport/port",
        ),
        (
            _policy(flows=[{"from": "core", "to": "internet", "ports": ["tcp/70000"]}]),
            "from 1 to 65535",
        ),
        (_policy(flows=[{"from": "core", "to": "core"}]), "joins two different zones"),
        (
            _policy(
                identities=[
                    {"upn": "a@city.example.lg.jp", "logins": ["shared"]},
                    {"upn": "b@city.example.lg.jp", "logins": ["shared"]},
                ]
            ),
            "alias 'shared' belongs to both",
        ),
    ],
)
def test_invalid_policies_are_refused_with_the_reason(policy: dict, message: str) -> None:
    with pytest.raises(ZoneConfigError, match=message):
        ZoneMap(ZonePolicy.model_validate(policy))


def test_yaml_errors_name_the_file_and_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "zones.yaml"
    bad.write_text(yaml.safe_dump({"zones": {"core": {"cidrs": ["10.0.0.0/8"], "colour": "red"}}}))
    with pytest.raises(ZoneConfigError, match=r"zones\.yaml: zones\.core\.colour"):
        load_zone_map(bad)
    with pytest.raises(ZoneConfigError, match="cannot read zone policy"):
        load_zone_map(tmp_path / "missing.yaml")


_SHIPPED = load_zone_map(ROOT / "rules" / "zones.yaml")


@given(st.ip_addresses())
def test_lookup_agrees_with_a_brute_force_scan(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    zm = _SHIPPED
    best: tuple[int, str] | None = None
    for name, zone in zm.policy.zones.items():
        for cidr in zone.cidrs:
            net = ipaddress.ip_network(cidr)
            if (
                ip.version == net.version
                and ip in net
                and (best is None or net.prefixlen > best[0])
            ):
                best = (net.prefixlen, name)
    expected = best[1] if best else ("internet" if ip.is_global else "unknown")
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return  # mapped addresses are looked up as their IPv4 form (tested above)
    assert zm.zone_of(str(ip)) == expected


def test_nested_cidrs_across_zones_carve_out_but_roles_have_one_owner() -> None:
    """A broad zone with a more specific zone inside is a carve-out (allowed);
    the shipped policy loads and marks the protected zones as restricted."""
    zm = load_zone_map(ROOT / "rules" / "zones.yaml")
    assert {n for n, z in zm.policy.zones.items() if z.restricted} == {"mynumber", "lgwan"}
    ports = {p for f in zm.policy.flows for p in f.port_specs()}
    assert ("tcp", 443) in ports and ("udp", 4172) in ports and (None, None) in ports


def test_event_fields_are_read_nested_first_then_as_flat_dotted_keys() -> None:
    from zonewatch.ecs import get_field

    event = {
        "source": {"ip": "10.10.3.4", "user.name": "tanaka.h"},
        "source.ip": "192.0.2.1",
        "url.full": "https://example.lg.jp/",
        "zone": {"crossing": "core->lgwan"},
    }
    assert get_field(event, "source.ip") == "10.10.3.4"  # nested wins, as in Sigma matching
    assert get_field(event, "source.user.name") == "tanaka.h"
    assert get_field(event, "url.full") == "https://example.lg.jp/"
    assert get_field(event, "zone.crossing") == "core->lgwan"
    assert get_field(event, "zone.source", "unknown") == "unknown"
