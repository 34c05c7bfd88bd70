"""Zone tags and identity normalization for parsed events (pure, no I/O).

Zones: every event with ``source.ip`` / ``destination.ip`` gets
``zone.source`` / ``zone.destination`` and, when a role in ``rules/zones.yaml``
covers the address, ``zone.source_role`` / ``zone.destination_role``. With
both ends known, ``zone.crossing`` reads ``"core->lgwan"``. A destination in a
VDI pool also gets ``zone.destination_target`` (the zone the pool serves), so
a rule can see that a core laptop opened a desktop that works in LGWAN.

Identity: ``user.name`` becomes the canonical UPN when any alias the source
used (UPN, ``DOMAIN\\sam``, bare sam, SID in ``user.id``, proxy/VDI login,
``name@domain`` built from ``user.domain``) is in the identity map. The name
as the source wrote it is kept in ``zonewatch.user_original`` whenever it
differs, and every name seen goes into ``related.user``. ``zonewatch.identity``
says ``known`` or ``unknown``; unknown identities pass through unchanged.
"""

from __future__ import annotations

from typing import Any

from zonewatch.zones import ZoneMap

_ZONE_FIELDS = (("source", "source"), ("destination", "destination"))


def _ip_of(event: dict[str, Any], side: str) -> str | None:
    node = event.get(side)
    if isinstance(node, dict):
        ip = node.get("ip")
        if isinstance(ip, str) and ip:
            return ip
    return None


def tag_zones(event: dict[str, Any], zones: ZoneMap) -> None:
    tags: dict[str, Any] = {}
    found: dict[str, str] = {}
    for side, prefix in _ZONE_FIELDS:
        ip = _ip_of(event, side)
        if ip is None:
            continue
        zone, role = zones.lookup(ip)
        tags[prefix] = zone
        found[side] = zone
        if role is not None:
            tags[f"{prefix}_role"] = role
            target = zones.policy.roles[role].target_zone
            if target and side == "destination":
                tags["destination_target"] = target
    if not tags:
        return
    if len(found) == 2:
        tags["crossing"] = f"{found['source']}->{found['destination']}"
    existing = event.get("zone")
    if isinstance(existing, dict):
        existing.update(tags)
    else:
        event["zone"] = tags


def _candidates(user: dict[str, Any]) -> list[str]:
    names: list[str] = []
    name = user.get("name")
    domain = user.get("domain")
    if isinstance(name, str) and name:
        names.append(name)
        if isinstance(domain, str) and domain and "@" not in name and "\\" not in name:
            names.append(f"{domain}\\{name}")
            names.append(f"{name}@{domain}")
    for key in ("id", "email"):
        value = user.get(key)
        if isinstance(value, str) and value:
            names.append(value)
    return names


def normalize_identity(event: dict[str, Any], zones: ZoneMap) -> None:
    user = event.get("user")
    if not isinstance(user, dict):
        return
    candidates = _candidates(user)
    if not candidates:
        return
    upn = None
    for alias in candidates:
        upn = zones.canonical_user(alias)
        if upn:
            break
    ours = event.setdefault("zonewatch", {})
    original = user.get("name")
    related = event.setdefault("related", {})
    seen = related.get("user")
    if not isinstance(seen, list):
        seen = []
        related["user"] = seen
    if isinstance(original, str) and original and original not in seen:
        seen.append(original)
    if upn is None:
        ours["identity"] = "unknown"
        return
    ours["identity"] = "known"
    if original != upn:
        if isinstance(original, str):
            ours["user_original"] = original
        user["name"] = upn
    if upn not in seen:
        seen.append(upn)


class Enricher:
    """Zone tags and identity for one zone map; call it on every parsed event."""

    def __init__(self, zones: ZoneMap):
        self.zones = zones

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        tag_zones(event, self.zones)
        normalize_identity(event, self.zones)
        return event
