from __future__ import annotations

import copy
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.enrich import Enricher, normalize_identity, tag_zones
from zonewatch.zones import ZoneMap, load_zone_map

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def zones() -> ZoneMap:
    return load_zone_map(ROOT / "rules/zones.yaml")


def test_core_laptop_to_lgwan_vdi_pool_is_tagged(zones: ZoneMap) -> None:
    ev = {"source": {"ip": "10.10.4.21"}, "destination": {"ip": "10.50.20.15"}}
    Enricher(zones)(ev)
    assert ev["zone"] == {
        "source": "core",
        "destination": "vdi",
        "destination_role": "vdi_pool_lgwan",
        "destination_target": "lgwan",
        "crossing": "core->vdi",
    }


def test_ipv6_and_single_ended_events(zones: ZoneMap) -> None:
    ev = {"source": {"ip": "fd00:10::25"}}
    Enricher(zones)(ev)
    assert ev["zone"] == {"source": "core"}
    nothing: dict = {"event": {"action": "x"}}
    Enricher(zones)(nothing)
    assert "zone" not in nothing


@pytest.mark.parametrize(
    "user",
    [
        {"name": "CITY\\tanaka.h"},
        {"name": "tanaka.h"},
        {"name": "HTanaka"},
        {"id": "S-1-5-21-1004336348-1177238915-682003330-1105"},
        {"name": "tanaka.h", "domain": "CITY"},
    ],
)
def test_every_alias_becomes_the_upn(zones: ZoneMap, user: dict) -> None:
    ev = {"user": dict(user)}
    Enricher(zones)(ev)
    assert ev["user"]["name"] == "tanaka.hanako@city.example.lg.jp"
    assert ev["zonewatch"]["identity"] == "known"
    assert "tanaka.hanako@city.example.lg.jp" in ev["related"]["user"]
    if "name" in user:
        assert ev["zonewatch"]["user_original"] == user["name"]


def test_unknown_identity_passes_through_flagged(zones: ZoneMap) -> None:
    ev = {"user": {"name": "alice", "domain": "example.com"}}
    Enricher(zones)(ev)
    assert ev["user"] == {"name": "alice", "domain": "example.com"}
    assert ev["zonewatch"] == {"identity": "unknown"}


def test_cached_zone_tags_are_not_shared_between_events(zones: ZoneMap) -> None:
    enrich = Enricher(zones)
    first = enrich({"source": {"ip": "10.10.4.21"}, "destination": {"ip": "10.50.20.15"}})
    first["zone"]["crossing"] = "edited downstream"
    second = enrich({"source": {"ip": "10.10.4.21"}, "destination": {"ip": "10.50.20.15"}})
    assert second["zone"]["crossing"] == "core->vdi"
    assert second["zone"] is not first["zone"]
    # an event that already carries zone fields keeps them beside the tags
    third = enrich({"source": {"ip": "10.10.4.21"}, "zone": {"note": "set by the parser"}})
    assert third["zone"] == {"note": "set by the parser", "source": "core"}


_NAMES = st.sampled_from(
    ["tanaka.h", "htanaka", "CITY\\tanaka.h", "TANAKA.HANAKO@city.example.lg.jp", "sato.kenji",
     "S-1-5-21-1004336348-1177238915-682003330-1105", "nobody", "", "CITY"]
) | st.text(max_size=12)  # fmt: skip
_FIELD = st.none() | _NAMES | st.integers() | st.lists(st.text(max_size=3), max_size=2)


@settings(max_examples=300, deadline=None)
@given(
    user=st.fixed_dictionaries(
        {}, optional={"name": _FIELD, "domain": _FIELD, "id": _FIELD, "email": _FIELD}
    ),
    related=st.none() | st.lists(_NAMES, max_size=2),
)
def test_the_enricher_names_users_like_the_uncached_rules(
    zones: ZoneMap, user: dict, related: list | None
) -> None:
    enrich = Enricher(zones)
    for _ in range(2):  # the second pass answers from the cache
        event = {"user": dict(user), "source": {"ip": "10.10.4.21"}}
        if related is not None:
            event["related"] = {"user": list(related)}
        expected = copy.deepcopy(event)
        tag_zones(expected, zones)
        normalize_identity(expected, zones)
        assert enrich(event) == expected
