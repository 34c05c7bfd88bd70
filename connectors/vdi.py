"""VDI session events: VMware Horizon, Citrix Monitor OData, Citrix ADC, Azure Virtual Desktop.

Every VDI event says who (``user.name``), from where (``source.ip``, the
client), to which session host (``destination.ip``, ``host.name``), in which
session (``vdi.session_id``) and pool (``vdi.pool``), and what happened as
``event.action``: ``vdi-login``, ``vdi-connect``, ``vdi-disconnect``,
``vdi-logout`` or ``vdi-login-failed``. Events of other kinds keep their
vendor name as a slug (``agent-pending``).

Formats:

``horizon``
    Horizon events as syslog (RFC 5424 with ``[View@6876 ...]`` structured
    data, or RFC 3164 with the same ``key="value"`` pairs in the message) or
    as JSON from the event database / REST ``audit-events``. The user is
    often only a SID (``UserSID``); enrichment maps it to the UPN.
``citrix``
    Citrix Monitor OData ``Sessions`` and ``Connections`` entities, one per
    line or whole pages (``{"value": [...]}``), with ``$expand``-ed User and
    Machine when present.
``citrix-adc``
    Citrix ADC / Gateway syslog (ICASTART, ICAEND_CONNSTAT, LOGIN, LOGOUT).
``avd``
    Azure Virtual Desktop ``WVDConnections`` rows (Log Analytics export or
    Event Hub ``Connection`` records). Rows of one connection share a
    ``CorrelationId``: it becomes ``vdi.session_id``, repeated states are
    dropped and ``Completed`` gets ``event.duration`` from ``Started``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from connectors import timeparse
from connectors.base import ParseContext, register
from connectors.ecs import scaled, to_int
from connectors.jsonrecords import dict_at, loads, slug, unwrap
from connectors.timeparse import parse_syslog, parse_timestamp
from zonewatch.errors import ParseError

# VDI logs repeat the same second many times (and Citrix ADC lines carry
# three stamps); parsing an ISO stamp is pure, so a cache spares the regex.
parse_iso = lru_cache(maxsize=8192)(timeparse.parse_iso)

SOURCE = "vdi"


def _base(ts: str, original: str, ctx: ParseContext, vendor: str, product: str) -> dict[str, Any]:
    return {
        "@timestamp": ts,
        "event": {
            "kind": "event",
            "category": ["session"],
            "original": original,
            "dataset": SOURCE,
            "module": ctx.format,
        },
        "observer": {"vendor": vendor, "product": product},
    }


_OUTCOME_BY_ACTION = {
    "vdi-login": "success",
    "vdi-connect": "success",
    "vdi-disconnect": "success",
    "vdi-logout": "success",
    "vdi-login-failed": "failure",
}
_TYPE_BY_ACTION = {
    "vdi-login": ["start"],
    "vdi-connect": ["start"],
    "vdi-disconnect": ["end"],
    "vdi-logout": ["end"],
    "vdi-login-failed": ["start"],
}


def _set_action(ev: dict[str, Any], action: str) -> None:
    ev["event"]["action"] = action
    if action in _OUTCOME_BY_ACTION:
        ev["event"]["outcome"] = _OUTCOME_BY_ACTION[action]
        ev["event"]["type"] = _TYPE_BY_ACTION[action]
        if action in ("vdi-login", "vdi-login-failed"):
            ev["event"]["category"] = ["authentication", "session"]
    else:
        ev["event"]["type"] = ["info"]


def _put(ev: dict[str, Any], section: str, key: str, value: Any) -> None:
    """Set a field from a record's value; objects, arrays and empty values
    are not field values and are left out."""
    if value is None or value == "":
        return
    kind = type(value)
    if kind is dict or kind is list:
        return
    ev.setdefault(section, {})[key] = value


def _split_hostport(value: str) -> tuple[str, int | None]:
    """``1.2.3.4:5`` / ``[::1]:5`` / bare address -> (ip, port)."""
    value = value.strip()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest.lstrip(":")
        return host, int(port) if port.isdigit() else None
    if value.count(":") == 1:
        host, _, port = value.partition(":")
        return host, int(port) if port.isdigit() else None
    return value, None


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


# A stream repeats a few key spellings (and JSON records one key order), so the
# folded keys are cached: by key tuple for whole records, by key for pairs.
# Both caches are bounded; keys beyond that are folded every time.
_CI_CACHE_MAX = 1024
_ci_keys: dict[tuple[str, ...], tuple[str, ...]] = {}
_ci_key: dict[str, str] = {}


def _fold(key: str) -> str:
    folded = key.replace("_", "").lower()
    if len(_ci_key) < _CI_CACHE_MAX:
        _ci_key[key] = folded
    return folded


def _ci(d: dict[str, Any]) -> dict[str, Any]:
    """Keys lower-cased without ``_``, so EventType, eventType and event_type meet."""
    keys = tuple(d)
    folded = _ci_keys.get(keys)
    if folded is None:
        folded = tuple(k.replace("_", "").lower() for k in keys)
        if len(_ci_keys) < _CI_CACHE_MAX:
            _ci_keys[keys] = folded
    return dict(zip(folded, d.values(), strict=True))


def _ci_pairs(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """``_ci`` for ``key="value"`` pairs as found by a regex."""
    get = _ci_key.get
    return {(get(k) or _fold(k)): v for k, v in pairs}


def _first(d: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        value = d.get(key)
        if value not in (None, ""):
            return value
    return None


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


# --- Citrix ADC / Gateway syslog ------------------------------------------------------------

# The ADC's own header starts at its MM/DD/YYYY:hh:mm:ss stamp; anything before
# it (a <PRI>, or a relay's whole RFC 3164 header) is the transport's.
_ADC_RE = re.compile(
    r"(?P<ts>\d{2}/\d{2}/\d{4}:\d{2}:\d{2}:\d{2})(?:\s+(?P<tz>[A-Za-z]{1,5}|[+-]\d{4}))?\s+"
    r"(?P<host>\S+)\s+(?P<ppe>\S+)\s+:\s+(?P<cls>\S+)\s+(?P<feature>\S+)\s+(?P<name>\S+)\s+"
    r"(?P<id>\d+)\s+(?P<sev>\d+)\s+:\s+(?P<msg>.*)",
    re.S,
)
_ADC_STAMP_RE = re.compile(r"\d{2}/\d{2}/\d{4}:\d{2}:\d{2}:\d{2}\s")
_ADC_TS_RE = re.compile(r"(\d{2})/(\d{2})/(\d{4}):(\d{2}:\d{2}:\d{2})(?:\s+(\S+))?")
_ADC_PREFIX_RE = re.compile(r"^(?:\[[^\]]*\])+\s*")
_ADC_ACTIONS = {
    "ICASTART": "vdi-connect",
    "ICAEND_CONNSTAT": "vdi-disconnect",
    "LOGIN": "vdi-login",
    "LOGOUT": "vdi-logout",
    "LOGIN_FAILED": "vdi-login-failed",
}


@lru_cache(maxsize=8192)
def adc_time(text: str, default_tz: Any) -> str:
    """``08/18/2026:10:00:00 GMT`` (month first) -> UTC."""
    m = _ADC_TS_RE.fullmatch(text.strip().strip('"'))
    if m is None:
        raise ParseError(f"not a Citrix ADC timestamp: {text[:40]!r}")
    mo, d, y, hms, tz = m.groups()
    iso = f"{y}-{mo}-{d}T{hms}{' ' + tz if tz else ''}"
    return parse_iso(iso, default_tz)


def adc_pairs(message: str) -> dict[str, str]:
    """``Key value - Key2 value2 - username:domainname a:b`` -> dict."""
    out: dict[str, str] = {}
    body = _ADC_PREFIX_RE.sub("", message.strip())
    for part in body.split(" - "):
        part = part.strip()
        if not part:
            continue
        key, _, value = part.partition(" ")
        out[key.rstrip(":")] = value.strip().strip('"')
    return out


def _duration_ns(text: str) -> int | None:
    parts = text.split(":")
    if len(parts) != 3 or not all(p.isdigit() and len(p) < 12 for p in parts):
        return None
    h, m, s = (int(p) for p in parts)
    return scaled(h * 3600 + m * 60 + s, 1_000_000_000)


def _int(text: str | None) -> int | None:
    """A counter, or None when absent or beyond 64 bits (ECS "long")."""
    return to_int(text) if text and text.isdigit() else None


@register(
    SOURCE,
    "citrix-adc",
    "Citrix ADC / Gateway syslog (ICASTART, ICAEND_CONNSTAT, LOGIN, LOGOUT)",
    sniff=lambda line: (
        "PPE-" in line and (" SSLVPN " in line or " AAA " in line or " TCP " in line)
    ),
)
def parse_citrix_adc(raw: str, ctx: ParseContext) -> list[dict[str, Any]]:
    body = raw.strip()
    # the ADC's own line, with or without <PRI>: its header is right there
    pos = body.find(">") + 1 if body[:1] == "<" else 0
    while body[pos : pos + 1] == " ":
        pos += 1
    m = _ADC_RE.fullmatch(body, pos)
    if m is None:  # behind a relay's header: find where the ADC's starts
        start = _ADC_STAMP_RE.search(body)
        m = _ADC_RE.fullmatch(body, start.start()) if start is not None else None
    if m is None:
        raise ParseError(
            "not a Citrix ADC syslog line (<PRI> MM/DD/YYYY:hh:mm:ss TZ host PPE : ...)"
        )
    stamp = m["ts"] + (f" {m['tz']}" if m["tz"] else "")
    ts = adc_time(stamp, ctx.timezone)
    ev = _base(ts, raw.rstrip("\r\n"), ctx, "Citrix", "Netscaler")
    name = m["name"]
    _set_action(ev, _ADC_ACTIONS.get(name, slug(name)))
    ev["event"]["id"] = m["id"]
    severity = to_int(m["sev"])
    if severity is not None:
        ev["event"]["severity"] = severity
    if m["tz"]:
        ev["event"]["timezone"] = m["tz"]
    ev["observer"].update({"hostname": m["host"], "type": "firewall"})
    kv = adc_pairs(m["msg"])
    for key, side in (("Source", "source"), ("Destination", "destination")):
        if kv.get(key):
            ip, port = _split_hostport(kv[key])
            _put(ev, side, "ip", ip)
            _put(ev, side, "port", port)
    client_ip = kv.get("Client_ip") or kv.get("ClientIP")
    context = kv.get("Context")
    if not client_ip and context and context.count("@") >= 1:
        client_ip = context.rsplit("@", 1)[1]
    _put(ev, "client", "ip", client_ip)
    if "source" not in ev and client_ip:
        _put(ev, "source", "ip", client_ip)
    user = kv.get("username:domainname") or kv.get("User")
    if user:
        name_, _, domain = user.partition(":")
        _put(ev, "user", "name", name_)
        _put(ev, "user", "domain", domain)
    started = kv.get("startTime") or kv.get("Start_time")
    ended = kv.get("endTime") or kv.get("End_time")
    if started:
        _put(ev, "event", "start", adc_time(started, ctx.timezone))
    if ended:
        _put(ev, "event", "end", adc_time(ended, ctx.timezone))
    if kv.get("Duration"):
        _put(ev, "event", "duration", _duration_ns(kv["Duration"]))
    if "source" in ev:
        _put(ev, "source", "bytes", _int(kv.get("Total_bytes_send")))
    if "destination" in ev:
        _put(ev, "destination", "bytes", _int(kv.get("Total_bytes_recv")))
    session = kv.get("SessionId") or kv.get("connectionId") or m["id"]
    _put(ev, "vdi", "session_id", session)
    _put(ev, "vdi", "connection_id", kv.get("connectionId"))
    _put(ev, "vdi", "application", kv.get("applicationName"))
    _put(ev, "vdi", "gateway", kv.get("SSLRelayAddress") or kv.get("Vserver"))
    reason = kv.get("Failure_reason") or kv.get("Reason") or kv.get("LogoutMethod")
    _put(ev, "event", "reason", reason)
    return [ev]


# --- Azure Virtual Desktop ------------------------------------------------------------------

_AVD_ACTIONS = {"started": "vdi-login", "connected": "vdi-connect", "completed": "vdi-disconnect"}
_AVD_POOL_RE = re.compile(r"/hostpools/([^/]+)", re.I)
# Connections still open, and ones recently completed (so a Completed row
# exported twice, or a late row of a finished connection, is still seen as
# a repeat). Both are bounded, oldest forgotten first, and both travel in
# every checkpoint: a finished connection must not stay in the open map, or
# the state (and each checkpoint) grows with the length of the log.
_AVD_MAX_OPEN = 100_000
_AVD_MAX_DONE = 4096
_AVD_OPEN = "avd.connections"
_AVD_DONE = "avd.completed"


def _avd_row(rec: dict[str, Any]) -> dict[str, Any]:
    """Log Analytics row or Event Hub record -> one case-insensitive field dict."""
    props = rec.get("properties")
    if isinstance(props, dict):
        return _ci({**rec, **props})
    return _ci(rec)


def _avd_seen(ctx: ParseContext, corr: str, key: str, ts: str) -> tuple[str, bool] | None:
    """(time of the connection's first row, whether it is open) after noting
    ``key``; None when this state of the connection was seen already."""
    state = ctx.state
    open_: dict[str, dict[str, Any]] | None = state.get(_AVD_OPEN)
    if open_ is None:
        open_ = state[_AVD_OPEN] = {}
    done: dict[str, list[str]] | None = state.get(_AVD_DONE)
    if done is None:
        done = state[_AVD_DONE] = {}
    seen = open_.get(corr)
    if seen is None:
        states = done.get(corr)
        if states is not None:  # a row of a connection already completed
            if key in states:
                return None
            states.append(key)
            return ts, False
        if len(open_) >= _AVD_MAX_OPEN:  # oldest first: dicts keep insertion order
            open_.pop(next(iter(open_)))
        seen = open_[corr] = {"first": ts, "states": [key]}
        first = ts
    elif key in seen["states"]:
        return None  # the same transition exported twice
    else:
        seen["states"].append(key)
        first = seen["first"]
    if key == "completed":
        del open_[corr]
        if len(done) >= _AVD_MAX_DONE:
            done.pop(next(iter(done)))
        done[corr] = seen["states"]
    return first, True


def _ns_between(first: str, last: str) -> int:
    a = datetime.fromisoformat(first.replace("Z", "+00:00"))
    b = datetime.fromisoformat(last.replace("Z", "+00:00"))
    return int((b - a).total_seconds() * 1_000_000_000)


# WVDErrors CodeSymbolic words that mean the user could not sign in
_AVD_AUTH_ERRORS = ("NotAuthorized", "Logon", "Password", "Locked", "Credential", "Authentic",
                    "UserAccount", "Mfa", "AccessDenied")  # fmt: skip


def avd_error(f: dict[str, Any], original: str, ctx: ParseContext) -> list[dict[str, Any]]:
    """One WVDErrors row: a failed connection (or feed/management operation)."""
    get = f.get
    when = get("timegenerated") or get("time")
    if not when:
        raise ParseError("WVDErrors row needs TimeGenerated")
    ts = parse_iso(str(when), UTC)
    ev = _base(ts, original, ctx, "Microsoft", "Azure Virtual Desktop")
    symbolic = str(get("codesymbolic") or "")
    activity = str(get("activitytype") or "")
    if activity.lower() == "connection" or not activity:
        auth = any(word.lower() in symbolic.lower() for word in _AVD_AUTH_ERRORS)
        _set_action(ev, "vdi-login-failed" if auth else "vdi-connection-failed")
    else:
        _set_action(ev, slug(f"avd-{activity}-error"))
    ev["event"]["outcome"] = "failure"
    _put(ev, "event", "reason", get("message") or symbolic or None)
    _put(ev, "event", "code", symbolic or (str(get("code")) if get("code") is not None else None))
    _put(ev, "user", "name", get("username"))
    vdi: dict[str, Any] = {}
    corr = get("correlationid")
    if corr:
        vdi["session_id"] = corr
    resource = get("resourceid")
    if resource:
        pool = _avd_pool(str(resource))
        if pool:
            vdi["pool"] = pool
    if get("serviceerror") is not None:
        vdi["service_error"] = get("serviceerror") in (True, "true", "True", 1)
    if vdi:
        ev["vdi"] = vdi
    return [ev]


def avd_event(rec: dict[str, Any], original: str, ctx: ParseContext) -> list[dict[str, Any]]:
    f = _avd_row(rec)
    get = f.get
    if "codesymbolic" in f or get("type") == "WVDErrors":
        return avd_error(f, original, ctx)
    state = str(get("state") or "")
    corr = get("correlationid")
    when = get("timegenerated") or get("time")
    if not state or not corr or not when:
        raise ParseError("WVDConnections row needs State, CorrelationId and TimeGenerated")
    ts = parse_iso(str(when), UTC)
    key = state.lower()
    seen = _avd_seen(ctx, corr, key, ts)
    if seen is None:
        return []
    first, was_open = seen
    ev = _base(ts, original, ctx, "Microsoft", "Azure Virtual Desktop")
    _set_action(ev, _AVD_ACTIONS.get(key) or slug(f"connection-{state}"))
    _put(ev, "user", "name", get("username"))
    client = get("clientsideipaddress")
    if isinstance(client, str) and client:
        _put(ev, "source", "ip", _split_hostport(client)[0])
    _put(ev, "destination", "ip", get("sessionhostipaddress"))
    _put(ev, "host", "name", get("sessionhostname"))
    vdi = ev["vdi"] = {"session_id": corr, "state": state}
    resource = get("resourceid")
    if resource:
        pool = _avd_pool(str(resource))
        if pool:
            vdi["pool"] = pool
    for field, name in _AVD_VDI_FIELDS:
        value = get(name)
        if value is not None and value != "":
            vdi[field] = value
    if key == "completed" and was_open:
        ev["event"]["start"] = first
        ev["event"]["duration"] = _ns_between(first, ts)
    return [ev]


_AVD_VDI_FIELDS = (
    ("connection_type", "connectiontype"),
    ("client_type", "clienttype"),
    ("host_session_id", "sessionhostsessionid"),
    ("reconnect_of", "predecessorconnectionid"),
)


@lru_cache(maxsize=1024)
def _avd_pool(resource: str) -> str | None:
    m = _AVD_POOL_RE.search(resource)
    return m.group(1) if m else None


@register(
    SOURCE,
    "avd",
    "Azure Virtual Desktop WVDConnections and WVDErrors rows (grouped by CorrelationId)",
    sniff=lambda line: (
        "SessionHostName" in line
        or "ClientSideIPAddress" in line
        or ('"CodeSymbolic"' in line and '"CorrelationId"' in line)
    ),
)
def parse_avd(raw: str, ctx: ParseContext) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for rec, original in unwrap(loads(raw), raw):
        out.extend(avd_event(rec, original, ctx))
    return out
