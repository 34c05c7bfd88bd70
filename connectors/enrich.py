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
``source.user.name`` and ``destination.user.name`` become the canonical UPN
too (the name as written stays in ``related.user``).

Learned identities (``connectors/bindings.py``, given as ``identity``): an
event without a user gets the user of its address or host before the names
are normalized, and a sign-in during an open restricted VDI session is marked
after.
"""

from __future__ import annotations

from functools import lru_cache, partial
from typing import Any, Protocol

from zonewatch.zones import ZoneMap


class Identities(Protocol):
    """Learned identities (``connectors.identity_store.IdentityStore``)."""

    def enrich_before(self, event: dict[str, Any]) -> None: ...

    def enrich_after(self, event: dict[str, Any]) -> None: ...


def _ip(node: Any) -> str | None:
    """The address of an event's ``source`` or ``destination`` node, if any."""
    if isinstance(node, dict):
        ip = node.get("ip")
        if isinstance(ip, str) and ip:
            return ip
    return None


def zone_tags(zones: ZoneMap, source_ip: str | None, destination_ip: str | None) -> dict[str, Any]:
    """The ``zone.*`` fields for one pair of addresses (empty when neither is given)."""
    tags: dict[str, Any] = {}
    found: dict[str, str] = {}
    for side, ip in (("source", source_ip), ("destination", destination_ip)):
        if ip is None:
            continue
        zone, role = zones.lookup(ip)
        tags[side] = zone
        found[side] = zone
        if role is not None:
            tags[f"{side}_role"] = role
            target = zones.policy.roles[role].target_zone
            if target and side == "destination":
                tags["destination_target"] = target
    if len(found) == 2:
        tags["crossing"] = f"{found['source']}->{found['destination']}"
    return tags


def _apply_tags(event: dict[str, Any], tags: dict[str, Any]) -> None:
    if not tags:
        return
    existing = event.get("zone")
    if isinstance(existing, dict):
        existing.update(tags)
    else:
        event["zone"] = dict(tags)  # a copy: cached tags are shared between events


def tag_zones(event: dict[str, Any], zones: ZoneMap) -> None:
    _apply_tags(event, zone_tags(zones, _ip(event.get("source")), _ip(event.get("destination"))))


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


def resolve_upn(zones: ZoneMap, user: dict[str, Any]) -> tuple[bool, str | None]:
    """(whether the event names anyone, the canonical UPN of the first known alias)."""
    candidates = _candidates(user)
    for alias in candidates:
        upn = zones.canonical_user(alias)
        if upn:
            return True, upn
    return bool(candidates), None


def apply_identity(event: dict[str, Any], user: dict[str, Any], upn: str | None) -> None:
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


def normalize_identity(event: dict[str, Any], zones: ZoneMap) -> None:
    user = event.get("user")
    if not isinstance(user, dict):
        return
    named, upn = resolve_upn(zones, user)
    if named:
        apply_identity(event, user, upn)


class Enricher:
    """Zone tags and identity for one zone map; call it on every parsed event.

    Logs repeat the same few thousand address pairs, so zone tags are cached
    per (source.ip, destination.ip): a CIDR walk per event was a seventh of a
    connector's CPU.
    """

    def __init__(self, zones: ZoneMap, cache_size: int = 65536, identity: Identities | None = None):
        self.zones = zones
        self.identity = identity
        self._tags = lru_cache(maxsize=cache_size)(partial(zone_tags, zones))
        self._upn = lru_cache(maxsize=cache_size)(self._upn_of)

    def _upn_of(self, name: Any, domain: Any, uid: Any, email: Any) -> tuple[bool, str | None]:
        user = {"name": name, "domain": domain, "id": uid, "email": email}
        return resolve_upn(self.zones, user)

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        get = event.get
        source, destination = get("source"), get("destination")  # read once
        _apply_tags(event, self._tags(_ip(source), _ip(destination)))
        identity = self.identity
        if identity is not None:
            identity.enrich_before(event)
        user = get("user")
        if isinstance(user, dict):
            uget = user.get
            try:
                named, upn = self._upn(uget("name"), uget("domain"), uget("id"), uget("email"))
            except TypeError:  # an unhashable value (a list): resolve without the cache
                named, upn = resolve_upn(self.zones, user)
            if named:
                apply_identity(event, user, upn)
        # enrich_before and apply_identity leave source and destination as they were
        if source.__class__ is dict and source.get("user").__class__ is dict:
            self._side_user(event, source["user"])
        if destination.__class__ is dict and destination.get("user").__class__ is dict:
            self._side_user(event, destination["user"])
        if identity is not None:
            identity.enrich_after(event)
        return event

    def _side_user(self, event: dict[str, Any], user: dict[str, Any]) -> None:
        """``source.user.name`` / ``destination.user.name`` as the canonical UPN."""
        name = user.get("name")
        if not isinstance(name, str) or not name:
            return
        _, upn = self._upn(name, user.get("domain"), None, None)
        if upn is None or upn == name:
            return
        user["name"] = upn
        related = event.setdefault("related", {})
        seen = related.get("user")
        if not isinstance(seen, list):
            seen = related["user"] = []
        for value in (name, upn):
            if value not in seen:
                seen.append(value)
