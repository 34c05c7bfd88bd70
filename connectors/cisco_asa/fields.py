"""Cisco ASA/FTD syslog: the syslog header, address patterns, and the ECS setters
every message handler uses.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, tzinfo
from functools import lru_cache
from typing import Any

from connectors.ecs import (
    EMPTY,
    Event,
    scaled,
    section,
    to_ip,
    to_port,
    transport,
)
from connectors.outcomes import ALLOWED, DENIED, Verdict
from connectors.timeparse import parse_iso, parse_monthname

_ASA_TAG_RE = re.compile(r"%(ASA|FTD|FWSM|PIX)-(?:([a-z]+)-)?([0-7])-(\d{6}):\s*")
_ASA_TS_RE = re.compile(
    r"(?:[A-Z][a-z]{2}\s+\d{1,2}(?:\s+\d{4})?\s+\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?"
    r"(?:\s+[A-Z]{2,5}(?=[\s:])|\s+[+-]\d{2}:?\d{2})?)"
    r"|(?:\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:?\d{2})?)"
)
_SEVERITY_NAMES = ("emergency", "alert", "critical", "error", "warning", "notice", "informational",
                   "debug")  # fmt: skip

# building blocks: an interface name, an address (IPv4, IPv6 or an object
# name), a port, and a "(user)" / "(user, sgt)" annotation
_IF = r"([^\s:]+)"
_AD = r"([^\s/()]+)"
_PT = r"(?:/(\d+))?"
_US = r"(?:\(([^()]*)\))?"
_EP = _IF + ":" + _AD + _PT + _US  # iface:addr/port(user): 4 groups

# FTD AccessControlRuleAction and InlineResult words
_FTD_ACTIONS = {
    "allow": ALLOWED,
    "trust": ALLOWED,
    "fastpath": ALLOWED,
    "monitor": ALLOWED,
    "analyze": ALLOWED,
    "block": DENIED,
    "block with reset": DENIED,
    "interactive block": DENIED,
    "interactive block with reset": DENIED,
    "blocked": DENIED,
    "would have blocked": ALLOWED,
    "dropped": DENIED,
    "would have dropped": ALLOWED,
}
_FTD_KV_RE = re.compile(r"(?:^|,\s*)([A-Za-z][A-Za-z0-9_ ]*?):\s")


def _sniff_asa(line: str) -> bool:
    return _ASA_TAG_RE.search(line) is not None


def _asa_host(prefix: str) -> str | None:
    """The word after the first timestamp (syslog relay or ``logging
    device-id``), if it looks like a host name."""
    head = prefix.split(" : ", 1)[0]
    m = _ASA_TS_RE.search(head)
    if m is None:
        return None
    word = head[m.end() :].strip(" :")
    if not word or " " in word or "<" in word:
        return None
    return word


@lru_cache(maxsize=4096)
def _asa_head(prefix: str, tz: tzinfo, today: date) -> tuple[str | None, str | None]:
    """(UTC time, device host) of the text before the tag; lines of one second
    share it, so this is mostly a cache hit."""
    stamps = _ASA_TS_RE.findall(prefix)
    stamp = None
    if stamps:
        ts = stamps[-1]
        stamp = parse_iso(ts, tz) if ts[0].isdigit() else parse_monthname(ts, tz, today)
    return stamp, _asa_host(prefix)


def _user(value: str | None) -> str | None:
    """A user annotation: ``LOCAL\\name`` -> ``name``; a bare SGT number or the
    masked ``*****`` is no user."""
    if not value:
        return None
    name = value.split(",", 1)[0].strip()
    if name.startswith("LOCAL\\"):
        name = name[6:]
    if not name or name.isdigit() or name == "*****" or name in EMPTY:
        return None
    return name


def _end(ev: Event, side: str, addr: str | None, port: str | None = None) -> None:
    """``source``/``destination``: ``ip`` for an address, ``address`` for an object name."""
    node = ev.get(side)
    if node is None:
        node = ev[side] = {}
    if addr and addr not in EMPTY:
        ip = to_ip(addr)
        if ip is not None:
            node["ip"] = ip
        else:
            node["address"] = addr
    if port:
        p = to_port(port)
        if p is not None:
            node["port"] = p
    if not node:
        del ev[side]


def _nat(ev: Event, side: str, addr: str | None, port: str | None, real: str, rport: str) -> None:
    """The translated side of an ``ip/port (mapped_ip/mapped_port)`` pair, when
    it differs from the real one."""
    nat: dict[str, Any] = {}
    if addr and addr != real:
        ip = to_ip(addr)
        if ip is not None:
            nat["ip"] = ip
    if port and port != rport:
        p = to_port(port)
        if p is not None:
            nat["port"] = p
    if nat:
        node = ev.get(side)
        if node is None:
            ev[side] = {"nat": nat}
        else:
            node["nat"] = nat


def _ifaces(ev: Event, ingress: str | None, egress: str | None = None) -> None:
    observer = ev["observer"]
    if ingress:
        observer["ingress"] = {"interface": {"name": ingress}}
    if egress:
        observer["egress"] = {"interface": {"name": egress}}


def _set_user(ev: Event, name: str | None, side: str = "source") -> None:
    """``user.name`` and ``<side>.user.name``: the account behind the connection."""
    if name:
        if "user" not in ev:
            ev["user"] = {"name": name}
        section(ev, side)["user"] = {"name": name}


def _proto(ev: Event, name: str | None) -> None:
    if not name:
        return
    if name.startswith("protocol "):
        name = name[9:]
    proto = transport(name)
    if proto is not None:
        network = ev.get("network")
        if network is None:
            ev["network"] = {"transport": proto}
        else:
            network["transport"] = proto


def _decision(ev: Event, action: str, verdict: Verdict) -> None:
    event = ev["event"]
    event["action"] = action
    event["category"] = ["network"]
    event["outcome"] = verdict.outcome
    event["type"] = ["connection", verdict.type] if verdict.type else ["connection"]


def _auth(ev: Event, action: str, ok: bool | None, kind: str = "start") -> None:
    event = ev["event"]
    event["action"] = action
    event["category"] = ["authentication"]
    event["outcome"] = "unknown" if ok is None else ("success" if ok else "failure")
    event["type"] = [kind] if ok is not False else [kind, "denied"]


def _session(ev: Event, action: str, kind: str) -> None:
    event = ev["event"]
    event["action"] = action
    event["category"] = ["network", "session"]
    event["outcome"] = "success"
    event["type"] = [kind]


def _config(ev: Event, action: str, kind: str = "change", category: str = "configuration") -> None:
    event = ev["event"]
    event["action"] = action
    event["category"] = [category]
    event["outcome"] = "success"
    event["type"] = [kind]


def _cisco(ev: Event) -> dict[str, Any]:
    return section(section(ev, "cisco"), "asa")


def _duration(ev: Event, h: str, m: str, s: str) -> None:
    if len(h) > 12:  # hours beyond any clock: no duration rather than a wrong one
        return
    value = scaled(int(h) * 3600 + int(m) * 60 + int(s), 1_000_000_000)
    if value is not None:
        ev["event"]["duration"] = value


Handler = Callable[[tuple[Any, ...], Event], None]
