-- name: recent-alerts
-- description: Alerts (newest first) with their Teams delivery state.
-- param: limit = 200  most rows to return
SELECT
    a.first_seen AS datetime,
    'Alert First Seen' AS timestamp_desc,
    '[' || a.level || '] ' || a.rule_title ||
        coalesce(' (' || a.zone_crossing || ')', '') AS message,
    a.level, a.rule_title, a.zone_crossing, a.type, a.origin, a.evidence_count,
    a.last_seen, a.group_values,
    (SELECT string_agg(o.destination || ':' || o.state, ', ' ORDER BY o.destination)
       FROM outbox o WHERE o.alert_id = a.id) AS teams,
    a.id AS alert_id
FROM alerts a
WHERE a.first_seen >= $since::TIMESTAMPTZ AND a.first_seen < $until::TIMESTAMPTZ
ORDER BY a.first_seen DESC, a.id
LIMIT $limit::BIGINT
