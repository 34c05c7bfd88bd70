"""Address ranges as integer intervals answer exactly what ``ipaddress`` answers:
``|cidr`` membership, longest-prefix zone and role lookup, for any string."""

from __future__ import annotations

import ipaddress
from typing import Any

from conftest import ROOT
from hypothesis import example, given, settings
from hypothesis import strategies as st

from correlator.detection import rules_from_yaml
from correlator.detection.runtime import in_networks
from zonewatch.netranges import AddressIndex, AddressSet, RangeMap, address_key
from zonewatch.zones import ZONE_UNKNOWN, ZoneMap, load_zone_map

IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network


def reference_in_networks(value: Any, networks: tuple[IPNet, ...]) -> bool:
    """``|cidr`` as the detection runtime answered it with ``ipaddress`` alone."""
    if isinstance(value, list):
        return any(reference_in_networks(v, networks) for v in value)
    if not isinstance(value, str):
        return False
    try:
        addr = ipaddress.ip_address(value.strip())
    except ValueError:
        return False
    if any(addr.version == n.version and addr in n for n in networks):
        return True
    mapped = getattr(addr, "ipv4_mapped", None)
    return mapped is not None and any(mapped in n for n in networks if n.version == 4)


def reference_zone(zones: ZoneMap, ip: str) -> tuple[str, str | None]:
    """The zone lookup as a linear longest-prefix scan over ``ipaddress`` networks."""
    try:
        addr = ipaddress.ip_address(ip.split("%")[0])
    except ValueError:
        return ZONE_UNKNOWN, None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped

    def longest(nets: list[tuple[IPNet, str]]) -> str | None:
        hits = [(n.prefixlen, name) for n, name in nets if n.version == addr.version and addr in n]
        return max(hits)[1] if hits else None

    zone = longest(zones._zone_nets)
    if zone is None:
        zone = zones.policy.default_public_zone if addr.is_global else ZONE_UNKNOWN
    return zone, longest(zones._role_nets)


v4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)
v6 = st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address)
mapped = st.integers(0, 2**32 - 1).map(lambda n: ipaddress.IPv6Address((0xFFFF << 32) | n))
near = st.sampled_from(
    ["10.0.0.0", "10.255.255.255", "192.168.1.1", "::", "::1", "2001:db8::", "fe80::1"]
).map(ipaddress.ip_address)
addresses = st.one_of(v4, v6, mapped, near)


@st.composite
def spellings(draw: st.DrawFn, addr: Any = None) -> str:
    """An address as logs spell it: compressed, exploded, upper case, scoped, padded."""
    if addr is None:
        addr = draw(addresses)
    text = draw(st.sampled_from([addr.compressed, addr.exploded]))
    if addr.version == 6:
        if draw(st.booleans()):
            text = text.upper()
        if draw(st.integers(0, 4)) == 0:
            text += "%" + draw(st.sampled_from(["eth0", "1", "en0"]))
        mapped_to = addr.ipv4_mapped
        if mapped_to is not None and draw(st.booleans()):
            text = f"::ffff:{mapped_to}"
    if draw(st.integers(0, 5)) == 0:
        text = draw(st.sampled_from([" ", "\t", ""])) + text + draw(st.sampled_from([" ", ""]))
    return text


malformed = st.one_of(
    st.text(max_size=45),
    st.text(alphabet="0123456789abcdefABCDEF:.%/ ", max_size=45),
    st.sampled_from(
        ["1.2.3", "1.2.3.256", "01.2.3.4", "1.2.3.4/32", "::ffff:1.2.3", "1:2:3:4:5:6:7:8:9", ":"]
    ),
)


@st.composite
def networks(draw: st.DrawFn) -> IPNet:
    addr = draw(addresses)
    prefix = draw(st.integers(0, addr.max_prefixlen))
    return ipaddress.ip_network(f"{addr}/{prefix}", strict=False)


@st.composite
def network_sets_and_address(draw: st.DrawFn) -> tuple[tuple[IPNet, ...], Any]:
    nets = tuple(draw(st.lists(networks(), min_size=1, max_size=6)))
    choice = draw(st.integers(0, 3))
    if choice == 0:
        value: Any = draw(malformed)
    elif choice == 1:  # an address inside one of the networks, often at an edge
        net = draw(st.sampled_from(nets))
        offset = draw(st.one_of(st.just(0), st.just(net.num_addresses - 1), st.integers(0, 2**128)))
        value = draw(spellings(net.network_address + offset % net.num_addresses))
    elif choice == 2:  # just outside one
        net = draw(st.sampled_from(nets))
        below = int(net.network_address) - 1
        above = int(net.broadcast_address) + 1
        cls = type(net.network_address)
        candidates = [cls(n) for n in (below, above) if 0 <= n < 2**net.max_prefixlen]
        value = draw(spellings(draw(st.sampled_from(candidates)))) if candidates else "x"
    else:
        value = draw(spellings())
    if draw(st.integers(0, 6)) == 0:
        value = [value, draw(st.one_of(spellings(), malformed, st.integers(), st.none()))]
    return nets, value


@settings(max_examples=1500)
@given(network_sets_and_address())
@example(((ipaddress.ip_network("10.0.0.0/8"),), "::ffff:10.1.2.3"))
@example(((ipaddress.ip_network("::ffff:0:0/96"),), "10.1.2.3"))
@example(((ipaddress.ip_network("::ffff:0:0/96"),), "::ffff:10.1.2.3"))
@example(((ipaddress.ip_network("fe80::/10"),), "fe80::1%eth0"))
@example(((ipaddress.ip_network("0.0.0.0/0"),), "::"))
@example(((ipaddress.ip_network("::/0"),), "255.255.255.255"))
@example(((ipaddress.ip_network("10.0.0.0/8"),), " 10.1.2.3\n"))
def test_cidr_match_equals_ipaddress_membership(case: tuple[tuple[IPNet, ...], Any]) -> None:
    nets, value = case
    assert in_networks(value, AddressSet(nets)) is reference_in_networks(value, nets)


@given(st.lists(networks(), min_size=1, max_size=8), addresses)
def test_merged_intervals_keep_membership_of_overlapping_networks(
    nets: list[IPNet], addr: Any
) -> None:
    aset = AddressSet(nets)
    keys = address_key(str(addr))
    assert keys is not None
    assert aset.has_key(keys[0]) is any(addr.version == n.version and addr in n for n in nets)


@st.composite
def nested_networks(draw: st.DrawFn) -> list[tuple[IPNet, int]]:
    """Distinct networks (CIDRs nest or are disjoint), each with a value."""
    nets = draw(st.lists(networks(), min_size=1, max_size=10, unique=True))
    return [(n, i) for i, n in enumerate(nets)]


@given(nested_networks(), st.one_of(addresses, st.sampled_from([None])))
def test_range_map_answers_the_longest_prefix(items: list[tuple[IPNet, int]], addr: Any) -> None:
    if addr is None:  # an address at the edge of one of the networks
        addr = items[0][0].broadcast_address
    keys = address_key(str(addr))
    assert keys is not None
    hits = [(n.prefixlen, v) for n, v in items if n.version == addr.version and addr in n]
    assert RangeMap(items).get(keys[0]) == (max(hits)[1] if hits else None)


CITY = load_zone_map(ROOT / "rules" / "zones.yaml")
city_addresses = st.sampled_from(
    [str(net.network_address + k) for net, _ in CITY._zone_nets + CITY._role_nets for k in (0, 1)]
).map(ipaddress.ip_address)


@settings(max_examples=1000)
@given(st.one_of(spellings(), city_addresses.flatmap(spellings), malformed))
@example("fd00:10::5%eth0 ")
@example(" 10.10.3.4")
@example("::ffff:10.10.3.4")
def test_zone_lookup_equals_a_linear_longest_prefix_scan(ip: str) -> None:
    assert CITY._lookup(ip) == reference_zone(CITY, ip)


@given(st.lists(st.lists(networks(), min_size=1, max_size=4), min_size=1, max_size=5), st.data())
def test_an_address_index_answers_every_set_at_once(
    sets: list[list[IPNet]], data: st.DataObject
) -> None:
    nets = tuple(n for s in sets for n in s)
    inside = data.draw(st.sampled_from(nets)).broadcast_address
    value = data.draw(st.one_of(spellings(inside), spellings(), malformed))
    mask = AddressIndex((AddressSet(s), 1 << i) for i, s in enumerate(sets)).mask(value)
    for i, s in enumerate(sets):
        assert bool(mask & (1 << i)) is reference_in_networks(value, tuple(s))


def _cidr_rule(n: int, field: str, nets: list[IPNet], negate: bool) -> str:
    values = ", ".join(f"'{net}'" for net in nets)
    condition = "not sel" if negate else "sel"
    return (
        f"title: cidr rule {n}\nid: 5f1c7c2e-0000-4000-8000-{n:012d}\n"
        "logsource: {product: zonewatch}\n"
        f"detection:\n  sel:\n    {field}|cidr: [{values}]\n  condition: {condition}\n"
        "level: low\n"
    )


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["source.ip", "destination.ip"]),
            st.lists(networks(), min_size=1, max_size=3),
            st.booleans(),
        ),
        min_size=1,
        max_size=6,
    ),
    st.lists(st.one_of(spellings(), malformed), min_size=2, max_size=2),
)
def test_cidr_rules_of_one_rule_set_fire_as_ipaddress_says(
    rules: list[tuple[str, list[IPNet], bool]], ips: list[str]
) -> None:
    rs = rules_from_yaml("---\n".join(_cidr_rule(n, *r) for n, r in enumerate(rules)), "none")
    assert not rs.errors
    event = {"source": {"ip": ips[0]}, "destination": {"ip": ips[1]}}
    fired = {int(rule.id.rsplit("-", 1)[1]) for rule in rs.match(event)}
    expected = set()
    for n, (field, nets, negate) in enumerate(rules):
        inside = reference_in_networks(ips[field == "destination.ip"], tuple(nets))
        if inside is not negate:
            expected.add(n)
    assert fired == expected
