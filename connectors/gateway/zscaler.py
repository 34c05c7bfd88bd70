"""``gateway/zscaler``: Zscaler NSS web logs: JSON, name=value or LEEF feed templates."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

import orjson

from connectors.base import ParseContext, register
from connectors.ecs import (
    Event,
    endpoint,
    new_event,
    to_int,
    to_ip,
    to_port,
    url_object,
)
from connectors.outcomes import (
    UNKNOWN,
    ZSCALER,
)
from connectors.timeparse import (
    parse_epoch,
    parse_timestamp,
    zone_for,
)
from zonewatch.errors import ParseError

# --- Zscaler NSS web --------------------------------------------------------

# An NSS feed's output format is written by the administrator: JSON with the
# NSS variable names (Zscaler's JSON template, Cloud NSS), name=value pairs
# with the SIEM's own names (Zscaler's Splunk template: datetime=, ClientIP=,
# user=, requestsize=...), or LEEF for QRadar. Every spelling is mapped to the
# NSS variable it carries, then one reader fills ECS from those.
_ZS_ALIASES = {
    # Splunk template names (Zscaler's "Splunk" NSS feed output format)
    "datetime": "time",
    "protocol": "proto",
    "url": "eurl",
    "hostname": "host",
    "user": "login",
    "clientip": "cintip",  # the client's own (internal) address in that template
    "clientpublicip": "cip",  # the address the client came from on the Internet
    "serverip": "sip",
    "requestsize": "reqsize",
    "responsesize": "respsize",
    "transactionsize": "totalsize",
    "requestmethod": "reqmethod",
    "refererurl": "referer",
    "useragent": "ua",
    "status": "respcode",
    "urlcategory": "urlcat",
    "urlsupercategory": "urlsupercat",
    "department": "dept",
    "threatcategory": "malwarecat",
    "event_id": "recordid",
    # LEEF names (Zscaler's QRadar template)
    "usrname": "login",
    "src": "cip",
    "srcpostnat": "cintip",
    "dst": "sip",
    "srcbytes": "reqsize",
    "dstbytes": "respsize",
    "cat": "action",
    "devtime": "time",
    "policy": "rulelabel",
}
# every spelling of the aliases: as the templates write them and lower-cased
_ZS_SPELLINGS = {
    **_ZS_ALIASES,
    **{
        spelling: _ZS_ALIASES[spelling.lower()]
        for spelling in ("ClientIP", "clientpublicIP", "refererURL", "usrName", "srcPostNAT",
                         "srcBytes", "dstBytes", "devTime", "Datetime", "URL", "User",
                         "ClientPublicIP", "ServerIP", "UserAgent", "Status")
    },
}  # fmt: skip
_ZS_KV_RE = re.compile(r"(?:^|\t|\s)([A-Za-z][A-Za-z0-9_]*)=")
_ZS_LEADING_TIME_RE = re.compile(r"(\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2})\s*$")
_ZS_STATUS_RE = re.compile(r"\d{3}")


def _sniff_zscaler(line: str) -> bool:
    if "CEF:" in line[:300]:
        return False  # a CEF line from a Zscaler feed is CEF's to read
    if line.lstrip().startswith("{"):
        return '"zscalernss-web"' in line or '"eurl"' in line or '"urlsupercat"' in line
    return (
        "|Zscaler|NSS" in line
        or "vendor=Zscaler" in line
        or ("urlcategory=" in line and ("ClientIP=" in line or "clientpublicIP=" in line))
    )


def _b64(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return base64.b64decode(value + "=" * (-len(value) % 4), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


# Zscaler's own "no value" words, on top of the common ones
_ZS_EMPTY = frozenset({"", "None", "NA", "N/A"})
# NSS keys copied as they are: (NSS key, ECS field in the zscaler object)
_ZS_VENDOR = (
    ("action", "action"),
    ("urlcat", "url_category"),
    ("urlsupercat", "url_super_category"),
    ("appname", "app_name"),
    ("threatname", "threat_name"),
    ("dept", "department"),
    ("location", "location"),
    ("reason", "reason"),
)


def _zscaler_values(ev: dict[str, Any]) -> dict[str, str]:
    """The record's scalar values as text under their NSS names, Zscaler's
    empty markers dropped."""
    out: dict[str, str] = {}
    for key, value in ev.items():
        if type(value) is not str:
            if value is None or isinstance(value, dict | list):
                continue
            value = str(value)
        if value not in _ZS_EMPTY:
            out[key] = value
    if not _ZS_SPELLINGS.keys().isdisjoint(out):  # a template with its own names
        for key in [k for k in out if k in _ZS_SPELLINGS]:
            out.setdefault(_ZS_SPELLINGS[key], out.pop(key))
    return out


def _zscaler_pairs(text_: str) -> dict[str, str]:
    """``name=value`` pairs separated by tabs (or blanks, when no tab is there);
    values may hold blanks."""
    parts = _ZS_KV_RE.split(text_)
    pairs: dict[str, str] = {}
    for key, value in zip(parts[1::2], parts[2::2], strict=True):
        pairs[key] = value.strip()
    if parts[0].strip():
        lead = _ZS_LEADING_TIME_RE.search(parts[0])
        if lead is not None:  # the Splunk template's first field: the date and time
            pairs.setdefault("datetime", lead.group(1))
    return pairs


def _zscaler_record(raw: str) -> dict[str, str]:
    body = raw if raw[:1] not in (" ", "\t") else raw.lstrip()
    if body.startswith("{"):
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ParseError(f"not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise ParseError("Zscaler record is not a JSON object")
        record = doc.get("event", doc)
        if not isinstance(record, dict):
            raise ParseError("Zscaler 'event' is not an object")
        return _zscaler_values(record)
    if body.startswith('"'):
        raise ParseError(
            "a positional NSS feed (quoted values without names): give the feed a JSON or "
            "name=value output format so each value can be told by its name"
        )
    leef = body.find("LEEF:")
    if leef >= 0:
        head = body[leef:].split("|", 5)
        if len(head) < 6:
            raise ParseError("LEEF header needs 5 '|'-separated fields after 'LEEF:'")
        ext = head[5]
        if head[0].startswith("LEEF:2") and "|" in ext:
            # LEEF 2.0: the sixth header field names the delimiter
            delimiter, _, ext = ext.partition("|")
            if delimiter and delimiter not in ("\t", "x09", "^"):
                ext = ext.replace(delimiter, "\t")
        pairs = _zscaler_pairs(ext)
    else:
        pairs = _zscaler_pairs(body)
    if not pairs:
        raise ParseError("no Zscaler NSS name=value fields")
    return _zscaler_values(pairs)


def _zscaler_link(link: str, proto: str | None) -> str:
    """NSS writes URLs without a scheme; pick it from the port or protocol."""
    if "://" in link:
        return link
    proto_up = (proto or "").upper()
    if link.split("/", 1)[0].endswith(":443") or proto_up.startswith("HTTPS"):
        return f"https://{link}"
    if proto_up.startswith("FTP"):
        return f"ftp://{link}"
    return f"http://{link}"


@register("gateway", "zscaler", sniff=_sniff_zscaler)
def parse_zscaler(raw: str, ctx: ParseContext) -> list[Event]:
    """Zscaler Internet Access NSS web log: JSON (``{"sourcetype":
    "zscalernss-web", "event": {...}}`` or the bare object), name=value
    (the Splunk template and other administrator-defined templates) or LEEF.
    Fields are read by name, whatever the template's order."""
    if raw[:1] == "{":  # the JSON feeds, without a detour
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ParseError(f"not JSON: {exc}") from exc
        record = doc.get("event", doc) if isinstance(doc, dict) else None
        if not isinstance(record, dict):
            raise ParseError("Zscaler record is not a JSON object")
        v = _zscaler_values(record)
    else:
        v = _zscaler_record(raw)
    get = v.get

    epoch = get("epochtime")
    if epoch is not None:
        stamp = parse_epoch(epoch)
    else:
        when = get("time")
        if when is None:
            raise ParseError("Zscaler record has no time (time, datetime, devTime or epochtime)")
        zone = get("tz")
        stamp = parse_timestamp(when, zone_for(zone) if zone else ctx.timezone, ctx.now)
    ev = new_event(raw, ctx.source, ctx.format, "Zscaler", "Internet Access", stamp)
    event = ev["event"]
    action = get("action", "").lower()
    verdict = ZSCALER.get(action, UNKNOWN)
    event["category"] = ["network", "web"]
    event["outcome"] = verdict.outcome
    event["type"] = ["access", verdict.type] if verdict.type else ["access"]
    if action:
        event["action"] = action
    if "reason" in v and v["reason"].lower() != action:
        event["reason"] = v["reason"]

    proto = get("proto")
    link = get("eurl") or _b64(get("b64url"))
    url = None
    if link:
        url = ev["url"] = url_object(_zscaler_link(link, proto))

    reqsize, respsize = to_int(get("reqsize")), to_int(get("respsize"))
    source: dict[str, Any] = {}
    internal = to_ip(get("cintip") or get("cltintip"))
    public = to_ip(get("cip") or get("cltip"))
    # the internal address decides the zone; the public one is the NAT
    if internal is not None:
        source["ip"] = internal
        if public is not None and public != internal:
            source["nat"] = {"ip": public}
    elif public is not None:
        source["ip"] = public
    port = to_port(get("cltsourceport"))
    if port is not None:
        source["port"] = port
    if "deviceowner" in v:
        source["user"] = {"name": v["deviceowner"]}
    if reqsize is not None:
        source["bytes"] = reqsize
    if source:
        ev["source"] = source

    destination = endpoint(
        to_ip(get("sip")),
        octets=respsize,
        domain=get("host") or get("ehost") or (url.get("domain") if url else None),
    )
    if destination:
        ev["destination"] = destination

    login = get("login")
    if login is not None:
        ev["user"] = {"name": login, "email": login} if "@" in login else {"name": login}
    if "devicehostname" in v:
        ev["host"] = {"name": v["devicehostname"]}
    if proto is not None:
        ev["network"] = {"protocol": proto.lower()}

    request: dict[str, Any] = {}
    if "reqmethod" in v:
        request["method"] = v["reqmethod"]
    if reqsize is not None:
        request["bytes"] = reqsize
    referrer = get("ereferer") or get("referer") or _b64(get("b64referer"))
    if referrer:
        request["referrer"] = referrer
    response: dict[str, Any] = {}
    code = get("respcode")
    status = to_int(code if code is None or code.isdecimal() else _first_number(code))
    if status:
        response["status_code"] = status
    if respsize is not None:
        response["bytes"] = respsize
    if request or response:
        http = ev["http"] = {}
        if request:
            http["request"] = request
        if response:
            http["response"] = response

    agent = get("ua") or get("eua")
    if agent:
        ev["user_agent"] = {"original": agent}
    rule: dict[str, Any] = {}
    if "rulelabel" in v:
        rule["name"] = v["rulelabel"]
    if "ruletype" in v:
        rule["ruleset"] = v["ruletype"]
    if rule:
        ev["rule"] = rule
    vendor = {name: v[key] for key, name in _ZS_VENDOR if key in v}
    if vendor:
        ev["zscaler"] = vendor
    return [ev]


def _first_number(text_: str) -> str | None:
    """``200 - OK`` -> ``200`` (some templates write the status with its text)."""
    m = _ZS_STATUS_RE.match(text_)
    return m.group(0) if m else None
