"""``vdi/citrix``: Citrix Monitor OData ``Sessions`` and ``Connections`` entities."""

from __future__ import annotations

import re
from datetime import UTC
from typing import Any

from connectors import timeparse
from connectors.base import ParseContext, register
from connectors.jsonrecords import dict_at, loads, slug, unwrap
from connectors.vdi.common import (
    SOURCE,
    _base,
    _first,
    _put,
    _set_action,
    _split_hostport,
    parse_iso,
)
from zonewatch.errors import ParseError

# --- Citrix Monitor OData -------------------------------------------------------------

# Monitor.Model ConnectionState enumeration
_CITRIX_STATES = {
    0: "Unknown",
    1: "Connected",
    2: "Disconnected",
    3: "Terminated",
    4: "PreparingSession",
    5: "Active",
    6: "Reconnecting",
    7: "NonBrokeredSession",
    8: "Other",
    9: "Pending",
}


_ODATA_DATE_RE = re.compile(r"/Date\((-?\d{1,15})([+-]\d{4})?\)/")


def _odata_time(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    if value.startswith("/Date("):  # OData v2/v3 verbose JSON: milliseconds since 1970 UTC
        m = _ODATA_DATE_RE.fullmatch(value)
        if m is None:
            raise ParseError(f"not an OData date: {value[:40]!r}")
        return timeparse.parse_epoch(int(m.group(1)))
    return parse_iso(value, UTC)  # Monitor OData dates are UTC


# Sessions and Connections of one session share its SessionKey: what one
# entity knows (the user and machine of a Session, the client address of a
# Connection) completes the other, in whichever order they arrive. Bounded
# (oldest forgotten first) and carried in checkpoints.
_CITRIX_JOIN = "citrix.sessions"
_CITRIX_JOIN_MAX = 4096
_JOINED = (
    ("user", "name"),
    ("user", "id"),
    ("user", "domain"),
    ("host", "name"),
    ("destination", "ip"),
    ("vdi", "pool"),
    ("source", "ip"),
    ("source", "address"),
)


def _citrix_join(ev: dict[str, Any], ctx: ParseContext) -> None:
    key = ev.get("vdi", {}).get("session_id")
    if not key:
        return
    known: dict[str, dict[str, str]] | None = ctx.state.get(_CITRIX_JOIN)
    if known is None:
        known = ctx.state[_CITRIX_JOIN] = {}
    seen = known.pop(key, None) or {}
    for section, name in _JOINED:
        dotted = f"{section}.{name}"
        value = ev.get(section, {}).get(name)
        if value:
            seen[dotted] = value
        elif dotted in seen:
            _put(ev, section, name, seen[dotted])
    if len(known) >= _CITRIX_JOIN_MAX:
        known.pop(next(iter(known)))
    known[key] = seen


def _citrix_user(ev: dict[str, Any], rec: dict[str, Any]) -> None:
    user = dict_at(rec, "User")
    upn = _first(user, "Upn", "UPN") or rec.get("BrokeringUserUPN")
    name = _first(user, "UserName") or rec.get("BrokeringUserName")
    domain = _first(user, "Domain")
    if upn:
        _put(ev, "user", "name", upn)
    elif name:
        _put(ev, "user", "name", name)
        _put(ev, "user", "domain", domain)
    _put(ev, "user", "id", _first(user, "Sid") or rec.get("UserId"))


def _citrix_machine(ev: dict[str, Any], rec: dict[str, Any]) -> None:
    machine = dict_at(rec, "Machine")
    _put(ev, "host", "name", _first(machine, "DnsName", "Name") or rec.get("MachineDNSName"))
    _put(ev, "destination", "ip", _first(machine, "IPAddress") or rec.get("MachineIPAddress"))
    group = dict_at(machine, "DesktopGroup")
    _put(ev, "vdi", "pool", _first(group, "Name") or rec.get("DesktopGroupName"))


def _citrix_connection(rec: dict[str, Any], original: str, ctx: ParseContext) -> dict[str, Any]:
    disconnected = _odata_time(rec.get("DisconnectDate"))
    failed = rec.get("ConnectionFailureReason") or rec.get("FailureCode")
    started = _odata_time(
        _first(rec, "LogOnEndDate", "BrokeringDate", "EstablishmentDate", "LogOnStartDate")
    )
    ts = disconnected or started or _odata_time(rec.get("ModifiedDate"))
    if ts is None:
        raise ParseError("Citrix Connection without BrokeringDate/LogOnEndDate/DisconnectDate")
    ev = _base(ts, original, ctx, "Citrix", "Virtual Apps and Desktops")
    if failed:
        action = "vdi-login-failed"
        _put(ev, "event", "reason", str(failed))
    elif disconnected:
        action = "vdi-disconnect"
    else:
        action = "vdi-connect"
    _set_action(ev, action)
    client = rec.get("ClientAddress")
    if isinstance(client, str) and client:
        _put(ev, "source", "ip", _split_hostport(client)[0])
    _put(ev, "source", "address", rec.get("ClientName"))
    _put(ev, "vdi", "session_id", str(rec["SessionKey"]) if rec.get("SessionKey") else None)
    _put(ev, "vdi", "connection_id", str(rec["Id"]) if rec.get("Id") is not None else None)
    _put(ev, "vdi", "protocol", rec.get("Protocol"))
    _put(ev, "vdi", "gateway", rec.get("ConnectedViaIPAddress") or rec.get("ConnectedViaHostName"))
    if rec.get("IsReconnect") is True:
        ev["vdi"]["reconnect"] = True
    _citrix_user(ev, rec)
    _citrix_machine(ev, rec)
    return ev


def _citrix_session(rec: dict[str, Any], original: str, ctx: ParseContext) -> dict[str, Any]:
    state = rec.get("ConnectionState")
    if isinstance(state, int):
        state = _CITRIX_STATES.get(state, "Other")
    state = str(state or "")
    ended = _odata_time(rec.get("EndDate"))
    failed = _odata_time(rec.get("FailureDate"))
    ts = (
        failed or ended or _odata_time(rec.get("ModifiedDate")) or _odata_time(rec.get("StartDate"))
    )
    if ts is None:
        raise ParseError("Citrix Session without StartDate/EndDate/ModifiedDate")
    ev = _base(ts, original, ctx, "Citrix", "Virtual Apps and Desktops")
    if failed or rec.get("FailureId"):
        action = "vdi-login-failed"
    elif ended or state == "Terminated":
        action = "vdi-logout"
    elif state == "Disconnected":
        action = "vdi-disconnect"
    elif state in ("Connected", "Active", "Reconnecting"):
        action = "vdi-connect"
    else:
        action = slug(f"session-{state or 'unknown'}")
    _set_action(ev, action)
    _put(ev, "vdi", "session_id", str(rec["SessionKey"]) if rec.get("SessionKey") else None)
    _put(ev, "vdi", "state", state or None)
    start = _odata_time(rec.get("StartDate"))
    _put(ev, "event", "start", start)
    _put(ev, "event", "end", ended)
    conn = rec.get("CurrentConnection")
    if isinstance(conn, dict) and isinstance(conn.get("ClientAddress"), str):
        _put(ev, "source", "ip", _split_hostport(conn["ClientAddress"])[0])
    _citrix_user(ev, rec)
    _citrix_machine(ev, rec)
    return ev


@register(
    SOURCE,
    "citrix",
    "Citrix Monitor OData Sessions / Connections (entities or pages)",
    sniff=lambda line: '"SessionKey"' in line,
)
def parse_citrix(raw: str, ctx: ParseContext) -> list[dict[str, Any]]:
    out = []
    for rec, original in unwrap(loads(raw), raw):
        if "ConnectionState" in rec or "StartDate" in rec:
            ev = _citrix_session(rec, original, ctx)
        elif "SessionKey" in rec or "ClientAddress" in rec or "BrokeringDate" in rec:
            ev = _citrix_connection(rec, original, ctx)
        else:
            raise ParseError("neither a Citrix Monitor Session nor a Connection entity")
        _citrix_join(ev, ctx)
        out.append(ev)
    return out
