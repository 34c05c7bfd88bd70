"""``vdi/avd``: Azure Virtual Desktop ``WVDConnections`` rows, one connection per
``CorrelationId``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from connectors.base import ParseContext, register
from connectors.jsonrecords import loads, slug, unwrap
from connectors.vdi.common import SOURCE, _base, _ci, _put, _set_action, _split_hostport, parse_iso
from zonewatch.errors import ParseError

# --- Azure Virtual Desktop ------------------------------------------------------------------

_AVD_ACTIONS = {"started": "vdi-login", "connected": "vdi-connect", "completed": "vdi-disconnect"}
_AVD_POOL_RE = re.compile(r"/hostpools/([^/]+)", re.I)
# Connections still open, and ones recently completed (so a Completed row
# exported twice, or a late row of a finished connection, is still seen as
# a repeat). Both are bounded, oldest forgotten first, and both travel in
# every checkpoint: a finished connection must not stay in the open map, or
# the state (and each checkpoint) grows with the length of the log.
_AVD_MAX_OPEN = 100_000
_AVD_MAX_DONE = 4096
_AVD_OPEN = "avd.connections"
_AVD_DONE = "avd.completed"


def _avd_row(rec: dict[str, Any]) -> dict[str, Any]:
    """Log Analytics row or Event Hub record -> one case-insensitive field dict."""
    props = rec.get("properties")
    if isinstance(props, dict):
        return _ci({**rec, **props})
    return _ci(rec)


def _avd_seen(ctx: ParseContext, corr: str, key: str, ts: str) -> tuple[str, bool] | None:
    """(time of the connection's first row, whether it is open) after noting
    ``key``; None when this state of the connection was seen already."""
    state = ctx.state
    open_: dict[str, dict[str, Any]] | None = state.get(_AVD_OPEN)
    if open_ is None:
        open_ = state[_AVD_OPEN] = {}
    done: dict[str, list[str]] | None = state.get(_AVD_DONE)
    if done is None:
        done = state[_AVD_DONE] = {}
    seen = open_.get(corr)
    if seen is None:
        states = done.get(corr)
        if states is not None:  # a row of a connection already completed
            if key in states:
                return None
            states.append(key)
            return ts, False
        if len(open_) >= _AVD_MAX_OPEN:  # oldest first: dicts keep insertion order
            open_.pop(next(iter(open_)))
        seen = open_[corr] = {"first": ts, "states": [key]}
        first = ts
    elif key in seen["states"]:
        return None  # the same transition exported twice
    else:
        seen["states"].append(key)
        first = seen["first"]
    if key == "completed":
        del open_[corr]
        if len(done) >= _AVD_MAX_DONE:
            done.pop(next(iter(done)))
        done[corr] = seen["states"]
    return first, True


def _ns_between(first: str, last: str) -> int:
    a = datetime.fromisoformat(first.replace("Z", "+00:00"))
    b = datetime.fromisoformat(last.replace("Z", "+00:00"))
    return int((b - a).total_seconds() * 1_000_000_000)


# WVDErrors CodeSymbolic words that mean the user could not sign in
_AVD_AUTH_ERRORS = ("NotAuthorized", "Logon", "Password", "Locked", "Credential", "Authentic",
                    "UserAccount", "Mfa", "AccessDenied")  # fmt: skip


def avd_error(f: dict[str, Any], original: str, ctx: ParseContext) -> list[dict[str, Any]]:
    """One WVDErrors row: a failed connection (or feed/management operation)."""
    get = f.get
    when = get("timegenerated") or get("time")
    if not when:
        raise ParseError("WVDErrors row needs TimeGenerated")
    ts = parse_iso(str(when), UTC)
    ev = _base(ts, original, ctx, "Microsoft", "Azure Virtual Desktop")
    symbolic = str(get("codesymbolic") or "")
    activity = str(get("activitytype") or "")
    if activity.lower() == "connection" or not activity:
        auth = any(word.lower() in symbolic.lower() for word in _AVD_AUTH_ERRORS)
        _set_action(ev, "vdi-login-failed" if auth else "vdi-connection-failed")
    else:
        _set_action(ev, slug(f"avd-{activity}-error"))
    ev["event"]["outcome"] = "failure"
    _put(ev, "event", "reason", get("message") or symbolic or None)
    _put(ev, "event", "code", symbolic or (str(get("code")) if get("code") is not None else None))
    _put(ev, "user", "name", get("username"))
    vdi: dict[str, Any] = {}
    corr = get("correlationid")
    if corr:
        vdi["session_id"] = corr
    resource = get("resourceid")
    if resource:
        pool = _avd_pool(str(resource))
        if pool:
            vdi["pool"] = pool
    if get("serviceerror") is not None:
        vdi["service_error"] = get("serviceerror") in (True, "true", "True", 1)
    if vdi:
        ev["vdi"] = vdi
    return [ev]


def avd_event(rec: dict[str, Any], original: str, ctx: ParseContext) -> list[dict[str, Any]]:
    f = _avd_row(rec)
    get = f.get
    if "codesymbolic" in f or get("type") == "WVDErrors":
        return avd_error(f, original, ctx)
    state = str(get("state") or "")
    corr = get("correlationid")
    when = get("timegenerated") or get("time")
    if not state or not corr or not when:
        raise ParseError("WVDConnections row needs State, CorrelationId and TimeGenerated")
    ts = parse_iso(str(when), UTC)
    key = state.lower()
    seen = _avd_seen(ctx, corr, key, ts)
    if seen is None:
        return []
    first, was_open = seen
    ev = _base(ts, original, ctx, "Microsoft", "Azure Virtual Desktop")
    _set_action(ev, _AVD_ACTIONS.get(key) or slug(f"connection-{state}"))
    _put(ev, "user", "name", get("username"))
    client = get("clientsideipaddress")
    if isinstance(client, str) and client:
        _put(ev, "source", "ip", _split_hostport(client)[0])
    _put(ev, "destination", "ip", get("sessionhostipaddress"))
    _put(ev, "host", "name", get("sessionhostname"))
    vdi = ev["vdi"] = {"session_id": corr, "state": state}
    resource = get("resourceid")
    if resource:
        pool = _avd_pool(str(resource))
        if pool:
            vdi["pool"] = pool
    for field, name in _AVD_VDI_FIELDS:
        value = get(name)
        if value is not None and value != "":
            vdi[field] = value
    if key == "completed" and was_open:
        ev["event"]["start"] = first
        ev["event"]["duration"] = _ns_between(first, ts)
    return [ev]


_AVD_VDI_FIELDS = (
    ("connection_type", "connectiontype"),
    ("client_type", "clienttype"),
    ("host_session_id", "sessionhostsessionid"),
    ("reconnect_of", "predecessorconnectionid"),
)


@lru_cache(maxsize=1024)
def _avd_pool(resource: str) -> str | None:
    m = _AVD_POOL_RE.search(resource)
    return m.group(1) if m else None


@register(
    SOURCE,
    "avd",
    "Azure Virtual Desktop WVDConnections and WVDErrors rows (grouped by CorrelationId)",
    sniff=lambda line: (
        "SessionHostName" in line
        or "ClientSideIPAddress" in line
        or ('"CodeSymbolic"' in line and '"CorrelationId"' in line)
    ),
)
def parse_avd(raw: str, ctx: ParseContext) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for rec, original in unwrap(loads(raw), raw):
        out.extend(avd_event(rec, original, ctx))
    return out
