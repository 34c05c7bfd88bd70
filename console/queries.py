"""The console's SQL: fixed statements with bound parameters.

Nothing from a request ever becomes SQL text. Filters pick among fixed
fragments (each with ``$name`` parameters), sorting picks a column from an
allow-list, and values travel as parameters through the read-only query
path (``console/data.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from correlator.store.schema import ID_KEY, TRIAGE_STATUSES

LEVELS = ("critical", "high", "medium", "low", "informational")
RANGES = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
PAGE_SIZE = 50

LEVEL_RANK = (
    "CASE level WHEN 'critical' THEN 0 WHEN 'high' THEN 1 WHEN 'medium' THEN 2 "
    "WHEN 'low' THEN 3 ELSE 4 END"
)
SORTS = {
    "time": "last_seen",
    "first": "first_seen",
    "level": f"(4 - {LEVEL_RANK})",  # descending: the most severe first
    "rule": "rule_title",
    "crossing": "zone_crossing",
    "status": "status",
    "evidence": "evidence_count",
}

# A correlation over events of several crossings lists them all
# ("core->internet, core->lgwan"); it counts for each.
CROSSINGS = "string_split(zone_crossing, ', ')"

# An evidence event's user and device, as the cards show them.
EV_USER = (
    "lower(coalesce(json_extract_string(event, '$.user.name'), "
    "json_extract_string(event, '$.source.user.name')))"
)
EV_DEVICE = (
    "coalesce(json_extract_string(event, '$.host.name'), json_extract_string(event, '$.device.id'))"
)


# Evidence events are found through the events archive's columns (narrow,
# lower-cased user names) by event id; evidence older than the archive
# (pruned by retention, or never archived) through its own JSON.
ARCHIVE_START = "(SELECT coalesce(min(time), 'infinity'::TIMESTAMPTZ) FROM events)"


def evidence_alerts(archived: str, from_json: str) -> str:
    """Alert ids whose evidence matches: ``archived`` is a condition on
    ``events``, ``from_json`` the same on an evidence row's event JSON."""
    return (
        "SELECT alert_id FROM alert_evidence WHERE event_id IN "
        f"(SELECT event_id FROM events WHERE {archived}) "
        "UNION ALL "
        f"SELECT alert_id FROM alert_evidence WHERE event_time < {ARCHIVE_START} AND {from_json}"
    )


USER_MATCH = evidence_alerts(
    "contains(user_name, lower($user))", f"contains({EV_USER}, lower($user))"
)
DEVICE_MATCH = evidence_alerts(
    "(contains(lower(host_name), lower($device)) OR contains(lower(device_id), lower($device)))",
    f"contains(lower({EV_DEVICE}), lower($device))",
)


@dataclass(frozen=True)
class TimeRange:
    key: str  # 24h | 7d | 30d | all | custom
    since: datetime | None
    until: datetime | None

    def params(self) -> dict[str, Any]:
        return {"since": self.since, "until": self.until}


def time_range(
    args: Mapping[str, str], tz: ZoneInfo, now: datetime | None = None, default: str = "all"
) -> TimeRange:
    """The range a page shows: a preset (24h, 7d, 30d, all) or from/until
    (``YYYY-MM-DDTHH:MM`` in the display time zone). Bad values fall back to
    the default rather than failing the page."""
    key = args.get("range") or default
    # to the minute: the same preset gives the same range (and cache key) for a minute
    now = (now or datetime.now(UTC)).replace(second=0, microsecond=0)
    if key in RANGES:
        return TimeRange(key, now - RANGES[key], None)
    if key == "custom":
        since, until = _local(args.get("since"), tz), _local(args.get("until"), tz)
        if since or until:
            return TimeRange("custom", since, until)
    return TimeRange("all", None, None)


def _local(value: str | None, tz: ZoneInfo) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=tz)


IN_RANGE = (
    "($since::TIMESTAMPTZ IS NULL OR {col} >= $since::TIMESTAMPTZ) AND "
    "($until::TIMESTAMPTZ IS NULL OR {col} < $until::TIMESTAMPTZ)"
)


@dataclass(frozen=True)
class AlertFilter:
    level: str = ""
    rule: str = ""
    crossing: str = ""
    user: str = ""
    device: str = ""
    status: str = ""
    tag: str = ""
    sort: str = "time"
    desc: bool = True
    page: int = 1
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> AlertFilter:
        def text(name: str, limit: int = 200) -> str:
            return (args.get(name) or "").strip()[:limit]

        level = text("level")
        status = text("status")
        sort = text("sort")
        try:
            page = max(1, min(int(args.get("page") or 1), 1_000_000))
        except ValueError:
            page = 1
        return cls(
            level=level if level in LEVELS else "",
            rule=text("rule"),
            crossing=text("crossing"),
            user=text("user"),
            device=text("device"),
            status=status if status in TRIAGE_STATUSES else "",
            tag=text("tag"),
            sort=sort if sort in SORTS else "time",
            desc=args.get("dir", "desc") != "asc",
            page=page,
        )

    def where(self, window: TimeRange) -> tuple[str, dict[str, Any]]:
        clauses = [IN_RANGE.format(col="last_seen")]
        params: dict[str, Any] = window.params()
        if self.level:
            clauses.append("level = $level")
            params["level"] = self.level
        if self.rule:
            clauses.append("rule_id = $rule")
            params["rule"] = self.rule
        if self.crossing:
            clauses.append(f"list_contains({CROSSINGS}, $crossing)")
            params["crossing"] = self.crossing
        if self.status:
            clauses.append("status = $status")
            params["status"] = self.status
        if self.tag:
            clauses.append("list_contains(tags, $tag)")
            params["tag"] = self.tag
        if self.user:
            clauses.append(
                "(contains(lower(CAST(group_values AS VARCHAR)), lower($user)) "
                f"OR id IN ({USER_MATCH}))"
            )
            params["user"] = self.user
        if self.device:
            clauses.append(
                "(contains(lower(CAST(group_values AS VARCHAR)), lower($device)) "
                f"OR id IN ({DEVICE_MATCH}))"
            )
            params["device"] = self.device
        return " AND ".join(clauses), params

    def list_sql(self, window: TimeRange) -> tuple[str, str | None, dict[str, Any]]:
        """(page SQL, count SQL, params). With a user or device filter (the
        costly ones: they search the evidence) the page comes with its
        ``total`` in one statement that filters once, and the count SQL is
        None; the page then has one row without ``id`` when it is empty."""
        where, params = self.where(window)
        order = f"{SORTS[self.sort]} {'DESC' if self.desc else 'ASC'}, last_seen DESC, id"
        params = {**params, "limit": PAGE_SIZE, "offset": (self.page - 1) * PAGE_SIZE}
        columns = (
            "id, rule_id, rule_title, level, tags, type, zone_crossing, first_seen, "
            "last_seen, status, assignee, evidence_count, origin"
        )
        if self.user or self.device:
            page = (
                f"WITH f AS MATERIALIZED (SELECT {columns} FROM alerts WHERE {where}) "
                "SELECT p.*, t.total FROM (SELECT count(*) AS total FROM f) t LEFT JOIN "
                f"(SELECT * FROM f ORDER BY {order} LIMIT $limit OFFSET $offset) p ON true "
                f"ORDER BY {order}"
            )
            return page, None, params
        page = (
            f"SELECT {columns} FROM alerts WHERE {where} ORDER BY {order} "
            "LIMIT $limit OFFSET $offset"
        )
        count = f"SELECT count(*) FROM alerts WHERE {where}"
        return page, count, params

    def link(self, **changes: Any) -> dict[str, str]:
        """Query parameters of this filter with ``changes`` (for links)."""
        current = {
            "level": self.level,
            "rule": self.rule,
            "crossing": self.crossing,
            "user": self.user,
            "device": self.device,
            "status": self.status,
            "tag": self.tag,
            "sort": self.sort,
            "dir": "desc" if self.desc else "asc",
            "page": str(self.page),
        }
        current.update({k: str(v) for k, v in changes.items()})
        return {k: v for k, v in current.items() if v}


# Users and devices of the alerts on one page (their evidence).
ENTITIES_OF = f"""
SELECT alert_id, list(DISTINCT {EV_USER}) FILTER (WHERE {EV_USER} IS NOT NULL) AS users,
       list(DISTINCT {EV_DEVICE}) FILTER (WHERE {EV_DEVICE} IS NOT NULL) AS devices
FROM alert_evidence WHERE alert_id IN (SELECT unnest($ids::VARCHAR[]))
GROUP BY alert_id
"""

BY_ID = ID_KEY.format(id="$id")
ALERT = f"""
SELECT a.*, r.path AS rule_path, r.text AS rule_text, r.version AS version
FROM alerts a LEFT JOIN rules r ON r.rule_id = a.rule_id AND r.sha256 = a.rule_hash
WHERE a.id_key = {BY_ID} AND a.id = $id
"""
EVIDENCE = """
SELECT ordinal, event_id, topic, "partition", "offset", line, event_time, event
FROM alert_evidence WHERE alert_id = $id ORDER BY ordinal LIMIT $limit
"""
HISTORY = """
SELECT changed_at, actor, via, from_status, to_status, from_assignee, to_assignee, note
FROM triage_history WHERE alert_id = $id ORDER BY changed_at
"""
RULE_TEXT = """
SELECT rule_id, sha256, version, title, level, tags, path, text, loaded_at
FROM rules WHERE rule_id = $rule ORDER BY version DESC
"""

# The zone matrix: alerts per crossing, and allowed traffic per crossing
# from the events archive.
MATRIX_ALERTS = f"""
SELECT crossing AS zone_crossing, count(*) AS alerts, min(rank) AS worst FROM (
    SELECT unnest({CROSSINGS}) AS crossing, {LEVEL_RANK} AS rank FROM alerts
    WHERE zone_crossing IS NOT NULL AND {IN_RANGE.format(col="last_seen")}
) GROUP BY crossing
"""
MATRIX_TRAFFIC = f"""
SELECT zone_crossing, count(*) AS events
FROM events
WHERE zone_crossing IS NOT NULL AND outcome = 'success' AND {IN_RANGE.format(col="time")}
GROUP BY zone_crossing
"""
# Alerts by the role at either end of their evidence events in the range
# (VDI pools, proxy, ...).
MATRIX_ROLES = f"""
WITH ev AS (
    -- one JSON parse per event for the four fields (four calls parse it four times)
    SELECT alert_id, z[1] AS src_role, z[2] AS dst_role,
           coalesce(z[3], 'unknown') AS src, coalesce(z[4], 'unknown') AS dst FROM (
        SELECT e.alert_id, json_extract_string(e.event, ['$.zone.source_role',
            '$.zone.destination_role', '$.zone.source', '$.zone.destination']) AS z
        FROM alert_evidence e WHERE {IN_RANGE.format(col="e.event_time")}
    )
)
SELECT role, side, zone, count(DISTINCT alert_id) AS alerts FROM (
    SELECT alert_id, src_role AS role, 'source' AS side, dst AS zone FROM ev
    WHERE src_role IS NOT NULL
    UNION ALL
    SELECT alert_id, dst_role, 'destination', src FROM ev WHERE dst_role IS NOT NULL
) GROUP BY ALL
"""

# What changes when alerts are added (alerts are never changed or removed,
# but for their triage columns): the key of the matrix's role breakdown.
ALERTS_MARKER = "SELECT count(*) AS n, max(ingest_time) AS newest FROM alerts"

TIMELINE_EVENTS = f"""
SELECT time, source, dataset, action, outcome, zone_crossing, source_ip, destination_ip,
       destination_domain, host_name, user_name,
       json_extract_string(event, '$.event.original') AS original
FROM events
WHERE {{who}} AND {IN_RANGE.format(col="time")}
ORDER BY time LIMIT $limit
"""
TIMELINE_WHO = {
    "user": "user_name = lower($name)",
    "device": "(host_name = $name OR device_id = $name)",
}
TIMELINE_ALERTS = f"""
SELECT id, rule_title, level, zone_crossing, first_seen, last_seen, status FROM alerts
WHERE id IN ({{who}}) AND {IN_RANGE.format(col="last_seen")}
ORDER BY last_seen LIMIT $limit
"""
TIMELINE_ALERT_WHO = {
    "user": evidence_alerts("user_name = lower($name)", f"{EV_USER} = lower($name)"),
    "device": evidence_alerts("(host_name = $name OR device_id = $name)", f"{EV_DEVICE} = $name"),
}

HITS_PER_DAY = f"""
SELECT rule_title, date_trunc('day', last_seen AT TIME ZONE $tz) AS day, count(*) AS hits
FROM alerts WHERE {IN_RANGE.format(col="last_seen")}
GROUP BY ALL ORDER BY day, rule_title
"""
NEVER_FIRED = """
SELECT r.rule_id, r.title, r.level, r.path, r.text FROM (
    SELECT rule_id, arg_max(title, version) AS title, arg_max(level, version) AS level,
           arg_max(path, version) AS path, arg_max(text, version) AS text
    FROM rules GROUP BY rule_id
) r
WHERE r.rule_id NOT IN (SELECT DISTINCT rule_id FROM alerts)
ORDER BY r.path, r.title
"""
# The rules correlations build on (``correlation.rules``, by name or id).
CORRELATION_TEXTS = """
SELECT arg_max(text, version) AS text FROM rules
WHERE contains(text, 'correlation:') GROUP BY rule_id
"""
FILTER_CHOICES = f"""
SELECT 'rule' AS kind, rule_id AS value, any_value(rule_title) AS label FROM alerts GROUP BY 2
UNION ALL
SELECT 'crossing', c, c FROM (SELECT DISTINCT unnest({CROSSINGS}) AS c FROM alerts)
UNION ALL
SELECT 'tag', t, t FROM (SELECT DISTINCT unnest(tags) AS t FROM alerts)
ORDER BY kind, label
"""

# The report.
PER_DAY_LEVEL = f"""
SELECT strftime(last_seen AT TIME ZONE $tz, '%Y-%m-%d') AS day, level, count(*) AS alerts
FROM alerts WHERE {IN_RANGE.format(col="last_seen")} GROUP BY ALL ORDER BY day
"""
TOP_RULES = f"""
SELECT rule_title, level, count(*) AS alerts FROM alerts
WHERE {IN_RANGE.format(col="last_seen")} GROUP BY ALL ORDER BY alerts DESC, rule_title LIMIT 15
"""
TOP_ENTITIES = f"""
WITH ev AS (
    SELECT DISTINCT e.alert_id, {EV_USER} AS u, {EV_DEVICE} AS d
    FROM alert_evidence e
    WHERE e.alert_id IN (SELECT id FROM alerts WHERE {IN_RANGE.format(col="last_seen")})
)
SELECT 'user' AS kind, u AS name, count(DISTINCT alert_id) AS alerts FROM ev
WHERE u IS NOT NULL GROUP BY ALL
UNION ALL
SELECT 'device', d, count(DISTINCT alert_id) FROM ev WHERE d IS NOT NULL GROUP BY ALL
ORDER BY alerts DESC, name LIMIT 30
"""
REPORT_ALERTS = f"""
SELECT id, rule_title, level, zone_crossing, first_seen, last_seen, status, assignee,
       evidence_count
FROM alerts WHERE {IN_RANGE.format(col="last_seen")}
ORDER BY last_seen DESC, id LIMIT $limit
"""
REPORT_COUNTS = f"""
SELECT count(*) AS total, count(*) FILTER (WHERE status IN ('new', 'acknowledged')) AS open
FROM alerts WHERE {IN_RANGE.format(col="last_seen")}
"""
