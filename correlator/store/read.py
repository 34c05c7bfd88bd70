"""Reading alerts back from the store as :class:`zonewatch.models.Alert`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from correlator.store.schema import by_id_key
from zonewatch.models import Alert, Evidence

_ALERT_COLUMNS = (
    "id, rule_id, rule_title, level, tags, rule_hash, type, group_values, window_start, "
    "window_end, first_seen, last_seen, zone_crossing, origin, evidence_count, late"
)


def load_alerts(
    cur: duckdb.DuckDBPyConnection, ids: Sequence[str], evidence_limit: int = 20
) -> dict[str, tuple[Alert, int]]:
    """Alerts by id with their first ``evidence_limit`` evidence rows, and
    each alert's total evidence count (a correlation may hold thousands)."""
    if not ids:
        return {}
    cur.register("_zw_want", pa.table({"id": list(ids)}))
    try:
        alerts = cur.execute(by_id_key(_ALERT_COLUMNS, "_zw_want")).fetchall()
        wanted = set(ids)
        alerts = [row for row in alerts if row[0] in wanted]
        evidence = cur.execute(
            """
            SELECT alert_id, event_id, event_time, topic, "partition", "offset", line, event
            FROM alert_evidence
            WHERE alert_id IN (SELECT id FROM _zw_want) AND ordinal < ?
            ORDER BY alert_id, ordinal
            """,
            [evidence_limit],
        ).fetchall()
    finally:
        cur.unregister("_zw_want")
    by_alert: dict[str, list[Evidence]] = {}
    for alert_id, event_id, time, topic, partition, offset, line, event in evidence:
        by_alert.setdefault(alert_id, []).append(
            Evidence(
                event_id=event_id,
                time=time,
                topic=topic,
                partition=partition,
                offset=offset,
                line=line,
                event=_json(event) or {},
            )
        )
    out: dict[str, tuple[Alert, int]] = {}
    for row in alerts:
        (aid, rule_id, title, level, tags, rule_hash, kind, group, ws, we, first, last, crossing,
         origin, count, late) = row  # fmt: skip
        alert = Alert(
            id=aid,
            rule_id=rule_id,
            rule_title=title,
            level=level,
            tags=list(tags or []),
            rule_hash=rule_hash,
            type=kind,
            group=_json(group) or {},
            window_start=ws,
            window_end=we,
            first_seen=first,
            last_seen=last,
            zone_crossing=crossing,
            origin=origin,
            evidence=by_alert.get(aid, []),
            late=bool(late),
        )
        out[aid] = (alert, int(count))
    return out


def _json(value: Any) -> Any:
    if value is None or isinstance(value, dict | list):
        return value
    return orjson.loads(value)


def rule_text(cur: duckdb.DuckDBPyConnection, rule_id: str, rule_hash: str | None) -> str | None:
    """The text of the rule version an alert was raised by; the newest
    version of the rule when the alert names none or an unknown one."""
    row = cur.execute(
        "SELECT text FROM rules WHERE rule_id = ? "
        "ORDER BY (sha256 = ?) DESC NULLS LAST, version DESC LIMIT 1",
        [rule_id, rule_hash],
    ).fetchone()
    return str(row[0]) if row and row[0] is not None else None
