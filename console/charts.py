"""Charts (plotly figures) for the console and the report.

Figures are plotly.js figure specs (``{"data": [traces], "layout": {}}``)
built as plain dicts: plotly's Python figure objects validate every
property, which took 50-130 ms for a timeline of 1,500 events on every page
view. They travel as JSON in ``<script type="application/json">`` blocks
that ``static/console.js`` (console) or the report's one inline script hands
to the bundled plotly.js: no inline code per chart, nothing fetched.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from zonewatch.sources import SOURCES

LEVEL_COLOURS = {
    "critical": "#8b0000",
    "high": "#d13438",
    "medium": "#ffaa44",
    "low": "#0078d4",
    "informational": "#8a8886",
}
SOURCE_ROWS = SOURCES
_LAYOUT: dict[str, Any] = {
    "margin": {"l": 60, "r": 20, "t": 30, "b": 40},
    "font": {"family": "sans-serif", "size": 12},
    "paper_bgcolor": "white",
    "plot_bgcolor": "white",
    "height": 320,
}


Figure = dict[str, Any]


def to_json(figure: Figure | None) -> str:
    """The figure as JSON safe inside a script element (no ``</script>``)."""
    if figure is None:
        return ""
    text = orjson.dumps(figure, default=str).decode()
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _figure(data: list[dict[str, Any]], **layout: Any) -> Figure:
    return {"data": data, "layout": {**_LAYOUT, **layout}}


def per_day_figure(rows: Sequence[dict[str, Any]], labels: dict[str, str]) -> Figure | None:
    """Alerts per day, stacked by level."""
    if not rows:
        return None
    days = sorted({r["day"] for r in rows})
    bars = []
    for level, colour in LEVEL_COLOURS.items():
        counts = {r["day"]: r["alerts"] for r in rows if r["level"] == level}
        if counts:
            bars.append(
                {
                    "type": "bar",
                    "name": labels.get(level, level),
                    "x": days,
                    "y": [counts.get(d, 0) for d in days],
                    "marker": {"color": colour},
                }
            )
    return _figure(bars, barmode="stack", xaxis={"type": "category"})


def top_figure(rows: Sequence[dict[str, Any]], label: str, value: str) -> Figure | None:
    """A horizontal bar per row, the largest on top."""
    if not rows:
        return None
    ordered = list(reversed(rows))
    return _figure(
        [
            {
                "type": "bar",
                "x": [r[value] for r in ordered],
                "y": [str(r[label])[:60] for r in ordered],
                "orientation": "h",
                "marker": {
                    "color": [LEVEL_COLOURS.get(r.get("level", ""), "#605e5c") for r in ordered]
                },
            }
        ],
        height=max(220, 26 * len(rows) + 60),
        margin={"l": 360, "r": 20, "t": 10, "b": 30},
    )


def matrix_figure(
    zones: Sequence[str],
    counts: dict[tuple[str, str], int],
    names: dict[str, str],
    axes: tuple[str, str] = ("from", "to"),
) -> Figure:
    """Source x destination zones, coloured by alerts."""
    z = [[counts.get((src, dst), 0) for dst in zones] for src in zones]
    shown = [names.get(zn, zn) for zn in zones]
    return _figure(
        [
            {
                "type": "heatmap",
                "z": z,
                "x": shown,
                "y": shown,
                "colorscale": "Reds",
                "text": [[str(v) if v else "" for v in row] for row in z],
                "texttemplate": "%{text}",
                "hovertemplate": "%{y} → %{x}: %{z}<extra></extra>",
                "showscale": False,
            }
        ],
        height=360,
        yaxis={"autorange": "reversed", "title": {"text": axes[0]}, "automargin": True},
        xaxis={"side": "top", "title": {"text": axes[1]}, "automargin": True},
        margin={"l": 140, "r": 20, "t": 60, "b": 20},
    )


def timeline_figure(
    events: Sequence[dict[str, Any]], alerts: Sequence[dict[str, Any]], tz: ZoneInfo
) -> Figure | None:
    """An entity's events per source and its alerts on one time axis."""
    if not events and not alerts:
        return None
    traces: list[dict[str, Any]] = []
    for source in SOURCE_ROWS:
        mine = [e for e in events if e["source"] == source]
        if mine:
            traces.append(
                {
                    "type": "scatter",
                    "x": [_local(e["time"], tz) for e in mine],
                    "y": [source] * len(mine),
                    "mode": "markers",
                    "name": source,
                    "text": [
                        " ".join(str(v) for v in (e["action"], e["zone_crossing"]) if v)
                        for e in mine
                    ],
                    "hovertemplate": "%{x}<br>%{text}<extra>" + source + "</extra>",
                }
            )
    if alerts:
        traces.append(
            {
                "type": "scatter",
                "x": [_local(a["last_seen"], tz) for a in alerts],
                "y": ["alert"] * len(alerts),
                "mode": "markers",
                "name": "alert",
                "marker": {
                    "symbol": "diamond",
                    "size": 12,
                    "color": [LEVEL_COLOURS.get(a["level"], "#333") for a in alerts],
                },
                "text": [a["rule_title"] for a in alerts],
                "hovertemplate": "%{x}<br>%{text}<extra>alert</extra>",
            }
        )
    return _figure(
        traces,
        yaxis={"categoryorder": "array", "categoryarray": [*SOURCE_ROWS, "alert"]},
        height=300,
    )


def _local(value: datetime, tz: ZoneInfo) -> str:
    """A wall-clock time in ``tz`` without offset: plotly.js shows it as given."""
    return value.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")


def hits_figure(hits: Sequence[dict[str, Any]]) -> Figure | None:
    """Hits per rule per day as a heatmap (rules down, days across)."""
    if not hits:
        return None
    days = sorted({h["day"].strftime("%Y-%m-%d") for h in hits})
    rules = sorted({h["rule_title"] for h in hits})
    counts = {(h["rule_title"], h["day"].strftime("%Y-%m-%d")): h["hits"] for h in hits}
    return _figure(
        [
            {
                "type": "heatmap",
                "z": [[counts.get((r, d), 0) for d in days] for r in rules],
                "x": days,
                "y": [r[:60] for r in rules],
                "colorscale": "Blues",
                "hovertemplate": "%{y}<br>%{x}: %{z}<extra></extra>",
            }
        ],
        height=max(260, 22 * len(rules) + 80),
        margin={"l": 380, "r": 20, "t": 10, "b": 40},
        xaxis={"type": "category"},
    )
