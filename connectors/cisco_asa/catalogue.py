"""The message catalogue: each ASA message ID with its pattern and handler
(connectors/COVERAGE.md lists them).
"""

from __future__ import annotations

import re

from connectors.cisco_asa.access import (
    _aaa_accept,
    _aaa_local_ok,
    _aaa_local_rejected,
    _aaa_ok,
    _aaa_rejected,
    _address_assigned,
    _command,
    _command_from,
    _config_begin,
    _config_end,
    _console_denied,
    _local_user,
    _logged_out,
    _login,
    _priv_changed,
    _session_disconnected,
    _ssl,
    _user_auth,
    _vpn,
    _vpn_rejected_old,
)
from connectors.cisco_asa.fields import _AD, _EP, _IF, _PT, _US, Handler
from connectors.cisco_asa.ftd import _FTD_ACTION_NAMES, _ftd_event
from connectors.cisco_asa.traffic import (
    _acl_log,
    _built,
    _deny_ip_options,
    _deny_ip_pair,
    _deny_ports,
    _deny_proto_pair,
    _deny_src_dst,
    _dynamic_filter,
    _icmp_built,
    _icmp_denied,
    _icmp_teardown,
    _mgmt_access,
    _no_route,
    _teardown,
    _xlate,
)
from connectors.ecs import (
    Event,
)
from connectors.outcomes import ALLOWED, DENIED

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
