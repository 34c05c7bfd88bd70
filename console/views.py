"""What each console page shows, read from the store (no HTTP here).

Each function takes a :class:`console.data.Reader` and plain values and
returns the context its template renders; the report reuses them.
"""

from __future__ import annotations

import functools
import math
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import yaml
from jinja2 import Environment, FileSystemLoader, select_autoescape

from console import queries as q
from console.data import Reader
from console.queries import AlertFilter, TimeRange
from zonewatch.zones import ZonePolicy


@dataclass(frozen=True)
class Cell:
    src: str
    dst: str
    alerts: int
    traffic: int
    worst: str | None
    allowed: bool  # an allowed flow of zones.yaml covers (some of) this crossing
    heat: int  # 0..5, the colour class

    @property
    def crossing(self) -> str:
        return f"{self.src}->{self.dst}"


def _heat(count: int, most: int) -> int:
    if count <= 0:
        return 0
    if most <= 1:
        return 5
    return max(1, min(5, 1 + round(4 * math.log(count) / math.log(most))))


class AlertsCache:
    """Results that depend on the alerts alone (not on their triage), kept
    until alerts are added: the matrix's role breakdown (it reads every
    evidence event's JSON in the range, a few hundred ms for 100k alerts)
    and the filter choices of the alert list.

    Alerts are only ever added (their triage columns aside), so the count
    and newest ingest time of ``alerts`` say whether a kept result still
    holds; that check costs about a millisecond."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._data: OrderedDict[tuple[Any, ...], list[dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()

    def rows(
        self, reader: Reader, sql: str, params: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        marker = reader.rows(q.ALERTS_MARKER)[0]
        key = (marker["n"], marker["newest"], sql, tuple(sorted((params or {}).items())))
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        found = reader.rows(sql, params)
        with self._lock:
            self._data[key] = found
            while len(self._data) > self.size:
                self._data.popitem(last=False)
        return found


def matrix(
    reader: Reader, policy: ZonePolicy, window: TimeRange, cache: AlertsCache | None = None
) -> dict[str, Any]:
    """Zones of zones.yaml as source x destination, with alerts and allowed
    traffic per crossing; VDI pools and other roles below, by alerts whose
    evidence has them at one end."""
    params = window.params()
    alerts = {r["zone_crossing"]: r for r in reader.rows(q.MATRIX_ALERTS, params)}
    traffic = {r["zone_crossing"]: r["events"] for r in reader.rows(q.MATRIX_TRAFFIC, params)}
    zones = [*policy.zones, "unknown"]
    flows = {(f.src, f.dst) for f in policy.flows}
    most = max((r["alerts"] for r in alerts.values()), default=0)
    rows = []
    for src in zones:
        cells = []
        for dst in zones:
            crossing = f"{src}->{dst}"
            found = alerts.get(crossing)
            count = int(found["alerts"]) if found else 0
            worst = q.LEVELS[int(found["worst"])] if found else None
            cells.append(
                Cell(
                    src,
                    dst,
                    count,
                    int(traffic.get(crossing, 0)),
                    worst,
                    (src, dst) in flows,
                    _heat(count, most),
                )
            )
        rows.append((src, cells))
    roles = []
    by_role: dict[str, dict[str, int]] = {}
    role_rows = (
        cache.rows(reader, q.MATRIX_ROLES, params) if cache else reader.rows(q.MATRIX_ROLES, params)
    )
    for r in role_rows:
        key = f"{r['role']}|{r['side']}"
        by_role.setdefault(key, {})[r["zone"]] = int(r["alerts"])
    for name, role in policy.roles.items():
        for side in ("source", "destination"):
            counts = by_role.get(f"{name}|{side}", {})
            roles.append(
                {
                    "name": name,
                    "zone": role.zone,
                    "kind": role.kind,
                    "target": role.target_zone,
                    "side": side,
                    "cells": [(z, counts.get(z, 0), _heat(counts.get(z, 0), most)) for z in zones],
                    "total": sum(counts.values()),
                }
            )
    roles.sort(key=lambda r: (r["kind"] != "vdi_pool", r["name"], r["side"] != "source"))
    titles = policy.titles()
    titles["unknown"] = ("不明", "unknown")
    return {"zones": zones, "rows": rows, "roles": roles, "titles": titles, "most": most}


def alert_list(
    reader: Reader, flt: AlertFilter, window: TimeRange, cache: AlertsCache | None = None
) -> dict[str, Any]:
    page_sql, count_sql, params = flt.list_sql(window)
    alerts = reader.rows(page_sql, params)
    if count_sql is None:  # the total came with the page
        total = int(alerts[0]["total"]) if alerts else 0
        alerts = [a for a in alerts if a["id"] is not None]
    else:
        count_params = {k: v for k, v in params.items() if k not in ("limit", "offset")}
        total = int(reader.value(count_sql, count_params) or 0)
    ids = [a["id"] for a in alerts]
    entities = {r["alert_id"]: r for r in reader.rows(q.ENTITIES_OF, {"ids": ids})} if ids else {}
    for a in alerts:
        found = entities.get(a["id"], {})
        a["users"] = found.get("users") or []
        a["devices"] = found.get("devices") or []
    choices: dict[str, list[tuple[str, str]]] = {"rule": [], "crossing": [], "tag": []}
    for r in cache.rows(reader, q.FILTER_CHOICES) if cache else reader.rows(q.FILTER_CHOICES):
        choices[r["kind"]].append((r["value"], r["label"]))
    pages = max(1, math.ceil(total / q.PAGE_SIZE))
    return {"alerts": alerts, "total": total, "pages": pages, "choices": choices}


def split_description(text: str | None) -> tuple[str, str]:
    """(Japanese, English) lines of a rule description that mixes both."""
    ja: list[str] = []
    en: list[str] = []
    for line in (text or "").splitlines():
        if not line.strip():
            continue
        (ja if any("\u3040" <= ch <= "\u9fff" for ch in line) else en).append(line.strip())
    return "".join(ja), " ".join(en)


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.lru_cache(maxsize=4096)
def _rule_yaml(text: str | None) -> dict[str, Any]:
    """The first mapping of a stored rule text (texts never change: cached;
    callers must not modify the result)."""
    if not text:
        return {}
    try:
        docs = [d for d in yaml.load_all(text, Loader=_YAML_LOADER) if isinstance(d, dict)]
    except yaml.YAMLError:
        return {}
    return docs[0] if docs else {}


def flatten(event: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """An event's fields as sorted (dotted name, value) pairs, raw line aside."""
    out: list[tuple[str, str]] = []
    for key, value in event.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.extend(flatten(value, f"{name}."))
        elif name != "event.original":
            shown = value if isinstance(value, str) else orjson.dumps(value).decode()
            out.append((name, shown))
    return sorted(out)


def alert_detail(reader: Reader, alert_id: str, evidence_limit: int = 500) -> dict[str, Any] | None:
    found = reader.rows(q.ALERT, {"id": alert_id})
    if not found:
        return None
    alert = found[0]
    alert["group"] = orjson.loads(alert["group_values"]) if alert.get("group_values") else {}
    rule = _rule_yaml(alert.get("rule_text"))
    ja, en = split_description(rule.get("description"))
    evidence = []
    for row in reader.rows(q.EVIDENCE, {"id": alert_id, "limit": evidence_limit}):
        event = orjson.loads(row["event"]) if isinstance(row["event"], str) else row["event"] or {}
        original = (event.get("event") or {}).get("original")
        evidence.append({**row, "original": original, "fields": flatten(event)})
    history = reader.rows(q.HISTORY, {"id": alert_id})
    return {
        "alert": alert,
        "description_ja": ja,
        "description_en": en,
        "rule_meta": rule,
        "evidence": evidence,
        "history": history,
    }


def timeline(
    reader: Reader, kind: str, name: str, window: TimeRange, limit: int = 2000
) -> dict[str, Any]:
    params = {**window.params(), "name": name, "limit": limit}
    events = reader.rows(q.TIMELINE_EVENTS.format(who=q.TIMELINE_WHO[kind]), params)
    alerts = reader.rows(q.TIMELINE_ALERTS.format(who=q.TIMELINE_ALERT_WHO[kind]), params)
    return {"events": events, "alerts": alerts, "limit": limit}


def health(reader: Reader, window: TimeRange, tz: ZoneInfo) -> dict[str, Any]:
    hits = reader.rows(q.HITS_PER_DAY, {**window.params(), "tz": str(tz.key)})
    never = reader.rows(q.NEVER_FIRED)
    # Sigma: a rule a correlation refers to raises no alert of its own,
    # unless a correlation referring to it says ``generate: true``.
    silenced: set[str] = set()
    generating: set[str] = set()
    for row in reader.rows(q.CORRELATION_TEXTS):
        correlation = _rule_yaml(row["text"]).get("correlation")
        if isinstance(correlation, dict):
            names = {str(r) for r in correlation.get("rules") or []}
            (generating if correlation.get("generate") is True else silenced).update(names)
    for rule in never:
        names = {rule["rule_id"], str(_rule_yaml(rule.pop("text")).get("name"))}
        rule["building_block"] = bool(names & silenced) and not names & generating
    return {"hits": hits, "never": never}


def when(value: datetime | None, tz: ZoneInfo, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    return value.astimezone(tz).strftime(fmt) if value else ""


def templates(tz: ZoneInfo, time_format: str = "%Y-%m-%d %H:%M:%S") -> Environment:
    """The Jinja2 environment of the console's and the report's templates:
    autoescaped, with ``when`` (a time in the display zone)."""
    env = Environment(
        loader=FileSystemLoader(Path(__file__).resolve().parent / "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = lambda v, fmt=time_format: when(v, tz, fmt)
    return env
