"""Web gateway / proxy formats -> ECS: Squid, Zscaler NSS web, ProxySG ELFF, CEF.

Gateways say "allowed" or "blocked" in their own words (Squid ``TCP_DENIED``,
ProxySG ``DENIED``, Zscaler ``Blocked``); every event here carries
``event.action`` ``allowed``/``blocked`` and ``event.outcome``
``success``/``failure`` so one Sigma condition covers every vendor. The
vendor's own word stays in ``<vendor>.*``. See FIELDS.md for each mapping.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from datetime import UTC
from typing import Any

import orjson

from connectors.base import ParseContext, register
from connectors.ecs import (
    EMPTY,
    Event,
    endpoint,
    new_event,
    put_path,
    scaled,
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
    SQUID_DENIED,
    UNKNOWN,
    ZSCALER,
    apply,
    lookup,
)
from connectors.timeparse import (
    now_stamp,
    parse_clf,
    parse_epoch,
    parse_iso,
    parse_syslog,
    parse_timestamp,
    zone_for,
)
from zonewatch.errors import ParseError


def _decide_web(event: dict[str, Any], blocked: bool) -> None:
    """Set the vendor-neutral allowed/blocked fields on ``event`` (fresh lists
    per event: a later stage may extend them)."""
    event["category"] = ["network", "web"]
    event["action"] = "blocked" if blocked else "allowed"
    event["outcome"] = "failure" if blocked else "success"
    event["type"] = ["access", "denied" if blocked else "allowed"]


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


# --- Symantec/Broadcom ProxySG, W3C ELFF ------------------------------------

# The appliance's default "main" access-log format (bcreportermain_v1), used
# until a #Fields: header says otherwise.
PROXYSG_MAIN_FIELDS: tuple[str, ...] = tuple(
    [
        "date",
        "time",
        "time-taken",
        "c-ip",
        "cs-username",
        "cs-auth-group",
        "x-exception-id",
        "sc-filter-result",
        "cs-categories",
        "cs(Referer)",
        "sc-status",
        "s-action",
        "cs-method",
        "rs(Content-Type)",
        "cs-uri-scheme",
        "cs-host",
        "cs-uri-port",
        "cs-uri-path",
        "cs-uri-query",
        "cs-uri-extension",
        "cs(User-Agent)",
        "s-ip",
        "sc-bytes",
        "cs-bytes",
        "x-virus-id",
    ]
)

# "quoted values", [bracketed times] (localtime holds a blank) and bare words
_ELFF_TOKEN_RE = re.compile(r'"([^"]*)"|(\[[^\]]*\]|\S+)')
_FIELDS_STATE = "proxysg.fields"
_ELFF_DEFAULT_PORT = {"http": 80, "https": 443, "ftp": 21}
# ELFF columns copied as they are: (column, field in the proxysg object)
_PROXYSG_VENDOR = (
    ("s-action", "action"),
    ("cs-categories", "categories"),
    ("x-exception-id", "exception_id"),
    ("x-virus-id", "virus_id"),
)


# W3C extended log file directives (ProxySG writes all of them), and a row of
# the appliance's formats, which all start with the UTC date and time.
_ELFF_DIRECTIVE_RE = re.compile(r"#(?:Software|Version|Date|Fields|Remark|Start-Date|End-Date):")
_ELFF_ROW_RE = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} [^\s=]+(?:\s|$)")


def _sniff_proxysg(line: str) -> bool:
    return _ELFF_DIRECTIVE_RE.match(line) is not None or _ELFF_ROW_RE.match(line) is not None


def _elff_values(raw: str) -> list[str]:
    """An ELFF row's values: space-separated, ``"quoted values"`` and
    ``[bracketed times]`` as one."""
    if "[" in raw:
        return [t or q for q, t in _ELFF_TOKEN_RE.findall(raw)]
    if '"' not in raw:
        return raw.split()
    # Quotes that open and close whole values (the usual case: user agents,
    # categories) split the row into plain and quoted stretches without a
    # regex pass over every character.
    parts = raw.split('"')
    last = len(parts) - 1
    if last % 2 == 0:
        values: list[str] = []
        for i in range(0, last + 1, 2):
            plain = parts[i]
            if plain and (
                (i > 0 and not plain[0].isspace()) or (i < last and not plain[-1].isspace())
            ):
                break  # a quote inside a value: let the tokenizer decide
            values += plain.split()
            if i < last:
                values.append(parts[i + 1])
        else:
            return values
    return [t or q for q, t in _ELFF_TOKEN_RE.findall(raw)]


@register("gateway", "proxysg", sniff=_sniff_proxysg)
def parse_proxysg(raw: str, ctx: ParseContext) -> list[Event]:
    """Symantec/Broadcom ProxySG access log in W3C ELFF. ``#Fields:`` sets the
    column names for the rest of the stream; other ``#`` lines are skipped."""
    if raw.startswith("#"):
        if raw.startswith("#Fields:"):
            header = raw[8:].split()
            if not header:
                raise ParseError("#Fields: header names no fields")
            # a column named twice: the later one wins, as it would in a dict
            ctx.state[_FIELDS_STATE] = tuple(
                "" if name in header[i + 1 :] else name for i, name in enumerate(header)
            )
        return []
    names: tuple[str, ...] = ctx.state.get(_FIELDS_STATE, PROXYSG_MAIN_FIELDS)
    values = _elff_values(raw)
    if len(values) < len(names):
        raise ParseError(
            f"ELFF row has {len(values)} values but #Fields: names {len(names)}; "
            "the header and rows do not match"
        )
    # extra trailing values are ignored; "-" and other empty markers dropped
    row = {n: x for n, x in zip(names, values, strict=False) if x not in EMPTY}
    get = row.get

    day, clock = get("date"), get("time")
    if day and clock:
        # ELFF date/time are UTC by definition (W3C); localtime is the only
        # field in the appliance's zone.
        stamp = parse_iso(f"{day} {clock}", UTC)
    elif "localtime" in row:
        stamp = parse_timestamp(row["localtime"].strip("[]"), ctx.timezone, ctx.now)
    elif "gmttime" in row:
        stamp = parse_timestamp(row["gmttime"].strip("[]"), UTC, ctx.now)
    else:
        raise ParseError("ELFF row has no date/time")
    ev = new_event(raw, ctx.source, ctx.format, "Broadcom", "ProxySG", stamp)
    event = ev["event"]
    filt = get("sc-filter-result", "").upper()
    s_action = get("s-action", "")
    _decide_web(event, filt == "DENIED" or s_action.endswith("DENIED"))
    taken = scaled(to_int(get("time-taken")), 1_000_000)
    if taken is not None:
        event["duration"] = taken

    uri = get("cs-uri")
    scheme = get("cs-uri-scheme", "").lower() or None
    host = get("cs-host") or get("cs-uri-address")
    port = to_port(get("cs-uri-port"))
    path = get("cs-uri-path")
    if uri is None and host:
        hostport = (
            host
            if port is None or _ELFF_DEFAULT_PORT.get(scheme or "") == port
            else f"{host}:{port}"
        )
        uri = f"{scheme or 'http'}://{hostport}{path or ''}{get('cs-uri-query', '')}"
    if uri:
        ev["url"] = url_object(uri)
    # the appliance's own columns win over what the URL text implies
    if port is not None:
        section(ev, "url")["port"] = port
    if path:
        section(ev, "url")["path"] = path

    cs_bytes, sc_bytes = to_int(get("cs-bytes")), to_int(get("sc-bytes"))
    source = endpoint(to_ip(get("c-ip")), to_port(get("c-port")), cs_bytes)
    if source:
        ev["source"] = source
    destination = endpoint(to_ip(get("s-supplier-ip") or get("r-ip")), port, sc_bytes, domain=host)
    if destination:
        ev["destination"] = destination

    observer = ev["observer"]
    appliance = to_ip(get("s-ip"))
    if appliance is not None:
        observer["ip"] = appliance
    if "s-computername" in row:
        observer["hostname"] = row["s-computername"]
    user = get("cs-username") or get("cs-userdn")
    if user:
        ev["user"] = {"name": user}

    request: dict[str, Any] = {}
    if "cs-method" in row:
        request["method"] = row["cs-method"]
    if "cs(Referer)" in row:
        request["referrer"] = row["cs(Referer)"]
    if cs_bytes is not None:
        request["bytes"] = cs_bytes
    response: dict[str, Any] = {}
    status = to_int(get("sc-status"))
    if status:
        response["status_code"] = status
    if sc_bytes is not None:
        response["bytes"] = sc_bytes
    if "rs(Content-Type)" in row:
        response["mime_type"] = row["rs(Content-Type)"]
    if request or response:
        http = ev["http"] = {}
        if request:
            http["request"] = request
        if response:
            http["response"] = response
    if "cs(User-Agent)" in row:
        ev["user_agent"] = {"original": row["cs(User-Agent)"]}

    vendor = {name: row[key] for key, name in _PROXYSG_VENDOR if key in row}
    if filt:
        vendor["filter_result"] = filt
    if vendor:
        ev["proxysg"] = vendor
    return [ev]


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
