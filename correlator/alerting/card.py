"""Teams cards for alerts: Adaptive Card 1.5 in a Workflows webhook envelope,
plus the legacy MessageCard for destinations that still need it.

Cards are built from the alert and what the sender knows beside it (pure
functions): the locale of the labels, the zones' names, the rule's
description. The size is checked on the encoded envelope, because Teams
rejects messages over 28 KB.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import orjson

from correlator.alerting.labels import (
    Locale,
    ZoneTitles,
    crossing_words,
    label,
    level_words,
    localized_description,
)
from correlator.alerting.text import clean, join_values
from zonewatch.fieldpath import get_field
from zonewatch.models import Alert

JST = ZoneInfo("Asia/Tokyo")
MAX_CARD_BYTES = 27 * 1024  # Teams' limit is 28 KB; leave room for the envelope
ADAPTIVE = "application/vnd.microsoft.card.adaptive"

_LEVEL_COLOR = {
    "critical": "attention",
    "high": "attention",
    "medium": "warning",
    "low": "accent",
    "informational": "default",
}
_RANK = {level: i for i, level in enumerate(_LEVEL_COLOR)}
_LEVEL_HEX = {"critical": "8B0000", "high": "D13438", "medium": "FFAA44", "low": "0078D4"}

# (label, ECS fields tried in order) for the entities an officer acts on
_ENTITIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("user", ("user.name", "source.user.name")),
    ("device", ("host.name", "device.id")),
    ("source_ip", ("source.ip",)),
    ("destination", ("destination.ip", "url.domain", "destination.domain")),
)


def _both_times(value: datetime) -> str:
    jst = value.astimezone(JST).strftime("%Y-%m-%d %H:%M:%S JST")
    utc = value.astimezone(ZoneInfo("UTC")).strftime("%H:%M:%S UTC")
    return f"{jst} ({utc})"


def _distinct(alert: Alert, fields: Sequence[str]) -> list[str]:
    seen: dict[str, None] = {}
    for name in fields:
        value = alert.group.get(name)
        if value not in (None, ""):
            seen.setdefault(str(value), None)
    for ev in alert.evidence:
        for name in fields:
            value = get_field(ev.event, name)
            if value not in (None, "") and not isinstance(value, dict | list):
                seen.setdefault(str(value), None)
                break
    return list(seen)


def alert_link(template: str | None, alert: Alert) -> str | None:
    if not template:
        return None
    return template.format(alert_id=quote(alert.id, safe=""), rule_id=quote(alert.rule_id, safe=""))


def console_link(console_url: str | None, path: str) -> str | None:
    """``<console.public_url>/<path>`` for the "open in console" action."""
    if not console_url or not console_url.startswith(("https://", "http://")):
        return None
    return f"{console_url.rstrip('/')}/{path}"


def _actions(*actions: tuple[str, str | None]) -> list[dict[str, Any]]:
    return [{"type": "Action.OpenUrl", "title": title, "url": url} for title, url in actions if url]


def _attack(alert: Alert, limit: int) -> str | None:
    """The ATT&CK tactics and techniques of the rule's tags, by name."""
    from correlator.detection.mitre_tags import attack_labels

    names = attack_labels(alert.tags)
    return " · ".join(clean(n, limit) for n in names[:8]) if names else None


def query_command(alert: Alert, db_path: str | None = None) -> str:
    """The command that shows the evidence; built from trusted parts only (the
    alert id is a hash, the path comes from settings), so it is not escaped and
    can be copied as is."""
    db = f" --db {db_path}" if db_path else ""
    return f"zonewatch query alert-evidence{db} --param alert_id={alert.id}"


def _facts(
    alert: Alert,
    limit: int,
    evidence_total: int | None,
    locale: Locale,
    zones: ZoneTitles,
) -> list[dict[str, str]]:
    crossing = crossing_words(alert.zone_crossing, zones, locale)
    facts = [
        {"title": label("level", locale), "value": clean(level_words(alert.level, locale), 30)},
        {"title": label("crossing", locale), "value": clean(crossing or "-", 120)},
    ]
    more = label("more", locale)
    for key, fields in _ENTITIES:
        values = _distinct(alert, fields)
        if values:
            facts.append(
                {"title": label(key, locale), "value": join_values(values, 3, limit, more)}
            )
    for key, value in list(alert.group.items())[:5]:
        facts.append(
            {"title": f"{label('group', locale)}: {clean(key, 40)}", "value": clean(value, limit)}
        )
    attack = _attack(alert, limit)
    if attack:
        facts.append({"title": label("attack", locale), "value": attack})
    facts += [
        {"title": label("first_seen", locale), "value": _both_times(alert.first_seen)},
        {"title": label("last_seen", locale), "value": _both_times(alert.last_seen)},
        {
            "title": label("evidence_count", locale),
            "value": str(evidence_total if evidence_total is not None else len(alert.evidence)),
        },
        {"title": label("rule", locale), "value": clean(alert.rule_id, 80)},
        {"title": label("type", locale), "value": clean(f"{alert.type} ({alert.origin})", 60)},
    ]
    if alert.late:
        facts.append({"title": label("late", locale), "value": label("late_value", locale)})
    return facts


def _evidence_lines(alert: Alert, count: int, limit: int) -> list[dict[str, Any]]:
    lines = []
    for ev in alert.evidence[:count]:
        e = ev.event
        parts = [
            ev.time.astimezone(JST).strftime("%m-%d %H:%M:%S"),
            get_field(e, "event.dataset") or ev.topic or "",
            get_field(e, "event.action") or "",
            get_field(e, "user.name") or "",
            get_field(e, "url.full") or get_field(e, "destination.ip") or "",
        ]
        text = " · ".join(clean(p, limit) for p in parts if p not in (None, ""))
        lines.append({"type": "TextBlock", "text": text, "wrap": True, "size": "Small"})
    return lines


def _adaptive(
    alert: Alert,
    link: str | None,
    console: str | None,
    db_path: str | None,
    evidence: int,
    limit: int,
    evidence_total: int | None,
    words: _Words,
) -> dict[str, Any]:
    locale = words.locale
    title = f"[{alert.level.upper()}] {clean(alert.rule_title, 150)}"
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": title,
            "weight": "bolder",
            "size": "medium",
            "wrap": True,
            "color": _LEVEL_COLOR.get(alert.level, "default"),
        }
    ]
    description = localized_description(words.description, locale)
    if description:
        body.append({"type": "TextBlock", "text": clean(description, limit * 3), "wrap": True})
    body.append(
        {
            "type": "FactSet",
            "facts": _facts(alert, limit, evidence_total, locale, words.zones),
        }
    )
    if evidence:
        body.append(
            {
                "type": "TextBlock",
                "text": label("evidence", locale),
                "weight": "bolder",
                "wrap": True,
            }
        )
        body += _evidence_lines(alert, evidence, limit)
        total = evidence_total if evidence_total is not None else len(alert.evidence)
        hidden = total - min(evidence, len(alert.evidence))
        if hidden > 0:
            body.append(
                {"type": "TextBlock", "text": label("more", locale, n=hidden), "isSubtle": True}
            )
    body.append(
        {
            "type": "TextBlock",
            "text": query_command(alert, db_path),
            "fontType": "monospace",
            "wrap": True,
        }
    )
    card: dict[str, Any] = {
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": "1.5",
        "lang": locale,
        "fallbackText": clean(f"{alert.level}: {alert.rule_title}", 200),
        "body": body,
    }
    actions = _actions((label("open", locale), link), (label("open_console", locale), console))
    if actions:
        card["actions"] = actions
    return card


@dataclass(frozen=True)
class _Words:
    locale: Locale = "ja"
    zones: ZoneTitles = field(default_factory=dict)
    description: str | None = None


def envelope(card: dict[str, Any]) -> dict[str, Any]:
    """The Workflows webhook message that carries one Adaptive Card."""
    return {
        "type": "message",
        "attachments": [{"contentType": ADAPTIVE, "contentUrl": None, "content": card}],
    }


def _fit(build: Any) -> dict[str, Any]:
    # Shrink evidence first, then per-value length, until the message fits.
    for evidence, limit in ((5, 200), (3, 120), (1, 80), (0, 60), (0, 30)):
        message = build(evidence, limit)
        if len(orjson.dumps(message)) <= MAX_CARD_BYTES:
            return message
    return message


def teams_card(
    alert: Alert,
    *,
    link_template: str | None = None,
    db_path: str | None = None,
    evidence_total: int | None = None,
    console_url: str | None = None,
    locale: Locale = "ja",
    zones: ZoneTitles | None = None,
    description: str | None = None,
) -> dict[str, Any]:
    """Workflows webhook envelope with the alert's Adaptive Card (≤ 27 KB).

    ``evidence_total`` is the alert's full evidence count when ``alert``
    carries only the first few evidence events (as read back from the store).
    ``console_url`` (``console.public_url``) adds an "open in console" action.
    ``locale`` picks the labels and the lines of the rule's ``description``
    shown; ``zones`` (``ZonePolicy.titles()``) names the zones crossed.
    """
    link = alert_link(link_template, alert)
    console = console_link(console_url, f"alerts/{quote(alert.id, safe='')}")
    words = _Words(locale, zones or {}, description)
    return _fit(
        lambda ev, limit: envelope(
            _adaptive(alert, link, console, db_path, ev, limit, evidence_total, words)
        )
    )


def digest_card(
    alerts: Sequence[Alert],
    *,
    link_template: str | None = None,
    db_path: str | None = None,
    console_url: str | None = None,
    locale: Locale = "ja",
    zones: ZoneTitles | None = None,
) -> dict[str, Any]:
    """One card summarising a burst of alerts (digest mode); the console
    action opens the list of new alerts."""
    zones = zones or {}

    def build(_evidence: int, limit: int) -> dict[str, Any]:
        shown = alerts[: max(5, limit // 4)]
        levels: dict[str, int] = {}
        for a in alerts:
            levels[a.level] = levels.get(a.level, 0) + 1
        summary = ", ".join(f"{level_words(k, locale)} {v}" for k, v in sorted(levels.items()))
        worst = min(alerts, key=lambda a: _RANK.get(a.level, len(_RANK)), default=None)
        body: list[dict[str, Any]] = [
            {
                "type": "TextBlock",
                "text": label("digest", locale, n=len(alerts), summary=summary),
                "weight": "bolder",
                "size": "medium",
                "wrap": True,
                "color": _LEVEL_COLOR.get(worst.level if worst else "", "default"),
            }
        ]
        facts = []
        more = label("more", locale)
        for a in shown:
            who = join_values(_distinct(a, ("user.name", "host.name", "source.ip")), 2, 40, more)
            words = crossing_words(a.zone_crossing, zones, locale)
            crossing = f" {clean(words, 80)}" if words else ""
            facts.append(
                {
                    "title": a.first_seen.astimezone(JST).strftime("%m-%d %H:%M JST"),
                    "value": f"[{a.level}] {clean(a.rule_title, limit)}{crossing} {who}".strip(),
                }
            )
        body.append({"type": "FactSet", "facts": facts})
        if len(alerts) > len(shown):
            body.append(
                {"type": "TextBlock", "text": label("more", locale, n=len(alerts) - len(shown))}
            )
        first = alerts[0]
        body.append(
            {
                "type": "TextBlock",
                "text": "zonewatch query recent-alerts"
                + (f" --db {db_path}" if db_path else "")
                + f" --since {first.first_seen.isoformat()}",
                "fontType": "monospace",
                "wrap": True,
            }
        )
        card: dict[str, Any] = {
            "type": "AdaptiveCard",
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "version": "1.5",
            "lang": locale,
            "fallbackText": f"zonewatch: {len(alerts)} alerts",
            "body": body,
        }
        actions = _actions(
            (label("first_alert", locale), alert_link(link_template, first)),
            (label("open_console", locale), console_link(console_url, "alerts?status=new")),
        )
        if actions:
            card["actions"] = actions
        return envelope(card)

    return _fit(build)


def message_card(
    alert: Alert,
    *,
    link_template: str | None = None,
    evidence_total: int | None = None,
    console_url: str | None = None,
    locale: Locale = "ja",
    zones: ZoneTitles | None = None,
    description: str | None = None,
) -> dict[str, Any]:
    """Legacy Office 365 connector MessageCard, for destinations still on it."""
    link = alert_link(link_template, alert)
    console = console_link(console_url, f"alerts/{quote(alert.id, safe='')}")
    text = localized_description(description, locale)
    section: dict[str, Any] = {
        "facts": [
            {"name": f["title"], "value": f["value"]}
            for f in _facts(alert, 120, evidence_total, locale, zones or {})
        ],
        "text": query_command(alert),
    }
    if text:
        section["activityText"] = clean(text, 600)
    card: dict[str, Any] = {
        "@type": "MessageCard",
        "@context": "https://schema.org/extensions",
        "summary": clean(f"{alert.level}: {alert.rule_title}", 150),
        "themeColor": _LEVEL_HEX.get(alert.level, "808080"),
        "title": f"[{alert.level.upper()}] {clean(alert.rule_title, 150)}",
        "sections": [section],
    }
    opens = [
        {"@type": "OpenUri", "name": name, "targets": [{"os": "default", "uri": uri}]}
        for name, uri in (
            (label("open", locale), link),
            (label("open_console", locale), console),
        )
        if uri
    ]
    if opens:
        card["potentialAction"] = opens
    return card
