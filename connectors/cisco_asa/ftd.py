"""Firepower Threat Defense security events (430001-430005): ``Key: value, ...`` lists."""

from __future__ import annotations

from connectors.cisco_asa.fields import _FTD_ACTIONS, _FTD_KV_RE, _cisco, _end, _proto, _set_user
from connectors.ecs import (
    EMPTY,
    Event,
    scaled,
    section,
    to_int,
)
from connectors.outcomes import UNKNOWN, apply

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
