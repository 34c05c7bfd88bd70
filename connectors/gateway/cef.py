"""CEF (ArcSight Common Event Format) header and extensions -> ECS, for
``firewall/cef`` (registered in connectors/firewall.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from connectors.base import ParseContext, register
from connectors.ecs import (
    Event,
    new_event,
    put_path,
    section,
    text,
    to_int,
    to_ip,
    to_port,
    transport,
    url_object,
)
from connectors.outcomes import (
    CEF_GENERIC,
    CEF_OUTCOME,
    CEF_VENDORS,
    UNKNOWN,
    apply,
    lookup,
)
from connectors.timeparse import (
    now_stamp,
    parse_syslog,
    parse_timestamp,
)
from zonewatch.errors import ParseError

# --- CEF --------------------------------------------------------------------

_CEF_HEADER_RE = re.compile(
    r"CEF:(\d+)\|((?:[^|\\]|\\.)*)\|((?:[^|\\]|\\.)*)\|((?:[^|\\]|\\.)*)\|"
    r"((?:[^|\\]|\\.)*)\|((?:[^|\\]|\\.)*)\|((?:[^|\\]|\\.)*)\|(.*)",
    re.S,
)
# a key starts after whitespace; values run to the next " key=". Matching the
# whitespace itself (not a look-behind) lets the regex engine skip ahead to
# the next blank: twice as fast; the value loses only a blank it would shed.
_CEF_KEY_RE = re.compile(r"\s([A-Za-z0-9_.\[\]-]+)=")
_CEF_UNESCAPE_RE = re.compile(r"\\(.)")
_CEF_ESCAPES = {"n": "\n", "r": "\r", "t": "\t"}


def _lower(value: str) -> str | None:
    return value.lower() or None


# ArcSight extension keys -> (ECS field, converter); the subset that drives detection
_CEF_FIELDS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "src": ("source.ip", to_ip),
    "spt": ("source.port", to_port),
    "shost": ("source.domain", text),
    "smac": ("source.mac", text),
    "suser": ("source.user.name", text),
    "sourceTranslatedAddress": ("source.nat.ip", to_ip),
    "sourceTranslatedPort": ("source.nat.port", to_port),
    "dst": ("destination.ip", to_ip),
    "dpt": ("destination.port", to_port),
    "dhost": ("destination.domain", text),
    "dmac": ("destination.mac", text),
    "duser": ("destination.user.name", text),
    "destinationTranslatedAddress": ("destination.nat.ip", to_ip),
    "destinationTranslatedPort": ("destination.nat.port", to_port),
    "in": ("source.bytes", to_int),
    "out": ("destination.bytes", to_int),
    "proto": ("network.transport", transport),
    "app": ("network.protocol", _lower),
    "requestMethod": ("http.request.method", text),
    "requestClientApplication": ("user_agent.original", text),
    "requestContext": ("http.request.referrer", text),
    "act": ("event.action", _lower),
    "outcome": ("cef.outcome", text),
    "reason": ("event.reason", text),
    "cat": ("cef.category", text),
    "externalId": ("event.id", text),
    "msg": ("message", text),
    "dvc": ("observer.ip", to_ip),
    "dvchost": ("observer.hostname", text),
    "deviceExternalId": ("observer.serial_number", text),
    "deviceInboundInterface": ("observer.ingress.interface.name", text),
    "deviceOutboundInterface": ("observer.egress.interface.name", text),
    "fname": ("file.name", text),
    "filePath": ("file.path", text),
    "fileHash": ("file.hash", text),
    "fsize": ("file.size", to_int),
}
_CEF_MAP = {key: (tuple(field.split(".")), conv) for key, (field, conv) in _CEF_FIELDS.items()}


def _cef_unescape(value: str) -> str:
    if "\\" not in value:
        return value
    return _CEF_UNESCAPE_RE.sub(lambda m: _CEF_ESCAPES.get(m.group(1), m.group(1)), value)


def cef_extensions(ext: str) -> dict[str, str]:
    """CEF extension ``k=v k2=v with spaces`` -> dict (values unescaped).

    A key is a word right after whitespace and before ``=``; keys never hold
    a backslash, so an escaped ``\\=`` inside a value can never end one.
    """
    # split -> [text before the first key, key, value, key, value, ...]
    parts = _CEF_KEY_RE.split(" " + ext)
    if "\\" not in ext:
        return {key: value.rstrip() for key, value in zip(parts[1::2], parts[2::2], strict=True)}
    return {
        key: _cef_unescape(value.rstrip())
        for key, value in zip(parts[1::2], parts[2::2], strict=True)
    }


def cef_header(raw: str, start: int) -> tuple[str, ...] | None:
    """The 7 header fields after ``CEF:`` at ``start`` and the extension text;
    None when the header is incomplete. Fields may hold ``\\|``."""
    parts = raw[start + 4 :].split("|", 7)
    if len(parts) == 8 and "\\" not in raw[start : len(raw) - len(parts[7])]:
        # no escapes in the header: the plain split is the answer
        return tuple(parts) if parts[0].isdecimal() else None
    m = _CEF_HEADER_RE.match(raw, start)
    return None if m is None else m.groups()


def _cef_outcome(event: dict[str, Any], vendor: str, fields: dict[str, str]) -> None:
    """Outcome and type from ``act`` through the device vendor's vocabulary
    (Palo Alto's ``block-url``, Check Point's ``Drop``, Fortinet's ``close``),
    then the generic CEF words; else from the ``outcome`` field; else unknown.
    ``event.action`` keeps the device's word either way."""
    act = event.get("action")
    verdict = UNKNOWN
    if act:
        table = CEF_VENDORS.get(vendor.lower())
        if table is not None:
            verdict = lookup(table, act)
        if verdict is UNKNOWN:
            verdict = lookup(CEF_GENERIC, act)
    if verdict is UNKNOWN and fields.get("outcome"):
        verdict = lookup(CEF_OUTCOME, fields["outcome"])
    apply(event, verdict)


def sniff_cef(line: str) -> bool:
    return "CEF:" in line[:200] and line.count("|") >= 7


def parse_cef(raw: str, ctx: ParseContext) -> list[Event]:
    """ArcSight Common Event Format, bare or behind a syslog header."""
    start = raw.find("CEF:")
    if start < 0:
        raise ParseError("no 'CEF:' marker")
    header = cef_header(raw, start)
    if header is None:
        raise ParseError("CEF header needs 7 '|'-separated fields after 'CEF:'")
    version, vendor, product, dev_version, sig_id, name, severity, ext = header
    fields = cef_extensions(ext)

    stamp = None
    for key in ("rt", "end", "start"):
        value = fields.get(key)
        if value:
            stamp = parse_timestamp(value, ctx.timezone, ctx.now)
            break
    if stamp is None and start > 0:
        try:
            stamp = parse_syslog(raw[:start].rstrip() + " x", ctx.timezone, ctx.now).timestamp
        except ParseError:
            stamp = None
    ev = new_event(
        raw,
        ctx.source,
        ctx.format,
        _cef_unescape(vendor),
        _cef_unescape(product),
        stamp or now_stamp(ctx.now),
    )
    event = ev["event"]
    event["category"] = ["network", "web"] if ctx.source == "gateway" else ["network"]
    code = _cef_unescape(sig_id)
    if code:
        event["code"] = code
    dev_version = _cef_unescape(dev_version)
    if dev_version:
        ev["observer"]["version"] = dev_version
    ev["cef"] = {"version": version, "name": _cef_unescape(name), "severity": severity}

    for key, value in fields.items():
        target = _CEF_MAP.get(key)
        if target is not None:
            conv = target[1](value)
            if conv is not None:
                put_path(ev, target[0], conv)
    request = fields.get("request")
    if request:
        url = ev["url"] = url_object(request)
        if "domain" in url and not ev.get("destination", {}).get("domain"):
            section(ev, "destination")["domain"] = url["domain"]
    source, destination = ev.get("source", {}), ev.get("destination", {})
    user = source.get("user", {}).get("name") or destination.get("user", {}).get("name")
    if user:
        ev["user"] = {"name": user}

    _cef_outcome(event, _cef_unescape(vendor), fields)
    if fields:
        ev["cef"]["extensions"] = fields
    return [ev]


register("gateway", "cef", sniff=sniff_cef)(parse_cef)
# the firewall source registers the same reader in connectors/firewall.py
