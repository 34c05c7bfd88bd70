"""``vdi/citrix-adc``: Citrix ADC / Gateway syslog (ICASTART, ICAEND_CONNSTAT, LOGIN, LOGOUT)."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from connectors.base import ParseContext, register
from connectors.ecs import scaled, to_int
from connectors.jsonrecords import slug
from connectors.vdi.common import SOURCE, _base, _put, _set_action, _split_hostport, parse_iso
from zonewatch.errors import ParseError

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
    body = message.strip()
    if body[:1] == "[":  # the only way the prefixes can start
        body = _ADC_PREFIX_RE.sub("", body)
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
    h, m, s = map(int, parts)
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
    _set_action(ev, _ADC_ACTIONS.get(name) or slug(name))  # slug only when not mapped
    ev["event"]["id"] = m["id"]
    severity = to_int(m["sev"])
    if severity is not None:
        ev["event"]["severity"] = severity
    if m["tz"]:
        ev["event"]["timezone"] = m["tz"]
    observer = ev["observer"]
    observer["hostname"] = m["host"]
    observer["type"] = "firewall"
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
