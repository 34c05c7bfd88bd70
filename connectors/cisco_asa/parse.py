"""``firewall/asa``: one Cisco ASA or FTD syslog line -> one ECS event."""

from __future__ import annotations

from connectors.base import ParseContext, register
from connectors.cisco_asa.catalogue import _asa_message
from connectors.cisco_asa.fields import _ASA_TAG_RE, _SEVERITY_NAMES, _asa_head, _sniff_asa
from connectors.ecs import (
    Event,
    new_event,
)
from connectors.timeparse import now_stamp
from zonewatch.errors import ParseError


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
