"""Cisco ASA and Firepower Threat Defense (FTD) syslog -> ECS.

Message formats follow the Cisco Secure Firewall ASA Series Syslog Messages
guide and the FTD syslog reference; ``_MESSAGES`` maps each message ID to its
pattern and handler (the catalogue in connectors/COVERAGE.md lists them).
What the IDs cover:

* traffic decisions and connections: ACL denies and permits (106001-106103,
  710002/710003/710005, 313001/313004, 338xxx dynamic filter), connection
  build and teardown (302013-302021), NAT (305011/305012);
* FTD security events (430001-430005, ``Key: value, ...`` lists);
* authentication: AAA (113004/113005/113008/113012/113015), management
  logins (605004/605005, 611101/611102/611103, 113021), WebVPN and
  AnyConnect (716001/716002/716039/716058/716059, 113039, 113019, 722022/
  722023/722028/722037/722051), SSL sessions (725001/725002/725007);
* administrator changes: commands (111008/111009/111010), configuration
  sessions (111001/111004/111007), local users and privileges (502101/
  502102/502103).

Addresses may be object names instead of IP addresses (``dst FE_xUI:
Server_Windows/15000`` when ``names`` or object-group logging is on): a name
goes to ``<side>.address`` and the event still has its ports, interfaces and
decision. An unknown message ID is still an event (code, severity, time,
message) with ``event.outcome: unknown``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, tzinfo
from functools import lru_cache
from typing import Any

from connectors.base import ParseContext, register
from connectors.ecs import (
    EMPTY,
    Event,
    new_event,
    scaled,
    section,
    to_int,
    to_ip,
    to_port,
    transport,
)
from connectors.outcomes import ALLOWED, DENIED, UNKNOWN, Verdict, apply
from connectors.timeparse import now_stamp, parse_iso, parse_monthname
from zonewatch.errors import ParseError

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


# --- traffic decisions -------------------------------------------------------------


def _deny_ports(g: tuple[Any, ...], ev: Event) -> None:
    # proto, src, sport, dst, dport, iface
    _decision(ev, "deny", DENIED)
    _proto(ev, g[0])
    _end(ev, "source", g[1], g[2])
    _end(ev, "destination", g[3], g[4])
    _ifaces(ev, g[5] if len(g) > 5 else None)


def _ep(addr: str | None, port: str | None) -> dict[str, Any]:
    """An endpoint from a catalogued pattern's address and port groups (the
    hot path of the traffic messages: one call per side)."""
    node: dict[str, Any] = {}
    if addr:
        ip = to_ip(addr)
        if ip is not None:
            node["ip"] = ip
        elif addr not in EMPTY:
            node["address"] = addr
    if port and len(port) <= 5:  # the patterns match digits only
        number = int(port)
        if number <= 65535:
            node["port"] = number
    return node


def _traffic(
    ev: Event,
    action: str,
    verdict: Verdict,
    proto: str | None,
    source: dict[str, Any],
    destination: dict[str, Any],
    ingress: str | None,
    egress: str | None,
) -> None:
    """The fields every connection message sets, in one place."""
    event = ev["event"]
    event["action"] = action
    event["category"] = ["network"]
    event["outcome"] = verdict.outcome
    event["type"] = ["connection", verdict.type] if verdict.type else ["connection"]
    if source:
        ev["source"] = source
    if destination:
        ev["destination"] = destination
    if proto:
        _proto(ev, proto)
    observer = ev["observer"]
    if ingress:
        observer["ingress"] = {"interface": {"name": ingress}}
    if egress:
        observer["egress"] = {"interface": {"name": egress}}


def _deny_src_dst(g: tuple[Any, ...], ev: Event) -> None:
    # proto, src iface, addr, port, user, dst iface, addr, port, user[, acl]
    _traffic(ev, "deny", DENIED, g[0], _ep(g[2], g[3]), _ep(g[6], g[7]), g[1], g[5])
    if g[4]:
        _set_user(ev, _user(g[4]))
    if g[8]:
        _set_user(ev, _user(g[8]), "destination")
    if len(g) > 9 and g[9]:
        ev["rule"] = {"name": g[9]}


def _deny_ip_pair(g: tuple[Any, ...], ev: Event) -> None:
    # src, dst[, iface]
    _decision(ev, "deny", DENIED)
    _end(ev, "source", g[0])
    _end(ev, "destination", g[1])
    _ifaces(ev, g[2] if len(g) > 2 else None)


def _acl_log(g: tuple[Any, ...], ev: Event) -> None:
    # acl, word, [user], proto, src iface, src, sport, suser, dst iface, dst, dport, duser
    user = g[2]
    if g[1] == "denied":
        _traffic(ev, "deny", DENIED, g[3], _ep(g[5], g[6]), _ep(g[9], g[10]), g[4], g[8])
    else:
        _traffic(ev, "allow", ALLOWED, g[3], _ep(g[5], g[6]), _ep(g[9], g[10]), g[4], g[8])
    ev["rule"] = {"name": g[0]}
    if user or g[7]:
        _set_user(ev, user or _user(g[7]))
    if g[11]:
        _set_user(ev, _user(g[11]), "destination")


def _deny_proto_pair(g: tuple[Any, ...], ev: Event) -> None:
    # proto (empty: ICMP echo), src, dst[, iface]
    _deny_ip_pair(g[1:], ev)
    _proto(ev, g[0] or "icmp")


def _deny_ip_options(g: tuple[Any, ...], ev: Event) -> None:
    _deny_ip_pair(g[:2], ev)
    ev["event"]["reason"] = g[2]


def _no_route(g: tuple[Any, ...], ev: Event) -> None:
    # reason, proto, iface, src, sport, dst, dport
    _decision(ev, "deny", DENIED)
    ev["event"]["reason"] = g[0]
    _proto(ev, g[1])
    _end(ev, "source", g[3], g[4])
    _end(ev, "destination", g[5], g[6])
    _ifaces(ev, g[2])


def _mgmt_access(verdict: Verdict, action: str) -> Handler:
    def handle(g: tuple[Any, ...], ev: Event) -> None:
        # proto, src, sport, iface, dst, dport
        _decision(ev, action, verdict)
        _proto(ev, g[0])
        _end(ev, "source", g[1], g[2])
        _end(ev, "destination", g[4], g[5] if g[5].isdigit() else None)
        _ifaces(ev, g[3])

    return handle


def _icmp_denied(g: tuple[Any, ...], ev: Event) -> None:
    # proto, type, code, src, iface[, dst]
    _decision(ev, "deny", DENIED)
    _proto(ev, g[0])
    _end(ev, "source", g[3])
    _ifaces(ev, g[4])
    if len(g) > 5:
        _end(ev, "destination", g[5])


def _dynamic_filter(g: tuple[Any, ...], ev: Event) -> None:
    # word, list colour, proto, src iface, src, sport, dst iface, dst, dport
    word = g[0].lower()
    verdict = (
        DENIED if word in ("dropped", "blocked") else ALLOWED if word == "monitored" else UNKNOWN
    )
    _decision(ev, word, verdict)
    _proto(ev, g[2])
    _end(ev, "source", g[4], g[5])
    _end(ev, "destination", g[7], g[8])
    _ifaces(ev, g[3], g[6])
    _cisco(ev)["dynamic_filter_list"] = g[1].lower() + "list"


# --- connections ---------------------------------------------------------------------


def _built(g: tuple[Any, ...], ev: Event) -> None:
    # dir, proto, id, for: iface addr port mapped mport user, to: iface addr port mapped mport
    # user, [teardown-style user]
    inbound = g[0] == "inbound"
    a, b = g[3:9], g[9:15]
    src, dst = (a, b) if inbound else (b, a)  # an outbound connection was opened from "to"
    _traffic(ev, "flow-creation", ALLOWED, g[1], _ep(src[1], src[2]), _ep(dst[1], dst[2]),
             src[0], dst[0])  # fmt: skip
    ev["event"]["id"] = g[2]
    if src[3] != src[1] or src[4] != src[2]:
        _nat(ev, "source", src[3], src[4], src[1], src[2])
    if dst[3] != dst[1] or dst[4] != dst[2]:
        _nat(ev, "destination", dst[3], dst[4], dst[1], dst[2])
    network = ev.get("network")
    if network is None:
        network = ev["network"] = {}
    network["direction"] = "inbound" if inbound else "outbound"
    if src[5] or g[15]:
        _set_user(ev, _user(src[5]) or _user(g[15]))
    if dst[5]:
        _set_user(ev, _user(dst[5]), "destination")


def _teardown(g: tuple[Any, ...], ev: Event) -> None:
    # proto, id, iface, addr, port, user, iface, addr, port, user, h, m, s, bytes, rest
    _traffic(ev, "flow-expiration", ALLOWED, g[0], _ep(g[3], g[4]), _ep(g[7], g[8]),
             g[2], g[6])  # fmt: skip
    event = ev["event"]
    event["id"] = g[1]
    _duration(ev, g[10], g[11], g[12])
    octets = to_int(g[13])
    if octets is not None:
        section(ev, "network")["bytes"] = octets
    rest = g[14].strip() if g[14] else ""
    user = None
    if rest:
        if rest[-1] == ")" and "(" in rest:
            rest, _, tail = rest.rpartition("(")
            user = _user(tail[:-1])
            rest = rest.rstrip()
        reason, _, initiator = rest.partition(" from ")
        if reason:
            event["reason"] = reason
        if initiator:
            _cisco(ev)["termination_initiator"] = initiator
    if g[5] or user:
        _set_user(ev, _user(g[5]) or user)
    if g[9]:
        _set_user(ev, _user(g[9]), "destination")


def _icmp_built(g: tuple[Any, ...], ev: Event) -> None:
    # dir, proto, faddr iface, faddr, fport, fuser, gaddr, laddr iface, laddr, lport, luser,
    # type, code
    inbound = g[0] == "inbound"
    _decision(ev, "flow-creation", ALLOWED)
    _proto(ev, g[1])
    foreign, local = (g[3], g[2]), (g[8], g[7])
    src, dst = (foreign, local) if inbound else (local, foreign)
    _end(ev, "source", src[0])
    _end(ev, "destination", dst[0])
    _ifaces(ev, src[1], dst[1])
    section(ev, "network")["direction"] = "inbound" if inbound else "outbound"
    _set_user(ev, _user(g[10] if not inbound else g[5]))


def _icmp_teardown(g: tuple[Any, ...], ev: Event) -> None:
    # proto, faddr iface, faddr, fport, fuser, gaddr, laddr iface, laddr, lport, luser
    _decision(ev, "flow-expiration", ALLOWED)
    _proto(ev, g[0])
    _end(ev, "source", g[2])
    _end(ev, "destination", g[7])
    _ifaces(ev, g[1], g[6])


def _xlate(action: str) -> Handler:
    def handle(g: tuple[Any, ...], ev: Event) -> None:
        # kind, proto, real iface, addr, port, user, mapped iface, addr, port[, h, m, s]
        event = ev["event"]
        event["action"] = action
        event["category"] = ["network"]
        event["outcome"] = "success"
        event["type"] = ["connection", "start" if action == "translation-built" else "end"]
        _proto(ev, g[1])
        _end(ev, "source", g[3], g[4])
        _set_user(ev, _user(g[5]))
        nat = section(section(ev, "source"), "nat")
        ip = to_ip(g[7])
        if ip is not None:
            nat["ip"] = ip
        port = to_port(g[8])
        if port is not None:
            nat["port"] = port
        if not nat:
            del ev["source"]["nat"]
        _ifaces(ev, g[2], g[6])
        if len(g) > 9 and g[9] is not None:
            _duration(ev, g[9], g[10], g[11])

    return handle


# --- authentication and sessions ------------------------------------------------------


def _aaa_ok(g: tuple[Any, ...], ev: Event) -> None:
    # kind, server, user, user ip
    _auth(ev, "logged-in", True)
    ev["destination"] = {"address": g[1]} if to_ip(g[1]) is None else {"ip": g[1]}
    _set_user(ev, _user(g[2]))
    _end(ev, "source", g[3])
    _cisco(ev)["aaa_type"] = g[0]


def _aaa_rejected(g: tuple[Any, ...], ev: Event) -> None:
    # kind, reason, server, user, user ip
    _auth(ev, "logon-failed", False)
    ev["event"]["reason"] = g[1]
    ev["destination"] = {"address": g[2]} if to_ip(g[2]) is None else {"ip": g[2]}
    _set_user(ev, _user(g[3]))
    _end(ev, "source", g[4])
    _cisco(ev)["aaa_type"] = g[0]


def _aaa_local_ok(g: tuple[Any, ...], ev: Event) -> None:
    _auth(ev, "logged-in", True)
    _set_user(ev, _user(g[0]))
    _end(ev, "source", g[1])


def _aaa_local_rejected(g: tuple[Any, ...], ev: Event) -> None:
    # reason, user, ip
    _auth(ev, "logon-failed", False)
    ev["event"]["reason"] = g[0]
    _set_user(ev, _user(g[1]))
    _end(ev, "source", g[2])


def _aaa_accept(g: tuple[Any, ...], ev: Event) -> None:
    _auth(ev, "logged-in", True, "info")
    _set_user(ev, _user(g[0]))


def _login(ok: bool) -> Handler:
    def handle(g: tuple[Any, ...], ev: Event) -> None:
        # src, sport, iface, dst, service, user
        _auth(ev, "logged-in" if ok else "logon-failed", ok)
        _end(ev, "source", g[0], g[1])
        _end(ev, "destination", g[3])
        ev["network"] = {"protocol": g[4].lower()}
        _ifaces(ev, g[2])
        _set_user(ev, _user(g[5]))

    return handle


def _user_auth(ok: bool) -> Handler:
    def handle(g: tuple[Any, ...], ev: Event) -> None:
        # ip, user
        _auth(ev, "logged-in" if ok else "logon-failed", ok)
        _end(ev, "source", g[0])
        _set_user(ev, _user(g[1]))

    return handle


def _logged_out(g: tuple[Any, ...], ev: Event) -> None:
    _session(ev, "logged-out", "end")
    ev["event"]["category"] = ["authentication"]
    _set_user(ev, _user(g[0]))


def _console_denied(g: tuple[Any, ...], ev: Event) -> None:
    _auth(ev, "logon-failed", False)
    ev["event"]["reason"] = "no admin rights"
    _set_user(ev, _user(g[0]))


def _vpn(action: str, kind: str, ok: bool | None = True) -> Handler:
    def handle(g: tuple[Any, ...], ev: Event) -> None:
        # group, user, ip, rest
        if ok is False:
            _auth(ev, action, False)
        else:
            _session(ev, action, kind)
            if action == "vpn-login":
                ev["event"]["category"] = ["authentication", "session"]
        _set_user(ev, _user(g[1]))
        _end(ev, "source", g[2])
        _cisco(ev)["group_policy"] = g[0]
        rest = (g[3] or "").strip().rstrip(".")
        if rest and kind == "end":
            reason = rest.split("reason:", 1)[-1].split("Reason:", 1)[-1].strip(" :")
            if reason:
                ev["event"]["reason"] = reason

    return handle


def _vpn_rejected_old(g: tuple[Any, ...], ev: Event) -> None:
    # group, user, session type
    _auth(ev, "logon-failed", False)
    _set_user(ev, _user(g[1]))
    _cisco(ev).update(group_policy=g[0], session_type=g[2])


def _address_assigned(g: tuple[Any, ...], ev: Event) -> None:
    _session(ev, "address-assigned", "info")
    _set_user(ev, _user(g[1]))
    _end(ev, "source", g[2])
    asa = _cisco(ev)
    asa["group_policy"] = g[0]
    assigned = to_ip(g[3])
    if assigned is not None:
        asa["assigned_ip"] = assigned


def _session_disconnected(g: tuple[Any, ...], ev: Event) -> None:
    # group, user, ip, type, duration text, xmt, rcv, reason
    _session(ev, "vpn-session-ended", "end")
    _set_user(ev, _user(g[1]))
    _end(ev, "source", g[2])
    asa = _cisco(ev)
    asa.update(group_policy=g[0], session_type=g[3])
    m = re.fullmatch(r"(?:(\d+)d\s*)?(\d+)h:(\d+)m:(\d+)s", g[4].strip())
    if m is not None:
        days = int(m.group(1) or 0)
        value = scaled(
            days * 86400 + int(m.group(2)) * 3600 + int(m.group(3)) * 60 + int(m.group(4)),
            1_000_000_000,
        )
        if value is not None:
            ev["event"]["duration"] = value
    sent, received = to_int(g[5]), to_int(g[6])
    if sent is not None:
        section(ev, "source")["bytes"] = sent
    if received is not None:
        section(ev, "destination")["bytes"] = received
    ev["event"]["reason"] = g[7].strip()


def _ssl(action: str, kind: str) -> Handler:
    def handle(g: tuple[Any, ...], ev: Event) -> None:
        # peer, iface, src, sport, dst, dport, version
        _session(ev, action, kind)
        _end(ev, "source", g[2], g[3])
        _end(ev, "destination", g[4], g[5])
        _ifaces(ev, g[1])
        _cisco(ev)["peer_type"] = g[0]
        if len(g) > 6 and g[6]:
            section(ev, "tls")["version_protocol"] = g[6]

    return handle


# --- administrator changes ------------------------------------------------------------------


def _command(g: tuple[Any, ...], ev: Event) -> None:
    # user, command
    command = g[1]
    read_only = command.split(" ", 1)[0].lower() in ("show", "more", "dir", "ping", "copy")
    _config(ev, "command-executed", "access" if read_only else "change")
    _set_user(ev, _user(g[0]))
    ev["process"] = {"command_line": command}


def _command_from(g: tuple[Any, ...], ev: Event) -> None:
    # user, tool, ip, command
    _command((g[0], g[3]), ev)
    _end(ev, "source", g[2])
    _cisco(ev)["session"] = g[1]


def _config_begin(g: tuple[Any, ...], ev: Event) -> None:
    _config(ev, "configuration-started", "change")
    _end(ev, "source", g[0])


def _config_end(g: tuple[Any, ...], ev: Event) -> None:
    ok = g[1].strip().upper().startswith("OK")
    _config(ev, "configuration-saved", "change")
    ev["event"]["outcome"] = "success" if ok else "failure"
    _end(ev, "source", g[0])


def _local_user(action: str, kind: str) -> Handler:
    def handle(g: tuple[Any, ...], ev: Event) -> None:
        _config(ev, action, kind, "iam")
        ev["event"]["type"] = ["user", kind]
        ev["user"] = {"target": {"name": g[0]}}
        if len(g) > 1 and g[1]:
            _cisco(ev)["privilege_level"] = g[1]

    return handle


def _priv_changed(g: tuple[Any, ...], ev: Event) -> None:
    _config(ev, "privilege-changed", "change", "iam")
    ev["event"]["type"] = ["user", "change"]
    ev["user"] = {"target": {"name": g[0]}}
    _cisco(ev).update(privilege_old=g[1], privilege_new=g[2])


# --- FTD security events ---------------------------------------------------------------------

_FTD_ACTION_NAMES = {
    "430001": "intrusion-detected",
    "430002": "connection-started",
    "430003": "connection-finished",
    "430004": "file-detected",
    "430005": "malware-detected",
}


def ftd_fields(text: str) -> dict[str, str]:
    """``Key: value, Key2: value, ...`` -> dict; values may hold commas."""
    out: dict[str, str] = {}
    marks = list(_FTD_KV_RE.finditer(text))
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        out[m.group(1).strip()] = text[m.end() : end].strip()
    return out


def _ftd_event(code: str, msg: str, ev: Event) -> None:
    f = ftd_fields(msg)
    get = f.get
    event = ev["event"]
    event["action"] = _FTD_ACTION_NAMES[code]
    verdict_word = get("AccessControlRuleAction") or get("InlineResult") or ""
    verdict = _FTD_ACTIONS.get(verdict_word.strip().lower(), UNKNOWN)
    if code == "430001":
        event["category"] = ["intrusion_detection", "network"]
        event["kind"] = "alert"
    elif code in ("430004", "430005"):
        event["category"] = ["malware", "file"] if code == "430005" else ["file"]
        event["kind"] = "alert" if code == "430005" else "event"
    else:
        event["category"] = ["network"]
    apply(event, verdict, "connection" if code in ("430002", "430003") else "info")
    if code == "430002":
        event["type"].append("start")
    elif code == "430003":
        event["type"].append("end")
    if verdict_word:
        _cisco(ev)["rule_action"] = verdict_word
    _end(ev, "source", get("SrcIP"), get("SrcPort"))
    _end(ev, "destination", get("DstIP"), get("DstPort"))
    _proto(ev, get("Protocol"))
    for key, side in (("InitiatorBytes", "source"), ("ResponderBytes", "destination")):
        octets = to_int(get(key))
        if octets is not None and side in ev:
            ev[side]["bytes"] = octets
    for key, side in (("InitiatorPackets", "source"), ("ResponderPackets", "destination")):
        packets = to_int(get(key))
        if packets is not None and side in ev:
            ev[side]["packets"] = packets
    observer = ev["observer"]
    for key, direction, what in (
        ("IngressInterface", "ingress", "interface"),
        ("EgressInterface", "egress", "interface"),
        ("IngressZone", "ingress", "zone"),
        ("EgressZone", "egress", "zone"),
    ):
        value = get(key)
        if value and value not in EMPTY:
            node = section(observer, direction)
            node[what] = {"name": value} if what == "interface" else value
    rule = get("AccessControlRuleName") or get("IntrusionPolicy") or get("FilePolicy")
    if rule:
        ev["rule"] = {"name": rule}
        if get("ACPolicy"):
            ev["rule"]["ruleset"] = get("ACPolicy")
    user = get("User")
    if user and user not in EMPTY and not user.lower().startswith(("no authentication", "unknown")):
        _set_user(ev, user.split("\\", 1)[-1] if user.startswith("LOCAL\\") else user)
    app = get("ApplicationProtocol")
    if app and app not in EMPTY:
        section(ev, "network")["protocol"] = app.lower()
    duration = to_int(get("ConnectionDuration"))
    if duration is not None and code == "430003":
        nanos = scaled(duration, 1_000_000_000)
        if nanos is not None:
            event["duration"] = nanos
    url = get("URL")
    if url and url not in EMPTY:
        ev["url"] = {"original": url}
    if get("ConnectionID"):
        event["id"] = get("ConnectionID")
    if get("Message"):
        ev["message"] = get("Message")


# --- the message catalogue ------------------------------------------------------------------

_FOR = r"(?:for|from)"
_MESSAGES: dict[str, tuple[re.Pattern[str], Handler]] = {}


def _msg(ids: str, pattern: str, handler: Handler) -> None:
    rx = re.compile(pattern)
    for code in ids.split():
        _MESSAGES[code] = (rx, handler)


_msg(
    "106001",
    r"(?:Inbound|Outbound|inbound|outbound) (\S+) connection denied from "
    + _AD + r"/(\d+) to " + _AD + r"/(\d+) flags .*? on interface (\S+)",
    _deny_ports,
)  # fmt: skip
_msg("106002", r"(\S+) Connection denied by \S+ list \S+ src " + _AD + r" dest " + _AD,
     _deny_proto_pair)  # fmt: skip
_msg(
    "106006 106007",
    r"Deny (?:inbound|outbound) (\S+) from " + _AD + r"/(\d+) to " + _AD + r"/(\d+)"
    r"(?: on interface (\S+))?",
    _deny_ports,
)
_msg(
    "106010 106014",
    r"Deny (?:inbound|outbound) (protocol \d+|\S+) src " + _EP + r" dst " + _EP,
    _deny_src_dst,
)
_msg("106012", r"Deny IP from " + _AD + r" to " + _AD + r", (.*)", _deny_ip_options)
_msg("106013", r"Dropping ()echo request from " + _AD + r" to PAT address " + _AD,
     _deny_proto_pair)  # fmt: skip
_msg(
    "106015",
    r"Deny (\S+) \(no connection\) from " + _AD + r"/(\d+) to " + _AD + r"/(\d+) "
    r"flags .*? on interface (\S+)",
    _deny_ports,
)
_msg("106016", r"Deny IP spoof from \(?" + _AD + r"\)? to " + _AD + r" on interface (\S+)",
     _deny_ip_pair)  # fmt: skip
_msg("106017", r"Deny IP due to Land Attack from " + _AD + r" to " + _AD, _deny_ip_pair)
_msg("106018", r"(\S+) packet type \S+ denied by \S+ list \S+ src " + _AD + r" dest " + _AD,
     _deny_proto_pair)  # fmt: skip
_msg("106020", r"Deny IP teardrop fragment \(.*?\) from " + _AD + r" to " + _AD, _deny_ip_pair)
_msg(
    "106021 106022",
    r"Deny (\S+) (?:reverse path check|connection spoof) from " + _AD + r" to " + _AD
    + r" on interface (\S+)",
    _deny_proto_pair,
)  # fmt: skip
_msg(
    "106023",
    r"Deny (protocol \d+|\S+) src " + _EP + r"\s*dst " + _EP + r".*? by access-group \"([^\"]*)\"",
    _deny_src_dst,
)
_msg(
    "106100",
    r"access-list (\S+) (permitted|denied|est-allowed) ()(\S+) " + _IF + r"/" + _AD
    + r"\((\d+)\)" + _US + r" -> " + _IF + r"/" + _AD + r"\((\d+)\)" + _US,
    _acl_log,
)  # fmt: skip
_msg(
    "106102 106103",
    r"access-list (\S+) (permitted|denied) (\S+) for user '?([^' ]+)'? " + _IF + r"/" + _AD
    + r"\((\d+)\)" + _US + r" -> " + _IF + r"/" + _AD + r"\((\d+)\)" + _US,
    lambda g, ev: _acl_log((g[0], g[1], g[3], g[2], *g[4:]), ev),
)  # fmt: skip
_msg(
    "110002",
    r"(.*?) for (\S+) from " + _IF + ":" + _AD + r"/(\d+) to " + _AD + r"/(\d+)",
    _no_route,
)  # fmt: skip
_msg(
    "302013 302015",
    r"Built (inbound|outbound) (\S+) connection (\d+) for " + _IF + ":" + _AD + r"/(\d+) "
    r"\(" + _AD + r"/(\d+)\)" + _US + r" to " + _IF + ":" + _AD + r"/(\d+) \(" + _AD
    + r"/(\d+)\)" + _US + r"(?:\s*\(([^()]*)\))?",
    _built,
)  # fmt: skip
_msg(
    "302014 302016 302018 302036",
    r"Teardown (\S+) (?:state-bypass )?connection (\d+) " + _FOR + " " + _EP + r"\s*to " + _EP
    + r"\s*duration (\d+):(\d+):(\d+) bytes (\d+)(.*)",
    _teardown,
)  # fmt: skip
_msg(
    "302020",
    r"Built (inbound|outbound) (ICMP|ICMPv6|icmp|icmp6) connection for faddr (?:" + _IF + ":)?"
    + _AD + r"/(\d+)" + _US + r" gaddr (?:[^\s:]+:)?" + _AD + r"/\d+ laddr (?:" + _IF + ":)?"
    + _AD + r"/(\d+)" + _US + r"(?:\s*type (\d+) code (\d+))?",
    _icmp_built,
)  # fmt: skip
_msg(
    "302021",
    r"Teardown (ICMP|ICMPv6|icmp|icmp6) connection for faddr (?:" + _IF + ":)?" + _AD
    + r"/(\d+)" + _US + r" gaddr (?:[^\s:]+:)?" + _AD + r"/\d+ laddr (?:" + _IF + ":)?" + _AD
    + r"/(\d+)" + _US,
    _icmp_teardown,
)  # fmt: skip
_msg(
    "305011",
    r"Built (\S+) (\S+) translation from " + _IF + ":" + _AD + _PT + _US + r" to " + _IF
    + ":" + _AD + _PT,
    _xlate("translation-built"),
)  # fmt: skip
_msg(
    "305012",
    r"Teardown (\S+) (\S+) translation from " + _IF + ":" + _AD + _PT + _US + r" to " + _IF
    + ":" + _AD + _PT + r" duration (\d+):(\d+):(\d+)",
    _xlate("translation-teardown"),
)  # fmt: skip
_msg("313001 313008", r"Denied (\S+) type=(\d+), code=(\d+) from " + _AD
     + r" on interface (\S+)", _icmp_denied)  # fmt: skip
_msg("313004", r"Denied (\S+) type=(\d+), ()from (?:laddr )?" + _AD + r" on interface (\S+) to "
     + _AD + r": no matching session", _icmp_denied)  # fmt: skip
_msg(
    "338001 338002 338003 338004 338005 338006 338007 338008 338101 338102 338103 338104 "
    "338201 338202 338203 338204",
    r"Dynamic [Ff]ilter (\w+) (black|white|grey)listed (\S+) traffic from " + _IF + ":" + _AD
    + r"/(\d+) \([^)]*\) to " + _IF + ":" + _AD + r"/(\d+)",
    _dynamic_filter,
)  # fmt: skip
_MGMT = r" from " + _AD + r"/(\d+) to " + _IF + ":" + _AD + r"/(\S+)"
_msg("710002", r"(\S+) access permitted" + _MGMT, _mgmt_access(ALLOWED, "allow"))
_msg("710003", r"(\S+) access denied by ACL" + _MGMT, _mgmt_access(DENIED, "deny"))
_msg("710005", r"(\S+) request discarded" + _MGMT, _mgmt_access(DENIED, "deny"))
# authentication
_msg(
    "113004",
    r"AAA user (\w+) Successful\s*:\s*server\s*=\s*(\S+)\s*[:,]\s*[Uu]ser\s*=\s*(.+?)"
    r"(?:\s*:\s*[Uu]ser IP\s*=\s*(\S+))?\s*$",
    _aaa_ok,
)
_msg(
    "113005",
    r"AAA user (\w+) Rejected\s*:\s*reason\s*=\s*(.*?)\s*:\s*server\s*=\s*(\S+)\s*:\s*"
    r"[Uu]ser\s*=\s*(.*?)(?:\s*:\s*[Uu]ser IP\s*=\s*(\S+))?\s*$",
    _aaa_rejected,
)
_msg("113008", r"AAA transaction status ACCEPT\s*:\s*[Uu]ser\s*=\s*(.+?)\s*$", _aaa_accept)
_msg(
    "113012",
    r"AAA user authentication Successful\s*:\s*local database\s*:\s*[Uu]ser\s*=\s*(.+?)"
    r"(?:\s*:\s*[Uu]ser IP\s*=\s*(\S+))?\s*$",
    _aaa_local_ok,
)
_msg(
    "113015",
    r"AAA user authentication Rejected\s*:\s*reason\s*=\s*(.*?)\s*:\s*local database\s*:\s*"
    r"[Uu]ser\s*=\s*(.*?)(?:\s*:\s*[Uu]ser IP\s*=\s*(\S+))?\s*$",
    _aaa_local_rejected,
)
_msg(
    "113019",
    r"Group = ([^,]*), Username = ([^,]*), IP = ([^,]*), Session disconnected\. Session Type: "
    r"([^,]*), Duration: ([^,]*), Bytes xmt: (\d+), Bytes rcv: (\d+), Reason: (.*)",
    _session_disconnected,
)
_msg("113021", r"Attempted console login failed\.? [Uu]ser (\S+) did NOT have appropriate "
     r"Admin Rights", _console_denied)  # fmt: skip
_GROUP = r"Group <([^<>]*)> User <([^<>]*)> IP <([^<>]*)>"
_msg("113039", _GROUP + r" AnyConnect parent session started(.*)",
     _vpn("vpn-login", "start"))  # fmt: skip
_msg("716001", _GROUP + r" WebVPN session started(.*)", _vpn("vpn-login", "start"))
_msg("716002", _GROUP + r" WebVPN session terminated(.*)", _vpn("vpn-session-ended", "end"))
_msg("716058", _GROUP + r" AnyConnect session lost connection(.*)",
     _vpn("vpn-session-lost", "end"))  # fmt: skip
_msg("716059", _GROUP + r" AnyConnect session resumed(.*)",
     _vpn("vpn-session-resumed", "start"))  # fmt: skip
_msg("716039", _GROUP + r" Authentication: rejected(.*)", _vpn("logon-failed", "start", False))
# 716039 before ASA 9.x: "Authentication: rejected, group = G user = U , Session Type: T"
_MESSAGES["716039b"] = (
    re.compile(r"Authentication: rejected, group = (\S+) user = (\S+)\s*, Session Type: (\S+)"),
    _vpn_rejected_old,
)
_msg("722022 722033 722034", _GROUP + r" ((?:TCP|UDP|DTLS)? ?SVC connection established.*|"
     r"First .*|New .*)", _vpn("vpn-connected", "start"))  # fmt: skip
_msg("722023 722028 722037", _GROUP + r" (.*)", _vpn("vpn-session-ended", "end"))
_msg("722051", _GROUP + r" (?:IPv4 |IPv6 )?Address <([^<>]*)>", _address_assigned)
_msg("605004", r"Login denied from " + _AD + r"/(\d+) to " + _IF + ":" + _AD + r"/(\S+) for "
     r"user \"([^\"]*)\"", _login(False))  # fmt: skip
_msg("605005", r"Login permitted from " + _AD + r"/(\d+) to " + _IF + ":" + _AD + r"/(\S+) for "
     r"user \"([^\"]*)\"", _login(True))  # fmt: skip
_msg("611101", r"User authentication succeeded: IP(?: address)?: " + _AD + r", Uname: (\S+)",
     _user_auth(True))  # fmt: skip
_msg("611102", r"User authentication failed: IP(?: address)?: " + _AD + r", Uname: (\S+)",
     _user_auth(False))  # fmt: skip
_msg("611103", r"User logged out: Uname: (\S+)", _logged_out)
_SSL = r" (client|server) " + _IF + ":" + _AD + r"/(\d+) to " + _AD + r"/(\d+)"
_msg("725001", r"Starting SSL handshake with" + _SSL + r"(?: for (\S+) session)?",
     _ssl("ssl-handshake-started", "start"))  # fmt: skip
_msg("725002", r"Device completed SSL handshake with" + _SSL + r"(?: for (\S+) session)?",
     _ssl("ssl-handshake-completed", "start"))  # fmt: skip
_msg("725007", r"SSL session with" + _SSL + r" terminated", _ssl("ssl-session-terminated", "end"))
# administrator changes
_msg("111008", r"User '([^']*)' executed the '(.*)' command", _command)
_msg("111009", r"User '([^']*)' executed cmd: ?(.*)", _command)
_msg("111010", r"User '([^']*)', running '([^']*)' from IP " + _AD + r", executed '(.*)'",
     _command_from)  # fmt: skip
_msg("111007", r"Begin configuration: " + _AD + r" (?:reading|writing) .*", _config_begin)
_msg("111001", r"Begin configuration: " + _AD + r" writing to .*", _config_begin)
_msg("111004", _AD + r" end configuration: (\S+)", _config_end)
_msg("502101", r"New user added to local dbase: Uname: (\S+) Priv: (\S+).*",
     _local_user("user-created", "creation"))  # fmt: skip
_msg("502102", r"User deleted from local dbase: Uname: (\S+) Priv: (\S+).*",
     _local_user("user-deleted", "deletion"))  # fmt: skip
_msg("502103", r"User priv level changed: Uname: (\S+) From: (\S+) To: (\S+)", _priv_changed)


def _asa_message(code: str, msg: str, ev: Event) -> bool:
    """Fill fields from one message; False when its ID or shape is not catalogued."""
    if code in _FTD_ACTION_NAMES and ":" in msg:
        _ftd_event(code, msg, ev)
        return True
    entry = _MESSAGES.get(code)
    if entry is None:
        return False
    m = entry[0].match(msg)
    if m is None and code == "716039":
        entry = _MESSAGES["716039b"]
        m = entry[0].match(msg)
    if m is None:
        return False
    entry[1](m.groups(), ev)
    return True


@register("firewall", "asa", sniff=_sniff_asa)
def parse_asa(raw: str, ctx: ParseContext) -> list[Event]:
    """Cisco ASA / FTD syslog (``%ASA-6-302013: ...``, ``%FTD-1-430003: ...``).
    The timestamp nearest the tag wins (the device's own clock, often with a
    zone abbreviation); year-less stamps get the year nearest to ``ctx.now``."""
    tag = _ASA_TAG_RE.search(raw)
    if tag is None:
        raise ParseError("no %ASA-<severity>-<id>: tag")
    stamp, host = _asa_head(raw[: tag.start()], ctx.timezone, ctx.now.date())
    if stamp is None:
        stamp = now_stamp(ctx.now)
    severity, code = int(tag.group(3)), tag.group(4)
    msg = raw[tag.end() :]
    ev = new_event(raw, ctx.source, ctx.format, "Cisco", tag.group(1).lower(), stamp)
    event = ev["event"]
    event["code"] = code
    event["severity"] = severity
    ev["log"] = {"level": _SEVERITY_NAMES[severity]}
    ev["message"] = msg
    observer = ev["observer"]
    observer["type"] = "firewall"
    if host is not None:
        observer["hostname"] = host
    if not _asa_message(code, msg, ev):
        event["category"] = ["network"]
        event["outcome"] = "unknown"
        event["type"] = ["info"]
    return [ev]
