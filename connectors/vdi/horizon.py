"""``vdi/horizon``: VMware Horizon events as syslog (RFC 5424/3164 ``key="value"``
pairs) or JSON.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from connectors.base import ParseContext, register
from connectors.jsonrecords import loads, slug, unwrap
from connectors.timeparse import parse_syslog, parse_timestamp
from connectors.vdi.common import (
    _OUTCOME_BY_ACTION,
    SOURCE,
    _base,
    _ci,
    _ci_pairs,
    _first,
    _put,
    _set_action,
    _split_hostport,
)
from zonewatch.errors import ParseError

# --- VMware Horizon ----------------------------------------------------------------

# Unrolled and possessive, and never starting inside a name (a match there
# would fail where the name starts): the same pairs as the plain pattern in
# a third of the time.
_SD_PARAM_RE = re.compile(r'(?<![A-Za-z0-9_.])([A-Za-z0-9_.]++)="([^"\\]*+(?:\\.[^"\\]*+)*+)"')
_SD_BLOCK_RE = re.compile(r'\[[^\s\]=]+@\d+(?:\s+[A-Za-z0-9_.]+="(?:[^"\\]|\\.)*")*\s*\]')
# REST API audit-events name the event type "type": "BROKER_USERLOGGEDIN"
_HORIZON_JSON_TYPE_RE = re.compile(
    r'"(?:type|event_type)"\s*:\s*"(?:BROKER|AGENT|ADMIN|VLSI|VC|CONNECTION_SERVER)_'
)
_HORIZON_USER_RE = re.compile(r"\bUser (\S+\\\S+|\S+@\S+)")


_HORIZON_ACTIONS = {
    "BROKER_USERLOGGEDIN": "vdi-login",
    "BROKER_USERLOGGEDOUT": "vdi-logout",
    "AGENT_CONNECTED": "vdi-connect",
    "AGENT_RECONNECTED": "vdi-connect",
    "AGENT_DISCONNECTED": "vdi-disconnect",
    "AGENT_ENDED": "vdi-logout",
    "AGENT_LOGGEDOFF": "vdi-logout",
}


# Horizon severities: AUDIT_SUCCESS / AUDIT_FAIL say how an audited action ended
_HORIZON_SEVERITY_OUTCOME = {"AUDIT_SUCCESS": "success", "AUDIT_FAIL": "failure"}


def _horizon_other(ev: dict[str, Any], event_type: str, severity: str) -> None:
    """Events other than session life-cycle: administrator actions are
    configuration changes (``ADMIN_*``, ``VLSI_*`` admin console logins are
    authentication); the outcome comes from the audit severity, else unknown."""
    event = ev["event"]
    if event_type.endswith(("USERLOGGEDIN", "USERLOGGEDOUT")):
        event["category"] = ["authentication"]
        event["type"] = ["start" if event_type.endswith("IN") else "end"]
    elif event_type.startswith("ADMIN_"):
        event["category"] = ["configuration"]
        event["type"] = ["change"]
    event["outcome"] = _HORIZON_SEVERITY_OUTCOME.get(severity, "unknown")


@lru_cache(maxsize=1024)
def horizon_action(event_type: str, severity: str = "") -> str:
    t = event_type.upper()
    if "AUTHFAIL" in t or "AUTH_FAIL" in t or "LOGIN_FAIL" in t or "NOT_ENTITLED" in t:
        return "vdi-login-failed"
    if severity.upper() == "AUDIT_FAIL" and t.startswith("BROKER_USER"):
        return "vdi-login-failed"
    return _HORIZON_ACTIONS.get(t, slug(event_type) or "horizon-event")


def horizon_event(
    f: dict[str, Any], ts: str, original: str, message: str, ctx: ParseContext
) -> dict[str, Any]:
    """One Horizon event from its fields, keys already folded by :func:`_ci`."""
    get = f.get
    event_type = str(get("eventtype") or get("type") or "")
    if not event_type:
        raise ParseError("Horizon event without EventType")
    severity = get("severity")
    ev = _base(ts, original, ctx, "VMware", "Horizon")
    action = horizon_action(event_type, str(severity or ""))
    _set_action(ev, action)
    if action not in _OUTCOME_BY_ACTION:
        _horizon_other(ev, event_type.upper(), str(severity or "").upper())
    horizon = ev["horizon"] = {"event_type": event_type}
    for name in ("module", "severity", "node"):
        value = get(name)
        if value:
            horizon[name] = value
    sid = _first(f, "usersid", "userid")
    name = _first(f, "userdisplayname", "username", "user")
    if not name and message:
        m = _HORIZON_USER_RE.search(message)
        if m:
            name = m.group(1).rstrip(".,;")
    if sid or name:
        user = ev["user"] = {}
        if sid:
            user["id"] = sid
        if name:
            user["name"] = name
    client = _first(f, "clientipaddress", "clientip", "clientaddress")
    if isinstance(client, str) and client:
        _put(ev, "source", "ip", _split_hostport(client)[0])
    _put(ev, "destination", "ip", _first(f, "machineipaddress", "machineip", "agentip"))
    _put(ev, "host", "name", _first(f, "machinename", "machinednsname", "dnsname"))
    _put(ev, "vdi", "pool", _first(f, "desktopid", "desktoppoolid", "poolid", "farmid"))
    _put(ev, "vdi", "session_id", _first(f, "brokersessionid", "sessionid", "sessionkey"))
    _put(ev, "vdi", "machine_id", get("machineid"))
    if message:
        ev["message"] = message
    return ev


def _horizon_json(raw: str, ctx: ParseContext) -> list[dict[str, Any]]:
    out = []
    for rec, original in unwrap(loads(raw), raw):
        f = _ci(rec)
        when = _first(f, "time", "timestamp", "eventtime", "timegenerated")
        if when is None:
            raise ParseError("Horizon JSON event without Time")
        ts = parse_timestamp(str(when), ctx.timezone, ctx.now)
        message = str(_first(f, "moduleandeventtext", "message", "eventtext") or "")
        out.append(horizon_event(f, ts, original, message, ctx))
    return out


@register(
    SOURCE,
    "horizon",
    "VMware Horizon events (syslog with View@6876 data, or event-database JSON)",
    sniff=lambda line: (
        "View@6876" in line
        or '"EventType"' in line
        or "EventType=" in line
        or _HORIZON_JSON_TYPE_RE.search(line) is not None
    ),
)
def parse_horizon(raw: str, ctx: ParseContext) -> list[dict[str, Any]]:
    text = raw.lstrip()
    if text.startswith("{") or text.startswith("["):
        return _horizon_json(text, ctx)
    header = parse_syslog(text, ctx.timezone, ctx.now)
    pairs = _SD_PARAM_RE.findall(header.structured_data or "")
    message = header.message
    if not pairs:  # RFC 3164 senders put the pairs into the message
        pairs = _SD_PARAM_RE.findall(message)
        message = _SD_BLOCK_RE.sub("", message).strip()
    if not pairs:
        raise ParseError('syslog line without Horizon key="value" event data')
    fields = _ci_pairs(pairs)
    ts = header.timestamp or parse_timestamp(str(fields.get("time", "")), ctx.timezone, ctx.now)
    ev = horizon_event(fields, ts, raw, message.strip(), ctx)
    _put(ev, "observer", "hostname", header.hostname)
    return [ev]
