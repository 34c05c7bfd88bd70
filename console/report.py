"""``zonewatch report``: one self-contained HTML file for the CISO.

The zone matrix, alerts per day and level, top rules, top users and devices
and the list of alerts with their status, as plotly charts and tables. The
file carries plotly.js and its own CSS inline and a Content-Security-Policy
that allows only its two inline scripts (by hash) and no connection of any
kind, so it opens offline from an e-mail attachment and makes no request.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from markupsafe import Markup

from console import charts, views
from console import queries as q
from console.data import Reader
from console.i18n import translator
from console.queries import TimeRange
from zonewatch.zones import ZonePolicy

HERE = Path(__file__).resolve().parent
MAX_LISTED = 5000

# Hands every figure of the page to plotly (the figures are JSON data blocks).
RENDER_SCRIPT = """
document.querySelectorAll("[data-figure]").forEach(function (el) {
  var f = JSON.parse(document.getElementById(el.getAttribute("data-figure")).textContent);
  Plotly.newPlot(el, f.data, f.layout, {displaylogo: false, displayModeBar: false,
                                         staticPlot: false, responsive: true});
});
"""


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def report_html(
    reader: Reader,
    policy: ZonePolicy,
    window: TimeRange,
    *,
    locale: str = "ja",
    timezone: str = "Asia/Tokyo",
    now: datetime | None = None,
) -> str:
    from console.app import plotly_js_path

    tz = ZoneInfo(timezone)
    t = translator(locale)
    params = window.params()
    matrix = views.matrix(reader, policy, window)
    counts = {(c.src, c.dst): c.alerts for _, cells in matrix["rows"] for c in cells}
    tidx = 0 if locale == "ja" else 1
    names = {z: matrix["titles"][z][tidx] for z in matrix["zones"]}
    per_day = reader.rows(q.PER_DAY_LEVEL, {**params, "tz": timezone})
    top_rules = reader.rows(q.TOP_RULES, params)
    top_entities = reader.rows(q.TOP_ENTITIES, params)
    alerts = reader.rows(q.REPORT_ALERTS, {**params, "limit": MAX_LISTED})
    counts_row = reader.rows(q.REPORT_COUNTS, params)[0]
    total, open_count = int(counts_row["total"]), int(counts_row["open"] or 0)
    labels = {level: t(level) for level in q.LEVELS}
    figures = {
        "fig-matrix": charts.matrix_figure(
            matrix["zones"], counts, names, (t("source_zone"), t("dest_zone"))
        ),
        "fig-days": charts.per_day_figure(per_day, labels),
        "fig-rules": charts.top_figure(top_rules, "rule_title", "alerts"),
        "fig-entities": charts.top_figure(
            [{**e, "label": f"{t(e['kind'])}: {e['name']}"} for e in top_entities],
            "label",
            "alerts",
        ),
    }
    plotly_js = plotly_js_path().read_text(encoding="utf-8")
    csp = (
        "default-src 'none'; "
        f"script-src {_sha256(plotly_js)} {_sha256(RENDER_SCRIPT)}; "
        "style-src 'unsafe-inline'; img-src data:; font-src data:; "
        "connect-src 'none'; form-action 'none'; base-uri 'none'"
    )
    env = views.templates(tz, "%Y-%m-%d %H:%M")
    generated = (now or datetime.now(UTC)).astimezone(tz)
    return env.get_template("report.html").render(
        t=t,
        locale=locale,
        csp=csp,
        css=Markup((HERE / "static" / "report.css").read_text(encoding="utf-8")),
        plotly_js=Markup(plotly_js),
        render_script=Markup(RENDER_SCRIPT),
        figures={k: Markup(charts.to_json(v)) for k, v in figures.items() if v is not None},
        matrix=matrix,
        tidx=tidx,
        alerts=alerts,
        listed_all=len(alerts) >= total,
        total=total,
        open_count=open_count,
        top_rules=top_rules,
        top_entities=top_entities,
        window=window,
        timezone=timezone,
        generated=generated.strftime("%Y-%m-%d %H:%M"),
        since=views.when(window.since, tz, "%Y-%m-%d %H:%M") if window.since else "",
        until=views.when(window.until, tz, "%Y-%m-%d %H:%M") if window.until else "",
    )


def write_report(
    reader: Reader, policy: ZonePolicy, window: TimeRange, out: Path, **options: Any
) -> int:
    html = report_html(reader, policy, window, **options)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    return len(html.encode("utf-8"))
