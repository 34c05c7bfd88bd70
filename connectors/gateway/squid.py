"""``gateway/squid``: Squid access.log in the native, common and combined logformats."""

from __future__ import annotations

import re
from typing import Any

from connectors.base import ParseContext, register
from connectors.ecs import (
    EMPTY,
    Event,
    new_event,
    scaled,
    to_int,
    to_ip,
    to_port,
    url_object,
)
from connectors.gateway.decision import _decide_web
from connectors.outcomes import (
    SQUID_DENIED,
)
from connectors.timeparse import (
    parse_clf,
    parse_epoch,
)
from zonewatch.errors import ParseError

# --- Squid access.log: native, common and combined logformats --------------

# native "squid": %ts.%03tu %6tr %>a %Ss/%03>Hs %<st %rm %ru %[un %Sh/%<a %mt,
# maybe behind a syslog header (access_log syslog:...)
_SQUID_START_RE = re.compile(r"(?:^|\s)(\d{9,11}\.\d{3}\s+-?\d+\s)")
# "common" / "combined": %>a %[ui %[un [%tl] "%rm %ru HTTP/%rv" %>Hs %<st
# ["%{Referer}>h" "%{User-Agent}>h"] %Ss:%Sh
_SQUID_CLF_RE = re.compile(
    r'(\S+) (\S+) (\S+) \[([^\]]+)\] "(\S+) (\S+)(?: [^"]*)?" (\d{1,3}) (\d+|-)'
    r'(?: "((?:[^"\\]|\\.)*)" "((?:[^"\\]|\\.)*)")? ([A-Z_]+):([A-Z_]+)\s*'
)
_PCT_RE = re.compile(r"%([0-9A-Fa-f]{2})")


_SQUID_CODE_RE = re.compile(r"\s[A-Z_]+/\d{3}\s")


def _sniff_squid(line: str) -> bool:
    if _SQUID_START_RE.search(line) is not None:
        return _SQUID_CODE_RE.search(line) is not None
    return '] "' in line and _SQUID_CLF_RE.search(line) is not None


def _squid_user(value: str) -> str | None:
    """The user field is URL-encoded by Squid (``tanaka%40city.example``)."""
    if value in EMPTY:
        return None
    if "%" in value:
        value = _PCT_RE.sub(lambda m: chr(int(m.group(1), 16)), value)
    return value


def _squid_event(
    raw: str,
    ctx: ParseContext,
    stamp: str,
    client: str,
    result: str,
    status: int | None,
    size: str,
    method: str,
    link: str,
    user: str,
) -> Event:
    """The fields every Squid logformat shares."""
    ev = new_event(raw, ctx.source, ctx.format, "Squid", "Squid", stamp)
    _decide_web(ev["event"], result.endswith("DENIED") or result in SQUID_DENIED)
    connect = method == "CONNECT"
    url = ev["url"] = url_object(link, "https" if connect else None)
    if connect:  # "host:443" is an authority, not a URL to visit
        url.pop("full", None)
        url.pop("scheme", None)
    ip = to_ip(client)
    source: dict[str, Any] = {"address": client}
    if ip is not None:
        source["ip"] = ip
    elif client not in EMPTY:
        source["domain"] = client
    ev["source"] = source
    destination: dict[str, Any] = {}
    if "domain" in url:
        destination["domain"] = url["domain"]
    if url.get("port") is not None:
        destination["port"] = url["port"]
    sent = to_int(size)
    if sent is not None:
        destination["bytes"] = sent
    if destination:
        ev["destination"] = destination
    if user not in EMPTY:
        ev["user"] = {"name": _squid_user(user) if "%" in user else user}
    http: dict[str, Any] = {}
    if method not in EMPTY:
        http["request"] = {"method": method}
    if status:
        http["response"] = {"status_code": status}
    if http:
        ev["http"] = http
    ev["squid"] = {"result_code": result}
    return ev


def _squid_common(m: re.Match[str], raw: str, ctx: ParseContext) -> list[Event]:
    client, _ident, user, when, method, link, status_s, size, referer, agent, code, hier = (
        m.groups()
    )
    stamp = parse_clf(when, ctx.timezone)
    ev = _squid_event(raw, ctx, stamp, client, code, to_int(status_s), size, method, link, user)
    ev["squid"]["hierarchy_code"] = hier
    if referer not in (None, "", "-"):
        ev.setdefault("http", {}).setdefault("request", {})["referrer"] = referer
    if agent not in (None, "", "-"):
        ev["user_agent"] = {"original": agent}
    return [ev]


@register("gateway", "squid", sniff=_sniff_squid)
def parse_squid(raw: str, ctx: ParseContext) -> list[Event]:
    """Squid ``access.log`` in the native ``squid`` logformat (also behind a
    syslog header, and the extended layout that adds the client port and
    header sizes), or in the built-in ``common`` and ``combined`` formats."""
    if raw[:1].isdigit() and raw[9:14].find(".") >= 0:
        f = raw.split()  # native, the common case: the line opens with %ts.%03tu
    else:
        start = _SQUID_START_RE.search(raw)
        if start is None:
            m = _SQUID_CLF_RE.match(raw) or _SQUID_CLF_RE.search(raw)
            if m is not None:
                return _squid_common(m, raw, ctx)
            raise ParseError("not a Squid access.log line (native, common or combined logformat)")
        f = raw[start.start(1) :].split()
    if len(f) >= 10 and "/" in f[3]:
        ts, elapsed, client, code_status, size, method, link, user, hier, mime = f[:10]
        cport = None
        sport = None
    elif len(f) >= 17 and f[3].isdigit() and "/" in f[4]:
        ts, elapsed, client, cport, code_status, size = f[:6]
        method, link, user, hier, sport, mime = f[10], f[11], f[13], f[14], f[15], f[16]
    else:
        raise ParseError("not a Squid access.log line (expected 10 space-separated fields)")
    result, _, status_s = code_status.partition("/")
    status = to_int(status_s)
    if status is None or not result.replace("_", "").isalpha():
        raise ParseError(f"bad Squid result code {code_status[:40]!r}")
    hier_code, _, peer = hier.partition("/")
    ev = _squid_event(raw, ctx, parse_epoch(ts), client, result, status, size, method, link, user)
    duration = scaled(to_int(elapsed), 1_000_000)
    if duration is not None:
        ev["event"]["duration"] = duration
    port = to_port(cport)
    if port is not None:
        ev["source"]["port"] = port
    destination: dict[str, Any] = ev.get("destination") or {}
    peer_ip = to_ip(peer)
    if peer_ip is not None:
        destination["ip"] = peer_ip
    port = to_port(sport)
    if port:
        destination["port"] = port
    if destination:
        ev["destination"] = destination
    if mime not in EMPTY:
        ev.setdefault("http", {}).setdefault("response", {})["mime_type"] = mime
    if hier_code:
        ev["squid"]["hierarchy_code"] = hier_code
    return [ev]
