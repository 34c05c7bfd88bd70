"""What a card says in words, in Japanese or English (``teams.locale``, else
``console.locale``): labels, levels, the zone crossing with the zones' names
from ``rules/zones.yaml``, and the part of a rule's description written in
that language.

Pure: the zone names and the description text are passed in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

import yaml

from zonewatch import bounded_yaml

Locale = Literal["ja", "en"]
# zone id -> (Japanese name, English name), as ZonePolicy.titles() gives them
ZoneTitles = Mapping[str, tuple[str, str]]

_LABELS: dict[str, tuple[str, str]] = {
    "level": ("レベル", "Level"),
    "crossing": ("ゾーン越境", "Zone crossing"),
    "user": ("ユーザー", "User"),
    "device": ("端末", "Device"),
    "source_ip": ("送信元IP", "Source IP"),
    "destination": ("宛先", "Destination"),
    "group": ("グループ", "Group"),
    "first_seen": ("初回", "First seen"),
    "last_seen": ("最終", "Last seen"),
    "evidence_count": ("証拠件数", "Evidence"),
    "rule": ("ルール", "Rule"),
    "type": ("種別", "Type"),
    "late": ("遅延", "Late"),
    "late_value": (
        "遅れて届いたログを含む（ウィンドウ終了後に判定）",
        "includes logs that arrived late (decided after the window)",
    ),
    "attack": ("ATT&CK", "ATT&CK"),
    "evidence": ("証拠", "Evidence"),
    "more": ("(他 {n} 件)", "(+{n} more)"),
    "open": ("アラートを開く", "Open alert"),
    "open_console": ("コンソールで開く", "Open in console"),
    "first_alert": ("最初のアラート", "First alert"),
    "digest": ("zonewatch: {n} 件のアラート ({summary})", "zonewatch: {n} alerts ({summary})"),
    "unknown_zone": ("不明", "unknown"),
}

_LEVELS: dict[str, tuple[str, str]] = {
    "critical": ("重大", "critical"),
    "high": ("高", "high"),
    "medium": ("中", "medium"),
    "low": ("低", "low"),
    "informational": ("情報", "informational"),
}


def label(key: str, locale: Locale, **values: Any) -> str:
    ja, en = _LABELS[key]
    text = ja if locale == "ja" else en
    return text.format(**values) if values else text


def level_words(level: str, locale: Locale) -> str:
    """``high`` -> ``高 (high)`` in Japanese, ``high`` in English."""
    names = _LEVELS.get(level)
    if names is None or locale == "en":
        return level
    return f"{names[0]} ({level})"


def zone_name(zone: str, zones: ZoneTitles, locale: Locale) -> str:
    names = zones.get(zone)
    if names is None:
        return label("unknown_zone", locale) if zone == "unknown" else zone
    return names[0] if locale == "ja" else names[1]


def crossing_words(crossing: str | None, zones: ZoneTitles, locale: Locale) -> str | None:
    """``core->lgwan`` -> ``コア系 → LGWAN接続系 (core->lgwan)``: the zones'
    names, and the crossing as rules and queries spell it."""
    if not crossing:
        return None
    source, arrow, destination = crossing.partition("->")
    if not arrow or (source not in zones and destination not in zones):
        return crossing  # no names known: the ids say as much
    words = f"{zone_name(source, zones, locale)} → {zone_name(destination, zones, locale)}"
    return f"{words} ({crossing})"


# A line is Japanese when it has hiragana or the ideographic full stop: an
# English line may name a Japanese system ("the 中間サーバー relay"), a
# Japanese sentence hardly goes without particles.
_JAPANESE_LINE = re.compile(r"[\u3040-\u309f。]")


def localized_description(description: str | None, locale: Locale) -> str | None:
    """The lines of a rule's description in ``locale`` (our rules write an
    English paragraph and its Japanese translation); the whole description
    when it has no line in that language."""
    if not description or not description.strip():
        return None
    lines = [line.strip() for line in description.splitlines() if line.strip()]
    japanese = [line for line in lines if _JAPANESE_LINE.search(line)]
    if locale == "ja":
        return "".join(japanese) if japanese else " ".join(lines)
    english = [line for line in lines if not _JAPANESE_LINE.search(line)]
    return " ".join(english or lines)


def rule_description(rule_text: str | None) -> str | None:
    """The ``description`` of a rule's YAML text (as the store keeps it)."""
    if not rule_text:
        return None
    try:
        data = bounded_yaml.safe_load(rule_text)
    except yaml.YAMLError:
        return None
    value = data.get("description") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None
