"""Firewall formats -> ECS: PAN-OS CSV, FortiGate key=value, Cisco ASA syslog,
iptables/nftables kernel lines.

Allowed versus blocked is always explicit, whatever the vendor's words:

* ``event.outcome``: ``success`` (traffic allowed) / ``failure`` (blocked);
* ``event.type``: contains ``allowed`` or ``denied`` for traffic decisions;
* ``event.action``: the device's decision word, lower-cased, except that
  Cisco ASA's ``Deny``/``denied``/``permitted`` become ``deny``/``allow`` so
  a Sigma rule can say ``event.action: deny`` for PAN-OS, FortiGate, ASA
  and iptables ``DENY`` prefixes alike. FIELDS.md has the full table.
"""

from __future__ import annotations

import re
from datetime import tzinfo
from typing import Any

# Cisco ASA / FTD has its own module; importing it registers the format.
from connectors import cisco_asa  # noqa: F401
from connectors.base import ParseContext, register
from connectors.ecs import (
    Event,
    endpoint,
    in_range,
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
from connectors.gateway import parse_cef, sniff_cef
from connectors.outcomes import (
    DENIED,
    FORTIGATE_EVENT,
    FORTIGATE_STATUS,
    FORTIGATE_TRAFFIC,
    FORTIGATE_UTM,
    UNKNOWN,
    apply,
    lookup,
)
from connectors.panos import parse_panos, split_panos_csv  # noqa: F401
from connectors.timeparse import (
    now_stamp,
    parse_epoch,
    parse_iso,
    parse_monthname,
    zone_for,
)
from zonewatch.errors import ParseError

# Decision words meaning "traffic did not pass", across vendors.
_BLOCK_WORDS = frozenset(
    {"deny", "denied", "drop", "dropped", "reject", "rejected", "block", "blocked",
     "reset", "sinkhole", "discard", "fail", "failed", "d", "r"}
)  # fmt: skip
_WORD_SPLIT_RE = re.compile(r"[-_ ]+")
_ALLOW_WORDS = frozenset(
    {"allow", "allowed", "accept", "accepted", "permit", "permitted", "pass", "a", "continue",
     "override", "alert", "close", "timeout", "start", "ip-conn", "server-rst", "client-rst",
     "dns", "est-allowed"}
)  # fmt: skip


def _verdict(word: str | None) -> bool | None:
    """True = blocked, False = allowed, None = not a traffic decision.

    Whole words first (``server-rst`` is an allowed session's end), then the
    parts of compound prefixes (``drop_input``, ``nft-accept``, ``reset-both``).
    """
    if not word:
        return None
    w = word.lower()
    if w in _ALLOW_WORDS:
        return False
    if w in _BLOCK_WORDS:
        return True
    parts = _WORD_SPLIT_RE.split(w)
    if any(p in _BLOCK_WORDS for p in parts if len(p) > 1):
        return True
    if any(p in _ALLOW_WORDS for p in parts if len(p) > 1):
        return False
    return None


def _decide(event: dict[str, Any], blocked: bool | None, kind: str = "connection") -> None:
    """Set ``category``/``type``/``outcome`` on the ``event`` object."""
    event["category"] = ["network"]
    if blocked is None:
        event["type"] = [kind]
        return
    event["outcome"] = "failure" if blocked else "success"
    event["type"] = [kind, "denied" if blocked else "allowed"]


# --- FortiGate --------------------------------------------------------------

# key=value or key="quoted value" (backslash escapes inside quotes); quoted
# and plain values land in different groups. The unrolled quoted-value loop
# and possessive quantifiers keep the scan linear and ~2x faster than a
# per-character alternation.
_FORTI_KV_RE = re.compile(r'([A-Za-z_][\w-]*+)=(?:"([^"\\]*+(?:\\.[^"\\]*+)*+)"|([^\s"]*+))')
_FORTI_START_RE = re.compile(r"(?:^|\s)(?:date|logver|logid|devname|eventtime|timestamp)=")

# FortiOS keys copied as they are: (key, field) per ECS object
_FORTI_OBSERVER = (("devname", "name"), ("devid", "serial_number"))
_FORTI_RULE = (
    ("policyid", "id"),
    ("policyname", "name"),
    ("poluuid", "uuid"),
    ("logdesc", "description"),
)
_FORTI_VENDOR = (("utmaction", "utmaction"), ("vd", "vd"))
_FORTI_UTM_BLOCK = frozenset({"block", "blocked", "deny", "reset"})


def _sniff_forti(line: str) -> bool:
    # CEF from a FortiGate carries FTNTFGTlogid=...: that is a CEF line
    return (
        "logid=" in line
        and "type=" in line
        and "CEF:" not in line[:300]
        and _FORTI_START_RE.search(line) is not None
    )


def fortigate_fields(text_: str, pos: int = 0) -> dict[str, str]:
    """FortiOS ``key=value key2="quoted value"`` from ``pos`` on -> dict
    (quotes removed). A key given twice keeps its first value.

    One ``findall`` is most of a FortiGate line's parse (~7 of ~9 us for the
    fields of a 500-character line): splitting on quotes then on blanks,
    a two-group pattern with lookarounds, or translating to JSON for orjson
    all measured slower in CPython, because each match costs its tuple and
    strings whichever way they are made."""
    found = _FORTI_KV_RE.findall(text_, pos)
    if "\\" not in text_:
        # reversed: the first occurrence of a key is written last and wins
        return {key: quoted or plain for key, quoted, plain in reversed(found)}
    out: dict[str, str] = {}
    for key, quoted, plain in found:
        if key not in out:
            out[key] = quoted.replace('\\"', '"').replace("\\\\", "\\") if quoted else plain
    return out


def _not_ip_user(*names: str | None) -> str | None:
    for name in names:
        if name and name not in ("N/A", "-") and to_ip(name) is None:
            return name
    return None


def _interface(name: str) -> dict[str, Any]:
    return {"interface": {"name": name}}


_FORTI_AUTH_ACTIONS = frozenset(
    {"login", "logout", "auth-logon", "auth-logout", "fsso-logon", "fsso-logout",
     "ssl-login-fail", "login-fail", "auth-fail", "authentication", "sso-logon"}
)  # fmt: skip
_FORTI_UI_RE = re.compile(r"\(([0-9A-Fa-f.:]+)\)")


def _forti_event(event: dict[str, Any], kv: dict[str, str], action: str | None) -> None:
    """Category, outcome and type of a FortiOS event log (system, user, vpn...).

    ``status=`` decides when the log has it; otherwise the action word,
    through the FortiOS event vocabulary (``ssl-login-fail`` is a failure,
    ``tunnel-up`` a start); unknown words say ``unknown``."""
    subtype = kv.get("subtype", "")
    if action in _FORTI_AUTH_ACTIONS or kv.get("logdesc", "").lower().startswith(
        ("admin login", "admin logout", "user login", "authentication")
    ):
        category = ["authentication"]
    elif "cfgpath" in kv or action in ("add", "edit", "delete", "move", "rename"):
        category = ["configuration"]
    elif subtype == "vpn":
        category = ["network", "session"]
    else:
        category = ["network"] if subtype in ("sdwan", "wad", "ha") else ["host"]
    event["category"] = category
    status = kv.get("status")
    verdict = lookup(FORTIGATE_STATUS, status) if status else UNKNOWN
    if verdict is UNKNOWN:
        verdict = lookup(FORTIGATE_EVENT, action)
    if verdict.outcome != "unknown" or not status:
        apply(event, verdict)
    else:
        event["outcome"] = "unknown"
    if category == ["configuration"] and "type" not in event:
        event["type"] = ["change"]
    elif category == ["authentication"] and "type" not in event:
        event["type"] = ["info"]


@register("firewall", "fortigate", sniff=_sniff_forti)
def parse_fortigate(raw: str, ctx: ParseContext) -> list[Event]:
    """Fortinet FortiGate (FortiOS 5.x-7.x) key=value logs, bare or behind a
    syslog header. ``date``/``time`` (+``tz``) give ``@timestamp``;
    ``eventtime`` (seconds, micro- or nanoseconds by FortiOS version) gives
    ``event.start``, and ``@timestamp`` when date/time are absent."""
    start = _FORTI_START_RE.search(raw)
    if start is None:
        raise ParseError("no FortiOS key=value fields (date=, logid=, devname=...)")
    kv = fortigate_fields(raw, start.start())  # no copy of the line
    if "logid" not in kv and "type" not in kv:
        raise ParseError("FortiOS record without logid or type")
    get = kv.get
    tz: tzinfo = ctx.timezone
    zone = get("tz")
    if zone:
        # "+0900" (FortiOS), "UTC-5" / "UTC+2" (FortiAnalyzer forwarding), "JST"
        tz = zone_for(zone)
    started = parse_epoch(kv["eventtime"]) if get("eventtime") else None
    day, clock = get("date"), get("time")
    if day and clock:
        stamp = parse_iso(f"{day} {clock}", tz)
    elif started:
        stamp = started
    else:
        raise ParseError("FortiOS record has neither date/time nor eventtime")
    ev = new_event(raw, ctx.source, ctx.format, "Fortinet", "Fortigate", stamp)
    event = ev["event"]

    log_type, subtype = get("type", ""), get("subtype", "")
    action = get("action", "").lower() or None
    if log_type == "traffic":
        verdict = lookup(FORTIGATE_TRAFFIC, action)
        if get("utmaction", "").lower() in _FORTI_UTM_BLOCK:
            verdict = DENIED
        event["category"] = ["network"]
        apply(event, verdict, "connection")
    elif log_type == "utm":
        event["category"] = ["network"]
        apply(event, lookup(FORTIGATE_UTM, action), "access")
    else:
        _forti_event(event, kv, action)
    if started is not None:
        event["start"] = started
    if "logid" in kv:
        event["code"] = kv["logid"]
    if action is not None:
        event["action"] = action
    reason = text(get("reason"))
    if reason is not None:
        event["reason"] = reason
    duration = scaled(to_int(get("duration")), 1_000_000_000)
    if duration is not None:
        event["duration"] = duration
    if "level" in kv:
        ev["log"] = {"level": kv["level"]}
    if "msg" in kv:
        ev["message"] = kv["msg"]

    observer = ev["observer"]
    observer["type"] = "firewall"
    for key, field in _FORTI_OBSERVER:  # a loop: a generator cost more for two keys
        if key in kv:
            observer[field] = kv[key]
    ingress: dict[str, Any] = _interface(kv["srcintf"]) if "srcintf" in kv else {}
    egress: dict[str, Any] = _interface(kv["dstintf"]) if "dstintf" in kv else {}
    role = get("srcintfrole")
    if role is not None and role != "undefined":
        ingress["zone"] = role
    role = get("dstintfrole")
    if role is not None and role != "undefined":
        egress["zone"] = role
    if ingress:
        observer["ingress"] = ingress
    if egress:
        observer["egress"] = egress

    if subtype == "vpn" and "remip" in kv:
        # tunnel events: the remote peer is the source of the session
        src_ip, dst_ip = get("remip"), get("locip")
        src_port, dst_port = get("remport"), get("locport")
        src_bytes, dst_bytes = get("rcvdbyte"), get("sentbyte")
    else:
        src_ip, dst_ip = get("srcip"), get("dstip")
        src_port, dst_port = get("srcport"), get("dstport")
        src_bytes, dst_bytes = get("sentbyte"), get("rcvdbyte")
    if src_ip is None and "ui" in kv:
        # admin sessions: ui="https(10.10.0.50)", "ssh(10.10.0.50)", "GUI(10.10.0.50)"
        ui = _FORTI_UI_RE.search(kv["ui"])
        if ui is not None:
            src_ip = ui.group(1)
    sb, db = to_int(src_bytes), to_int(dst_bytes)
    user = _not_ip_user(get("user"), get("unauthuser"), get("eapuser"), get("xauthuser"))

    source = endpoint(to_ip(src_ip), to_port(src_port), sb, to_int(get("sentpkt")))
    nat = endpoint(to_ip(get("transip")), to_port(get("transport")))
    if nat:
        source["nat"] = nat
    if "srcmac" in kv:
        source["mac"] = kv["srcmac"]
    if user is not None:
        source["user"] = {"name": user}
        ev["user"] = {"name": user}
    if source:
        ev["source"] = source
    destination = endpoint(to_ip(dst_ip), to_port(dst_port), db, to_int(get("rcvdpkt")))
    if destination:
        ev["destination"] = destination

    network: dict[str, Any] = {}
    if sb is not None and db is not None:
        total = in_range(sb + db)
        if total is not None:
            network["bytes"] = total
    proto = transport(get("proto"))
    if proto is not None:
        network["transport"] = proto
    service = get("service", "").lower()
    if service:
        network["protocol"] = service
    if "app" in kv:
        network["application"] = kv["app"]
    if network:
        ev["network"] = network
    rule = {field: kv[key] for key, field in _FORTI_RULE if key in kv}
    if rule:
        ev["rule"] = rule

    if "cfgpath" in kv:
        config = {k: kv[k] for k in ("cfgpath", "cfgobj", "cfgattr", "cfgtid") if k in kv}
        vendor_cfg: dict[str, Any] = {"config": config}
    else:
        vendor_cfg = {}
    vendor = {field: kv[key] for key, field in _FORTI_VENDOR if key in kv}
    vendor.update(vendor_cfg)
    if log_type:
        vendor["type"] = log_type
    if subtype:
        vendor["subtype"] = subtype
    if vendor:
        ev["fortinet"] = vendor

    if log_type == "utm":
        host, path = get("hostname"), get("url")
        if host or path:
            full = path if path and "://" in path else f"http://{host or ''}{path or ''}"
            ev["url"] = url_object(full)
            if host is not None:
                section(ev, "destination")["domain"] = host
        method = get("reqtype")
        if method is not None and method != "direct":
            ev["http"] = {"request": {"method": method}}
    return [ev]


# --- iptables / nftables ----------------------------------------------------

_IPT_HEAD_RE = re.compile(
    r"(?:<(\d{1,3})>)?(?:\d+ )?"
    r"((?:[A-Z][a-z]{2}\s+\d{1,2}(?:\s+\d{4})?\s+\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?)"
    r"|(?:\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:?\d{2})?))\s+"
)
# The first "IN=" followed by an OUT= field: the kernel writes the log prefix
# right before it, with or without a blank ("DROP IN=", "FW-DROPIN=").
_IPT_IN_RE = re.compile(r"IN=\S*\s+OUT=")
_IPT_UPTIME_RE = re.compile(r"\[\s*\d+\.\d+\]\s*")
_IPT_KV_RE = re.compile(r"([A-Z][A-Z0-9]*)=(\S*)")
# flags are bare upper-case words; matching the blank (no look-behind) lets
# the regex engine jump from blank to blank
_IPT_FLAG_RE = re.compile(r" ([A-Z]{2,4})(?= |$)")
_UBNT_RE = re.compile(r"\[([^\]\s]+)-([^\]\s-]+)-([ADR])\]\s*$")
_UBNT_ACTIONS = {"A": "accept", "D": "drop", "R": "reject"}


def _sniff_iptables(line: str) -> bool:
    return _IPT_IN_RE.search(line) is not None and " SRC=" in line


@register("firewall", "iptables", sniff=_sniff_iptables)
def parse_iptables(raw: str, ctx: ParseContext) -> list[Event]:
    """Linux netfilter LOG/NFLOG lines (iptables and nftables): ``IN= OUT=
    SRC= DST= PROTO= SPT= DPT=``. The log prefix names the decision
    (``DROP_INPUT:``, ``[wan-lan-default-D]`` from Ubiquiti EdgeOS)."""
    # start the regex at the first "IN=" (no match can begin earlier): the
    # syslog header before it is not scanned character by character
    first = raw.find("IN=")
    kv_at = None if first < 0 else _IPT_IN_RE.search(raw, first)
    if kv_at is None:
        raise ParseError("no netfilter 'IN=... OUT=' fields")
    start = kv_at.start()
    head, body = raw[:start], raw[start:]
    h = _IPT_HEAD_RE.match(head)
    if h is not None:
        ts = h.group(2)
        if ts[0].isdigit():
            stamp = parse_iso(ts, ctx.timezone)
        else:
            stamp = parse_monthname(ts, ctx.timezone, ctx.now.date())
        rest = head[h.end() :]
    else:
        stamp = now_stamp(ctx.now)
        rest = head
    # rest: "[host] [kernel:] [[uptime]] [prefix]"
    host = None
    words = rest.split(" ", 1)
    if len(words) == 2 and not words[0].endswith(":") and not words[0].startswith("["):
        host, rest = words[0], words[1]
    if rest.startswith("kernel:"):
        rest = rest[7:]
    rest = _IPT_UPTIME_RE.sub("", rest, count=1).strip()
    # ICMP errors quote the offending packet in [...]: not this packet's fields
    cut = body.find(" [")
    if cut >= 0:
        body = body[:cut]
    kv = dict(_IPT_KV_RE.findall(body))
    flags = _IPT_FLAG_RE.findall(body)
    src, dst = to_ip(kv.get("SRC")), to_ip(kv.get("DST"))
    if src is None and dst is None:
        raise ParseError("netfilter line without a valid SRC or DST address")
    ev = new_event(raw, ctx.source, ctx.format, "Netfilter", "iptables", stamp)
    action = rule_name = rule_id = None
    ingress_zone = egress_zone = None
    ubnt = _UBNT_RE.search(rest)
    if ubnt is not None:
        rule_name, rule_id, letter = ubnt.groups()
        action = _UBNT_ACTIONS[letter]
        if rule_name.count("-") == 1:
            ingress_zone, egress_zone = rule_name.split("-")
    elif rest:
        word = rest.rstrip(": ").split()[-1] if rest.rstrip(": ") else ""
        action = word.lower().strip("[]:") or None
        rule_name = rest.rstrip(": ") or None
    event = ev["event"]
    _decide(event, _verdict(action))
    if action is not None:
        event["action"] = action

    observer = ev["observer"]
    observer["type"] = "firewall"
    if host is not None:
        observer["hostname"] = host
    ingress: dict[str, Any] = {"interface": {"name": kv["IN"]}} if kv.get("IN") else {}
    if ingress_zone is not None:
        ingress["zone"] = ingress_zone
    if ingress:
        observer["ingress"] = ingress
    egress: dict[str, Any] = {"interface": {"name": kv["OUT"]}} if kv.get("OUT") else {}
    if egress_zone is not None:
        egress["zone"] = egress_zone
    if egress:
        observer["egress"] = egress
    rule: dict[str, Any] = {}
    if rule_name is not None:
        rule["name"] = rule_name
    if rule_id is not None:
        rule["id"] = rule_id
    if rule:
        ev["rule"] = rule

    source = endpoint(src, to_port(kv.get("SPT")))
    destination = endpoint(dst, to_port(kv.get("DPT")))
    # MAC= is destination MAC, source MAC, then the ethertype
    mac_parts = kv.get("MAC", "").split(":")
    if len(mac_parts) >= 12:
        destination["mac"] = "-".join(mac_parts[0:6]).upper()
        source["mac"] = "-".join(mac_parts[6:12]).upper()
    if source:
        ev["source"] = source
    if destination:
        ev["destination"] = destination

    network: dict[str, Any] = {}
    proto = kv.get("PROTO")
    if (
        proto == "ICMPv6"
        or proto == "58"
        or (proto and proto.upper() == "ICMP" and src and ":" in src)
    ):
        network["transport"] = "ipv6-icmp"
    else:
        name = transport(proto)
        if name is not None:
            network["transport"] = name
    length = to_int(kv.get("LEN"))
    if length is not None:
        network["bytes"] = length
    if network:
        ev["network"] = network

    ipt: dict[str, Any] = {}
    ttl, packet_id = to_int(kv.get("TTL")), to_int(kv.get("ID"))
    if ttl is not None:
        ipt["ttl"] = ttl
    if packet_id is not None:
        ipt["id"] = packet_id
    if flags:
        ipt["flags"] = flags
    if ipt:
        ev["iptables"] = ipt
    return [ev]


# CEF reaches firewall listeners too (FortiGate, Check Point, Palo Alto CEF
# forwarding): the gateway's reader, registered here so that loading the
# firewall source alone knows it.
register("firewall", "cef", sniff=sniff_cef)(parse_cef)
