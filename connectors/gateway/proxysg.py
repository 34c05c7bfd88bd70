"""``gateway/proxysg``: Symantec/Broadcom ProxySG access logs in W3C ELFF."""

from __future__ import annotations

import re
from datetime import UTC
from typing import Any

from connectors.base import ParseContext, register
from connectors.ecs import (
    EMPTY,
    Event,
    endpoint,
    new_event,
    scaled,
    section,
    to_int,
    to_ip,
    to_port,
    url_object,
)
from connectors.gateway.decision import _decide_web
from connectors.timeparse import (
    parse_iso,
    parse_timestamp,
)
from zonewatch.errors import ParseError

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
