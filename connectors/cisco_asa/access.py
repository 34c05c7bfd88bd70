"""Cisco ASA handlers of access messages: AAA, management logins,
WebVPN/AnyConnect and SSL sessions, administrator commands, configuration and
local users.
"""

from __future__ import annotations

import re
from typing import Any

from connectors.cisco_asa.fields import (
    Handler,
    _auth,
    _cisco,
    _config,
    _end,
    _ifaces,
    _session,
    _set_user,
    _user,
)
from connectors.ecs import (
    Event,
    scaled,
    section,
    to_int,
    to_ip,
)

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
