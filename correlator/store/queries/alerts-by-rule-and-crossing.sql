-- name: alerts-by-rule-and-crossing
-- description: Alert counts per rule and zone crossing, most frequent first, with the users involved.
SELECT
    a.rule_title,
    a.level,
    coalesce(a.zone_crossing, '-') AS zone_crossing,
    count(*) AS alerts,
    sum(a.evidence_count)::BIGINT AS evidence,
    min(a.first_seen) AS first_seen,
    max(a.last_seen) AS last_seen,
    list(DISTINCT json_extract_string(a.group_values, '$."user.name"'))
        FILTER (WHERE json_extract_string(a.group_values, '$."user.name"') IS NOT NULL) AS users,
    a.rule_id
FROM alerts a
WHERE a.first_seen >= $since::TIMESTAMPTZ AND a.first_seen < $until::TIMESTAMPTZ
GROUP BY a.rule_id, a.rule_title, a.level, a.zone_crossing
ORDER BY alerts DESC, a.rule_title
