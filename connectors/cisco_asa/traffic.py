"""Cisco ASA handlers of traffic messages: ACL denies and permits, dynamic filter,
connection build and teardown, NAT.
"""

from __future__ import annotations

from typing import Any

from connectors.cisco_asa.fields import (
    Handler,
    _cisco,
    _decision,
    _duration,
    _end,
    _ifaces,
    _nat,
    _proto,
    _set_user,
    _user,
)
from connectors.ecs import (
    EMPTY,
    Event,
    section,
    to_int,
    to_ip,
    to_port,
)
from connectors.outcomes import ALLOWED, DENIED, UNKNOWN, Verdict

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
