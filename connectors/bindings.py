"""Who held an address, whose a device is, who has a restricted VDI session open (pure).

Connectors learn these facts from the sources that know them and fill them
into the events of the sources that do not:

* **addresses**: an Entra sign-in (success, a user, ``source.ip``), a VDI
  login or connect (the client address) and an Intune device record with
  addresses (Graph ``hardwareInformation``) each *observe* that a user (and
  device) held an address at a time. Addresses with a role in the zone map
  (NAT egress, proxy, VDI pool hosts) are shared by design and never bound.
  A firewall, gateway or VDI event with ``source.ip`` and no user gets that
  user (``user.name``, and ``host.name`` / ``device.id`` when it has none) if
  a binding covers the event's time.
* **devices**: Intune device records (device id, Entra device id, name,
  primary user, ownership, compliance) and the static ``identities[].devices``
  lists of ``rules/zones.yaml``. An event with ``host.name`` and no user gets
  the device's user.
* **restricted VDI sessions**: a VDI login or connect into a My Number or
  LGWAN pool opens a session for the user, a disconnect or logoff closes it.
  A sign-in of a user whose session was open at the sign-in's time carries
  ``zonewatch.vdi_session``.

How long a binding holds: from ``skew_s`` before its first observation until
``ttl_s`` after its last one (every new observation of the same user on the
address extends it). Conflicts: when an address was observed for two users,
the binding that started last before the event wins if the other was last
seen before it began (the address moved, as DHCP does); if their observed
spans overlap, the address is shared (NAT, proxy, terminal server) and fills
nothing while both hold. A device's newest observation wins; a learned
device beats the static list. A session holds at most ``max_session_s``.

Bounded: at most ``max_addresses`` addresses (the least recently observed go
first), ``per_address`` bindings per address, ``max_devices`` devices and
``per_user_sessions`` sessions per user for ``max_users`` users. Everything
is plain data (``snapshot()`` / ``merge()``), so the connectors can keep it in
files that survive restarts and that other connectors read
(``connectors/identity_store.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

RESTRICTED_TARGETS = frozenset({"mynumber", "lgwan"})
_VDI_START = frozenset({"vdi-login", "vdi-connect"})
_VDI_END = frozenset({"vdi-disconnect", "vdi-logout"})
_DEVICE_ACTIONS = frozenset(
    {"device-observed", "device-compliance-changed", "device-ownership-changed",
     "device-user-changed"}
)  # fmt: skip


# Events of one burst share their stamp, and the learners and fill() read it
# again for every event; the answer depends only on the text.
@lru_cache(maxsize=4096)
def epoch(ts: str) -> float:
    """Seconds since the epoch of an ``@timestamp`` (``...Z`` or with an offset)."""
    return datetime.fromisoformat(ts[:-1] + "+00:00" if ts.endswith("Z") else ts).timestamp()


def stamp(seconds: float) -> str:
    dt = datetime.fromtimestamp(seconds, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class Limits:
    ttl_s: float = 4 * 3600.0
    skew_s: float = 60.0
    max_session_s: float = 12 * 3600.0
    max_addresses: int = 100_000
    per_address: int = 4
    max_devices: int = 200_000
    max_users: int = 100_000
    per_user_sessions: int = 4


# Plain lists, so snapshots are JSON and merging is cheap:
# binding  [user, device_id, host, first, last, origin]
# device   {"user", "name", "id", "entra_id", "ownership", "compliance", "last", "origin"}
# session  [start, end or None, target, pool, session_id]
U, DEV, HOST, FIRST, LAST, ORIGIN = range(6)


def _first_seen(binding: list[Any]) -> float:
    return binding[FIRST]


def _last_seen(binding: list[Any]) -> float:
    return binding[LAST]


def _started(session: list[Any]) -> float:
    return session[0]


class IdentityMap:
    def __init__(self, limits: Limits | None = None):
        self.limits = limits or Limits()
        self.addresses: dict[str, list[list[Any]]] = {}
        self.devices: dict[str, dict[str, Any]] = {}  # by lower-case name, id and Entra id
        self.sessions: dict[str, list[list[Any]]] = {}
        self.static_devices: dict[str, str] = {}  # lower-case device name -> UPN
        self.conflicts = 0  # lookups refused because an address was shared
        self.newest = 0.0  # the latest observation, in event time
        self.changed = False  # observed something since the last mark_saved()

    # -- learning ---------------------------------------------------------------
    def observe_address(
        self,
        ip: str,
        when: float,
        user: str,
        device_id: str | None = None,
        host: str | None = None,
        origin: str = "",
    ) -> None:
        self._touch(when)
        bindings = self.addresses.pop(ip, None)
        if bindings is None:
            bindings = [[user, device_id, host, when, when, origin]]
        else:
            for b in bindings:
                if b[U] == user and (b[DEV] == device_id or not device_id or not b[DEV]):
                    if when < b[FIRST]:
                        b[FIRST] = when
                    if when > b[LAST]:
                        b[LAST] = when
                    b[DEV] = b[DEV] or device_id
                    b[HOST] = b[HOST] or host
                    break
            else:
                bindings.append([user, device_id, host, when, when, origin])
                bindings.sort(key=_first_seen)
                if len(bindings) > self.limits.per_address:
                    bindings.remove(min(bindings, key=_last_seen))
        self.addresses[ip] = bindings  # re-inserted: most recently observed last
        while len(self.addresses) > self.limits.max_addresses:
            del self.addresses[next(iter(self.addresses))]

    def observe_device(self, entry: dict[str, Any]) -> None:
        """An Intune device record: keys user, name, id, entra_id, ownership,
        compliance, last (epoch seconds), origin."""
        self._touch(float(entry.get("last") or 0.0))
        keys = [str(entry[k]).lower() for k in ("name", "id", "entra_id") if entry.get(k)]
        for key in keys:
            old = self.devices.pop(key, None)
            if old is not None and old.get("last", 0) > entry.get("last", 0):
                self.devices[key] = old  # an older record arriving late changes nothing
            else:
                self.devices[key] = entry
        while len(self.devices) > self.limits.max_devices:
            del self.devices[next(iter(self.devices))]

    def forget_device(self, device_id: str) -> None:
        entry = self.devices.get(device_id.lower())
        if entry is None:
            return
        self.changed = True
        for key in ("name", "id", "entra_id"):
            if entry.get(key) and self.devices.get(str(entry[key]).lower()) is entry:
                del self.devices[str(entry[key]).lower()]

    def observe_session(
        self,
        user: str,
        when: float,
        *,
        end: bool,
        target: str | None = None,
        pool: str | None = None,
        session_id: str | None = None,
    ) -> None:
        self._touch(when)
        sessions = self.sessions.pop(user, [])
        if end:
            for s in reversed(sessions):
                same = session_id is None or s[4] is None or s[4] == session_id
                if same and s[1] is None and s[0] <= when:
                    s[1] = when
                    break
        else:
            for s in sessions:
                if s[0] == when and s[4] == session_id:
                    break  # seen already
            else:
                ordered = not sessions or sessions[-1][0] <= when
                sessions.append([when, None, target, pool, session_id])
                if not ordered:  # stable: equal starts keep their arrival order
                    sessions.sort(key=_started)
                if len(sessions) > self.limits.per_user_sessions:
                    del sessions[: -self.limits.per_user_sessions]
        if sessions:
            self.sessions[user] = sessions
        while len(self.sessions) > self.limits.max_users:
            del self.sessions[next(iter(self.sessions))]

    def _touch(self, when: float) -> None:
        self.changed = True
        if when > self.newest:
            self.newest = when

    def add_static_devices(self, devices: dict[str, str]) -> None:
        self.static_devices.update({name.lower(): upn for name, upn in devices.items()})

    # -- answering ------------------------------------------------------------------
    def address(self, ip: str, when: float) -> list[Any] | None:
        """The binding of ``ip`` at ``when``, or None (none holds, or it is shared)."""
        bindings = self.addresses.get(ip)
        if not bindings:
            return None
        lim = self.limits
        live = [b for b in bindings if b[FIRST] - lim.skew_s <= when <= b[LAST] + lim.ttl_s]
        if not live:
            return None
        best = max(live, key=lambda b: b[FIRST])
        for other in live:
            if other[U] != best[U] and other[LAST] >= best[FIRST]:
                self.conflicts += 1
                return None  # both observed in the same span: a shared address
        return best

    def device(self, name_or_id: str) -> dict[str, Any] | None:
        key = name_or_id.lower()
        learned = self.devices.get(key)
        if learned is not None:
            return learned
        upn = self.static_devices.get(key)
        return {"user": upn, "name": name_or_id, "origin": "static"} if upn else None

    def live_session(self, user: str, when: float) -> list[Any] | None:
        """The restricted VDI session ``user`` had open at ``when`` (the latest)."""
        lim = self.limits
        for s in reversed(self.sessions.get(user, [])):
            start, end = s[0], s[1]
            open_then = start - lim.skew_s <= when and (end is None or when <= end)
            if open_then and when - start <= lim.max_session_s:
                return s
        return None

    # -- plain data ------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {
            "addresses": self.addresses,
            "devices": _unique_devices(self.devices),
            "sessions": self.sessions,
        }

    def merge(self, snap: dict[str, Any]) -> None:
        """Add another map's observations (another connector's file)."""
        for ip, bindings in (snap.get("addresses") or {}).items():
            for b in bindings:
                if isinstance(b, list) and len(b) == 6:
                    self.observe_address(ip, b[FIRST], b[U], b[DEV], b[HOST], b[ORIGIN])
                    if b[LAST] != b[FIRST]:
                        self.observe_address(ip, b[LAST], b[U], b[DEV], b[HOST], b[ORIGIN])
        for entry in snap.get("devices") or []:
            if isinstance(entry, dict):
                self.observe_device(entry)
        for user, sessions in (snap.get("sessions") or {}).items():
            mine = self.sessions.setdefault(user, [])
            for s in sessions:
                if not (isinstance(s, list) and len(s) == 5):
                    continue
                same = next((m for m in mine if m[0] == s[0] and m[4] == s[4]), None)
                if same is None:
                    mine.append(list(s))
                elif s[1] is not None and (same[1] is None or s[1] < same[1]):
                    same[1] = s[1]  # one copy saw the session end
            mine.sort(key=lambda s: s[0])
            del mine[: -self.limits.per_user_sessions]

    def expire(self, now: float) -> None:
        """Forget bindings and sessions that can no longer answer for ``now`` or later."""
        lim = self.limits
        for ip in list(self.addresses):
            kept = [b for b in self.addresses[ip] if b[LAST] + lim.ttl_s >= now]
            if kept:
                self.addresses[ip] = kept
            else:
                del self.addresses[ip]
        for user in list(self.sessions):
            kept = [s for s in self.sessions[user] if now - s[0] <= lim.max_session_s]
            if kept:
                self.sessions[user] = kept
            else:
                del self.sessions[user]


def _unique_devices(devices: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[int, dict[str, Any]] = {}
    for entry in devices.values():
        seen.setdefault(id(entry), entry)
    return list(seen.values())


# -- from events ---------------------------------------------------------------------


def _node(event: dict[str, Any], key: str) -> dict[str, Any]:
    value = event.get(key)
    return value if isinstance(value, dict) else {}


def _text(node: Any, key: str) -> str | None:
    value = node.get(key) if isinstance(node, dict) else None
    return value if isinstance(value, str) and value else None


def learn(identity: IdentityMap, event: dict[str, Any], *more: IdentityMap) -> None:
    """Observe what an enriched event tells about addresses, devices and sessions.

    ``more``: further maps that observe the same (a connector's own map and
    its view of all of them); the event is read once for all of them.

    An address with a role in the zone map (the city's NAT egress, a proxy, a
    VDI pool host, the security cloud) serves many people by design and is
    never bound to one."""
    meta = event.get("event")
    if not isinstance(meta, dict):
        return
    dataset, action = meta.get("dataset"), meta.get("action")
    ts = event.get("@timestamp")
    if not isinstance(ts, str) or not isinstance(action, str):
        return
    maps = (identity, *more)
    if dataset == "identity":
        if action not in ("signin", "signin-noninteractive") or meta.get("outcome") != "success":
            return
        user = _text(event.get("user"), "name")
        ip = _address(event)
        if user and ip:
            when, name = epoch(ts), user.lower()
            device, host = _text(event.get("device"), "id"), _text(event.get("host"), "name")
            for m in maps:
                m.observe_address(ip, when, name, device, host, "signin")
    elif dataset == "intune":
        _learn_device(maps, event, action, _text(event.get("user"), "name"), ts)
    elif dataset == "vdi" and meta.get("outcome") != "failure":
        start = action in _VDI_START
        if not start and action not in _VDI_END:
            return
        user = _text(event.get("user"), "name")
        if not user:
            return
        name, when = user.lower(), epoch(ts)
        if start:
            ip = _address(event)
            if ip:
                for m in maps:
                    m.observe_address(ip, when, name, origin="vdi")
            target = _node(event, "zone").get("destination_target")
            if target in RESTRICTED_TARGETS:
                vdi = _node(event, "vdi")
                pool, session = _text(vdi, "pool"), _text(vdi, "session_id")
                for m in maps:
                    m.observe_session(
                        name, when, end=False, target=target, pool=pool, session_id=session
                    )
        else:
            session = _text(_node(event, "vdi"), "session_id")
            for m in maps:
                m.observe_session(name, when, end=True, session_id=session)


def _address(event: dict[str, Any]) -> str | None:
    """``source.ip`` unless the zone map gives that address a role (shared by design)."""
    return None if _text(event.get("zone"), "source_role") else _text(event.get("source"), "ip")


def _learn_device(
    maps: tuple[IdentityMap, ...],
    event: dict[str, Any],
    action: str,
    user: str | None,
    ts: str,
) -> None:
    device_id = _text(event.get("device"), "id")
    if not device_id:
        return
    if action == "device-removed":
        for m in maps:
            m.forget_device(device_id)
        return
    if action not in _DEVICE_ACTIONS:
        return
    intune = _node(event, "intune")
    host = _node(event, "host")
    when = epoch(ts)
    name = _text(host, "name")
    entry = {
        "user": user.lower() if user else None,
        "name": name,
        "id": device_id,
        "entra_id": _text(intune, "azure_ad_device_id"),
        "ownership": _text(intune, "ownership"),
        "compliance": _text(intune, "compliance"),
        "last": when,
        "origin": "intune",
    }
    for m in maps:
        m.observe_device(dict(entry))  # a map's entries are its own
    ips = host.get("ip")
    if user and isinstance(ips, list):
        for ip in ips:
            if isinstance(ip, str):
                for m in maps:
                    m.observe_address(ip, when, user.lower(), device_id, name, "intune")


def static_devices(identities: Iterable[Any]) -> dict[str, str]:
    """``rules/zones.yaml`` identities -> device name -> UPN."""
    return {device: ident.upn for ident in identities for device in ident.devices}


# -- into events ------------------------------------------------------------------------

_NO_FILL = frozenset({"identity", "intune"})


def fill(identity: IdentityMap, event: dict[str, Any]) -> None:
    """Give an event without a user the user of its address or its host
    (firewall, gateway and VDI events; identity and Intune name their own)."""
    meta = event.get("event")
    dataset = meta.get("dataset") if isinstance(meta, dict) else None
    if dataset in _NO_FILL:
        return
    user = event.get("user")
    if isinstance(user, dict) and user.get("name"):
        return
    source = event.get("source")
    ip = source.get("ip") if isinstance(source, dict) else None
    host = event.get("host")
    host_name = host.get("name") if isinstance(host, dict) else None
    if isinstance(ip, str) and ip in identity.addresses:
        ts = event.get("@timestamp")
        if isinstance(ts, str):
            binding = identity.address(ip, epoch(ts))
            if binding is not None:
                _apply(event, binding[U], binding[DEV], binding[HOST], "address", binding[ORIGIN])
                event["zonewatch"]["binding"]["first_seen"] = stamp(binding[FIRST])
                event["zonewatch"]["binding"]["last_seen"] = stamp(binding[LAST])
                return
    if isinstance(host_name, str) and host_name:
        entry = identity.device(host_name)
        if entry is not None and entry.get("user"):
            _apply(event, entry["user"], entry.get("id"), None, "host", entry.get("origin", ""))


def _apply(
    event: dict[str, Any],
    user: str,
    device_id: str | None,
    host: str | None,
    how: str,
    origin: str,
) -> None:
    node = event.get("user")
    if not isinstance(node, dict):
        node = event["user"] = {}
    node["name"] = user
    if device_id and not isinstance(event.get("device"), dict):
        event["device"] = {"id": device_id}
    if host:
        host_node = event.get("host")
        if not isinstance(host_node, dict):
            event["host"] = {"name": host}
        elif not host_node.get("name"):
            host_node["name"] = host
    ours = event.setdefault("zonewatch", {})
    ours["binding"] = {"from": how, "origin": origin}


def annotate_session(identity: IdentityMap, event: dict[str, Any]) -> None:
    """A sign-in of a user whose restricted VDI session was open at the time
    gets ``zonewatch.vdi_session`` (target zone, pool, since when)."""
    if not identity.sessions:
        return
    meta = event.get("event")
    if not isinstance(meta, dict) or meta.get("dataset") != "identity":
        return
    user = _text(event.get("user"), "name")
    ts = event.get("@timestamp")
    if not user or not isinstance(ts, str) or not str(meta.get("action", "")).startswith("signin"):
        return
    session = identity.live_session(user.lower(), epoch(ts))
    if session is not None:
        info = {"target": session[2], "since": stamp(session[0])}
        if session[3]:
            info["pool"] = session[3]
        if session[4]:
            info["session_id"] = session[4]
        event.setdefault("zonewatch", {})["vdi_session"] = info
