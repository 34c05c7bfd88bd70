"""Palo Alto Networks PAN-OS syslog CSV -> ECS.

Column orders follow the PAN-OS "Syslog Field Descriptions" of 10.x/11.x
(and Prisma Access, which forwards the same CSV): every log type shares the
header ``FUTURE_USE, Receive Time, Serial, Type, Subtype, FUTURE_USE,
Generated Time`` and then has its own columns:

* TRAFFIC and THREAT (url, file, virus, spyware, vulnerability, wildfire...):
  sessions and what the firewall decided (Action column);
* SYSTEM: daemon events, among them administrator and GlobalProtect
  authentication (``auth-fail``, ``auth-success``...);
* CONFIG: administrator changes (Command, Admin, Client, Result, Path), with
  or without the Before/After Change Detail columns (custom formats only);
* USERID: IP-to-user mappings (login/logout);
* GLOBALPROTECT (9.1+): portal and gateway authentication and connections;
* AUTHENTICATION: Authentication Policy events.

Other types (HIPMATCH, DECRYPTION, TUNNEL...) keep the header fields. Times
are in the firewall's zone (``ctx.timezone``): PAN-OS writes no offset.
"""

from __future__ import annotations

import re
from typing import Any

from connectors.base import ParseContext, register
from connectors.ecs import (
    EMPTY,
    Event,
    endpoint,
    new_event,
    scaled,
    section,
    text,
    to_int,
    to_ip,
    to_port,
    transport,
    url_object,
)
from connectors.outcomes import (
    DENIED,
    PANOS,
    UNKNOWN,
    Verdict,
    apply,
)
from connectors.timeparse import parse_iso
from zonewatch.errors import ParseError

_TYPES = (
    "TRAFFIC|THREAT|SYSTEM|CONFIG|USERID|GLOBALPROTECT|AUTHENTICATION|HIPMATCH|DECRYPTION|"
    "TUNNEL|GTP|SCTP|CORRELATION|IPTAG|URL|WILDFIRE|DATA"
)
_PANOS_START_RE = re.compile(r"(?:^|\s)([^\s,]*,\d{4}/\d{1,2}/\d{1,2} \d{1,2}:\d{2}:\d{2},[^,]*,)")
_PANOS_TOKEN_RE = re.compile(r'"((?:[^"]|"")*)"|\{([^}]*)\}|([^,]*)')
_SNIFF_RE = re.compile(r",(?:" + _TYPES + r"),")
# columns each type needs at least (up to the last field read unconditionally)
_MIN_COLUMNS = {
    "TRAFFIC": 31,
    "THREAT": 31,
    "SYSTEM": 15,
    "CONFIG": 14,
    "USERID": 18,
    "GLOBALPROTECT": 34,
    "AUTHENTICATION": 23,
}


def split_panos_csv(body: str) -> list[str]:
    """PAN-OS CSV: ``"quoted, values"`` (``""`` escapes) and ``{braced,values}``
    are one column each."""
    if '"' not in body and "{" not in body:
        return body.split(",")
    cols: list[str] = []
    pos, end = 0, len(body)
    while True:
        m = _PANOS_TOKEN_RE.match(body, pos)
        assert m is not None  # the last alternative matches the empty string
        quoted, braced, plain = m.groups()
        if quoted is not None:
            cols.append(quoted.replace('""', '"'))
        elif braced is not None:
            cols.append("{" + braced + "}")
        else:
            cols.append(plain)
        pos = m.end()
        if pos >= end:
            break
        if body[pos] != ",":
            # garbage after a closing quote/brace: keep it in this column
            nxt = body.find(",", pos)
            cols[-1] += body[pos : nxt if nxt >= 0 else end]
            if nxt < 0:
                break
            pos = nxt
        pos += 1
        if pos == end:
            cols.append("")
            break
    return cols


def _sniff_panos(line: str) -> bool:
    return _SNIFF_RE.search(line) is not None and _PANOS_START_RE.search(line) is not None


def _panos_time(value: str, ctx: ParseContext) -> str | None:
    value = value.strip()
    if not value or value.startswith("1970/01/01"):
        return None
    return parse_iso(value, ctx.timezone)


def _panos_port(value: str) -> int | None:
    """PAN-OS writes port 0 for "no port" (ICMP, NAT not applied)."""
    return to_port(value) or None


def _panos_nat_ip(value: str) -> str | None:
    ip = to_ip(value)
    return None if ip == "0.0.0.0" else ip


def _put_text(node: dict[str, Any], field: str, value: str) -> None:
    """``node[field] = value`` unless the value is an empty marker."""
    if value not in EMPTY:
        node[field] = value


def _col(c: list[str], i: int) -> str:
    return c[i] if i < len(c) else ""


def _device_name(c: list[str], flags_at: int) -> str | None:
    """Device Name sits six columns after Action Flags (four device-group
    levels and the virtual system name come between)."""
    return text(_col(c, flags_at + 6)) if flags_at >= 0 else None


def _user_and_address(ev: Event, user: str, ip: str) -> None:
    name = text(user)
    if name is not None:
        ev["user"] = {"name": name}
    addr = to_ip(ip)
    if addr is not None:
        node = section(ev, "source")
        node["ip"] = addr
        if name is not None:
            node["user"] = {"name": name}


# --- TRAFFIC and THREAT ------------------------------------------------------------------


def _traffic_threat(ev: Event, c: list[str], ctx: ParseContext) -> None:
    n = len(c)
    if n < 7:  # FUTURE_USE, receive time, serial, type, subtype, FUTURE_USE, generated
        raise ParseError(f"PAN-OS record has {n} columns; the common header alone has 7")
    log_type, subtype = c[3], c[4]
    event, observer = ev["event"], ev["observer"]
    action = c[30].lower() or None
    verdict = PANOS.get(action, UNKNOWN) if action else UNKNOWN
    if log_type == "TRAFFIC" and subtype in ("deny", "drop"):
        # the session was refused whatever the rule's action column says
        verdict, action = DENIED, subtype
    event["category"] = ["network"]
    event["outcome"] = verdict.outcome
    event["type"] = ["connection", verdict.type] if verdict.type else ["connection"]
    if action is not None:
        event["action"] = action
    _put_text(event, "id", c[22])
    ingress: dict[str, Any] = {}
    _put_text(ingress, "zone", c[16])
    if c[18] not in EMPTY:
        ingress["interface"] = {"name": c[18]}
    if ingress:
        observer["ingress"] = ingress
    egress: dict[str, Any] = {}
    _put_text(egress, "zone", c[17])
    if c[19] not in EMPTY:
        egress["interface"] = {"name": c[19]}
    if egress:
        observer["egress"] = egress

    source = endpoint(to_ip(c[7]), _panos_port(c[24]))
    nat = endpoint(_panos_nat_ip(c[9]), _panos_port(c[26]))
    if nat:
        source["nat"] = nat
    user = text(c[12])
    if user is not None:
        source["user"] = {"name": user}
        ev["user"] = {"name": user}
    destination = endpoint(to_ip(c[8]), _panos_port(c[25]))
    nat = endpoint(_panos_nat_ip(c[10]), _panos_port(c[27]))
    if nat:
        destination["nat"] = nat
    if c[13] not in EMPTY:
        destination["user"] = {"name": c[13]}
    network: dict[str, Any] = {}
    _put_text(network, "application", c[14])
    proto = transport(c[29])
    if proto is not None:
        network["transport"] = proto
    if c[11] not in EMPTY:
        ev["rule"] = {"name": c[11]}
    panw: dict[str, Any] = ev["panw"]

    if log_type == "TRAFFIC" and n > 37:
        if subtype == "end":
            event["type"].append("end")
        elif subtype == "start":
            event["type"].append("start")
        total, sent, received_bytes = to_int(c[31]), to_int(c[32]), to_int(c[33])
        if total is not None:
            network["bytes"] = total
        if sent is not None:
            source["bytes"] = sent
        if received_bytes is not None:
            destination["bytes"] = received_bytes
        packets = to_int(c[34])
        if packets is not None:
            network["packets"] = packets
        started = _panos_time(c[35], ctx)
        if started is not None:
            event["start"] = started
        elapsed = scaled(to_int(c[36]), 1_000_000_000)
        if elapsed is not None:
            event["duration"] = elapsed
        _put_text(panw, "url_category", c[37])
        if n > 46:
            _put_text(panw, "session_end_reason", c[46])
        if n > 52:
            _put_text(observer, "name", c[52])
    elif log_type == "THREAT" and n > 35:
        event["category"] = ["network", "intrusion_detection"] if subtype not in (
            "url", "file", "data"
        ) else ["network", "web"] if subtype == "url" else ["network", "file"]  # fmt: skip
        misc = text(c[31])
        if misc is not None:
            ev["threat"] = {"indicator": {"name": misc}}
        _put_text(panw, "threat_id", c[32])
        _put_text(panw, "url_category", c[33])
        _put_text(event, "severity_name", c[34])
        _put_text(network, "direction", c[35])
        if n > 59:
            _put_text(observer, "name", c[59])
        if n > 46 and c[46] not in EMPTY:
            ev["user_agent"] = {"original": c[46]}
        if n > 49 and c[49] not in EMPTY:
            ev["http"] = {"request": {"referrer": c[49]}}
        if subtype == "url" and misc:
            url = ev["url"] = url_object(misc)
            if "domain" in url:
                destination["domain"] = url["domain"]
        elif misc and subtype in ("file", "wildfire", "virus"):
            ev["file"] = {"name": misc}

    if source:
        ev["source"] = source
    if destination:
        ev["destination"] = destination
    if network:
        ev["network"] = network


# --- SYSTEM -----------------------------------------------------------------------------

# Descriptions name the user as "User name: x," (GlobalProtect), "for user 'x'"
# (authentication) or "User x logged in" (general); the client as "From: ip",
# "Login from: ip" or "from ip".
_SYSTEM_USER_RES = (
    re.compile(r"User name:\s*([^,\s]+)"),
    re.compile(r"\bfor user '([^']+)'"),
    re.compile(r"^User ([^\s']+) logged"),
)
_SYSTEM_FROM_RE = re.compile(r"\b[Ff]rom:?\s+'?([0-9A-Fa-f:]*[0-9A-Fa-f.]*[0-9A-Fa-f])")
_SYSTEM_EVENTS = {
    "auth-success": Verdict("success", "start"),
    "auth-fail": Verdict("failure", "start"),
    "globalprotectportal-auth-succ": Verdict("success", "start"),
    "globalprotectportal-auth-fail": Verdict("failure", "start"),
    "globalprotectgateway-auth-succ": Verdict("success", "start"),
    "globalprotectgateway-auth-fail": Verdict("failure", "start"),
    "globalprotectgateway-regist-succ": Verdict("success", "start"),
    "globalprotectgateway-regist-fail": Verdict("failure", "start"),
    "globalprotectgateway-logout-succ": Verdict("success", "end"),
    "globalprotectgateway-config-succ": Verdict("success", None),
    "globalprotectgateway-config-release": Verdict("success", "end"),
    "general": UNKNOWN,
}


def _system(ev: Event, c: list[str]) -> None:
    event = ev["event"]
    event_id = _col(c, 8)
    description = _col(c, 14)
    if event_id:
        event["action"] = event_id.lower()
        event["code"] = event_id
    auth = "auth" in event_id or c[4] in ("auth", "globalprotect")
    event["category"] = ["authentication"] if auth else ["host"]
    verdict = _SYSTEM_EVENTS.get(event_id.lower(), UNKNOWN)
    if verdict is UNKNOWN and description.lower().startswith("user") and "logged in" in description:
        verdict = Verdict("success", "start")  # "User admin logged in via Web from ..."
    apply(event, verdict, None if verdict.type else "info")
    _put_text(ev["observer"], "name", _col(c, 22))
    severity = _col(c, 13)
    if severity:
        ev["log"] = {"level": severity}
    if description:
        ev["message"] = description
        user = ""
        for rx in _SYSTEM_USER_RES:
            found = rx.search(description)
            if found is not None:
                user = found.group(1)
                break
        ip = _SYSTEM_FROM_RE.search(description)
        _user_and_address(ev, user, ip.group(1) if ip else "")
    module = text(_col(c, 12))
    if module is not None:
        ev["panw"]["module"] = module
    obj = text(_col(c, 9))
    if obj is not None:
        ev["panw"]["object"] = obj


# --- CONFIG -----------------------------------------------------------------------------

_CONFIG_TYPES = {"add": "creation", "clone": "creation", "delete": "deletion"}
_CONFIG_RESULTS = {
    "succeeded": "success",
    "submitted": "success",
    "failed": "failure",
    "unauthorized": "failure",
}


def _flags_at(c: list[str], start: int) -> int:
    """Index of the Action Flags column (``0x...``) at or after ``start``."""
    for i in range(start, min(len(c), start + 6)):
        if c[i].startswith("0x"):
            return i
    return -1


def _config(ev: Event, c: list[str]) -> None:
    event = ev["event"]
    command = _col(c, 9).lower()
    result = _col(c, 12)
    event["category"] = ["configuration"]
    event["type"] = [_CONFIG_TYPES.get(command, "change")]
    event["outcome"] = _CONFIG_RESULTS.get(result.lower(), "unknown")
    if command:
        event["action"] = command
    admin = text(_col(c, 10))
    if admin is not None:
        ev["user"] = {"name": admin}
    host = text(_col(c, 7))
    if host is not None:
        ip = to_ip(host)
        ev["source"] = {"ip": ip} if ip else {"address": host}
    panw = ev["panw"]
    for field, i in (("client", 11), ("result", 12), ("path", 13)):
        _put_text(panw, field, _col(c, i))
    flags = _flags_at(c, 14)
    if flags == 17:  # the Before/After Change Detail columns are there
        _put_text(panw, "before_change", _col(c, 14))
        _put_text(panw, "after_change", _col(c, 15))
    name = _device_name(c, flags)
    if name is not None:
        ev["observer"]["name"] = name


# --- USERID -----------------------------------------------------------------------------


def _userid(ev: Event, c: list[str]) -> None:
    event = ev["event"]
    subtype = c[4]
    event["category"] = ["authentication"] if subtype in ("login", "logout") else ["iam"]
    event["outcome"] = "success"
    event["type"] = ["start" if subtype == "login" else "end" if subtype == "logout" else "info"]
    event["action"] = subtype
    _user_and_address(ev, _col(c, 9), _col(c, 8))
    port = _panos_port(_col(c, 14))
    if port is not None and "source" in ev:
        ev["source"]["port"] = port
    panw = ev["panw"]
    for field, i in (("data_source_name", 10), ("data_source", 16), ("data_source_type", 17)):
        _put_text(panw, field, _col(c, i))
    name = _device_name(c, _flags_at(c, 19))
    if name is not None:
        ev["observer"]["name"] = name


# --- GLOBALPROTECT ------------------------------------------------------------------------

_GP_STATUS = {"success": "success", "failure": "failure"}


def _globalprotect(ev: Event, c: list[str]) -> None:
    event = ev["event"]
    event_id, stage = _col(c, 8), _col(c, 9)
    event["action"] = event_id or stage
    auth = "auth" in event_id or stage in ("login", "before-login")
    event["category"] = ["authentication", "network"] if auth else ["network", "session"]
    event["outcome"] = _GP_STATUS.get(_col(c, 28).lower(), "unknown")
    kind = "end" if "logout" in event_id or stage == "logout" else "start"
    event["type"] = [kind] if event["outcome"] != "failure" else [kind, "denied"]
    _user_and_address(ev, _col(c, 12), _col(c, 15))
    private = to_ip(_col(c, 17))
    machine = text(_col(c, 14))
    if machine is not None:
        ev["host"] = {"name": machine}
    gp: dict[str, Any] = {}
    if private is not None:
        gp["private_ip"] = private
    for field, i in (
        ("stage", 9),
        ("auth_method", 10),
        ("tunnel_type", 11),
        ("client_version", 21),
        ("client_os", 22),
        ("portal", 33),
        ("gateway", 41),
        ("location", 29),
    ):
        _put_text(gp, field, _col(c, i))
    reason = text(_col(c, 26)) or text(_col(c, 25))
    if reason is not None:
        event["reason"] = reason
    description = text(_col(c, 27))
    if description is not None:
        ev["message"] = description
    duration = to_int(_col(c, 30))
    if duration and kind == "end":
        nanos = scaled(duration, 1_000_000_000)
        if nanos is not None:
            event["duration"] = nanos
    if gp:
        ev["panw"]["globalprotect"] = gp
    _put_text(ev["observer"], "name", _col(c, 47))


# --- AUTHENTICATION --------------------------------------------------------------------------

_AUTH_EVENTS = {
    "auth-success": Verdict("success", "start"),
    "auth-fail": Verdict("failure", "start"),
    "auth-challenge": Verdict("unknown", "info"),
}


def _authentication(ev: Event, c: list[str]) -> None:
    event = ev["event"]
    kind = _col(c, 20).lower()
    event["category"] = ["authentication"]
    event["action"] = kind or "authentication"
    apply(event, _AUTH_EVENTS.get(kind, UNKNOWN), None)
    if "type" not in event:
        event["type"] = ["info"]
    _user_and_address(ev, _col(c, 10) or _col(c, 9), _col(c, 8))
    panw = ev["panw"]
    for field, i in (("auth_policy", 12), ("vendor", 15), ("server_profile", 17)):
        _put_text(panw, field, _col(c, i))
    description = text(_col(c, 18))
    if description is not None:
        ev["message"] = description
    _put_text(ev["observer"], "name", _col(c, 29))


_HANDLERS = {
    "SYSTEM": _system,
    "CONFIG": _config,
    "USERID": _userid,
    "GLOBALPROTECT": _globalprotect,
    "AUTHENTICATION": _authentication,
}


@register("firewall", "panos", sniff=_sniff_panos)
def parse_panos(raw: str, ctx: ParseContext) -> list[Event]:
    """Palo Alto Networks PAN-OS syslog CSV: TRAFFIC, THREAT, SYSTEM, CONFIG,
    USERID, GLOBALPROTECT, AUTHENTICATION (other types keep the common header
    fields). Times are in the firewall's zone (``ctx.timezone``)."""
    m = _PANOS_START_RE.search(raw)
    if m is None:
        raise ParseError("no PAN-OS CSV header (FUTURE_USE,receive time,serial,type,...)")
    prefix = raw[: m.start(1)].split()
    c = split_panos_csv(raw[m.start(1) :])
    n = len(c)
    if n < 7:  # FUTURE_USE, receive time, serial, type, subtype, FUTURE_USE, generated
        raise ParseError(f"PAN-OS record has {n} columns; the common header alone has 7")
    log_type, subtype = c[3], c[4]
    need = _MIN_COLUMNS.get(log_type, 7)
    if n < need:
        raise ParseError(
            f"PAN-OS {log_type} record has {n} columns; the format has at least {need}"
        )
    generated, received = _panos_time(c[6], ctx), _panos_time(c[1], ctx)
    stamp = generated or received
    if stamp is None:
        raise ParseError("PAN-OS record has no generated or receive time")
    ev = new_event(raw, ctx.source, ctx.format, "Palo Alto Networks", "PAN-OS", stamp)
    event = ev["event"]
    if received is not None:
        event["created"] = received
    if subtype and log_type in ("TRAFFIC", "THREAT"):
        event["code"] = subtype
    observer = ev["observer"]
    observer["type"] = "firewall"
    _put_text(observer, "serial_number", c[2])
    if prefix:
        observer["hostname"] = prefix[-1]
    ev["panw"] = {"type": log_type, "subtype": subtype}
    if log_type in ("TRAFFIC", "THREAT"):
        _traffic_threat(ev, c, ctx)
        return [ev]
    handler = _HANDLERS.get(log_type)
    if handler is not None:
        handler(ev, c)
    else:
        event["category"] = ["network"]
        event["outcome"] = "unknown"
        event["type"] = ["info"]
    if log_type in ("SYSTEM", "CONFIG", "USERID", "GLOBALPROTECT", "AUTHENTICATION"):
        _put_text(ev["panw"], "vsys", _col(c, 7 if log_type != "CONFIG" else 8))
    return [ev]
