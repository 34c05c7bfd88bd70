-- name: user-timeline
-- description: One user's events across zones and sources (archive and alert evidence), oldest first, with the alerts each event is evidence of.
-- param: user (required) user name as in user.name (case-insensitive), e.g. tanaka@city.example.lg.jp
-- param: limit = 10000  most rows to return
WITH archived AS (
    SELECT event_id, time, source, action, outcome, zone_source, zone_destination,
           zone_crossing, host_name, source_ip, destination_ip, destination_domain, event
    FROM events
    WHERE user_name = lower($user)
      AND time >= $since::TIMESTAMPTZ AND time < $until::TIMESTAMPTZ
),
-- Evidence of alerts also covers stores that run without the events archive.
evidence AS (
    SELECT DISTINCT ON (e.event_id)
           e.event_id, e.event_time AS time,
           CASE WHEN e.topic LIKE '%.events.%' THEN split_part(e.topic, '.', -1)
                ELSE split_part(json_extract_string(e.event, '$.event.dataset'), '.', 1)
           END AS source,
           json_extract_string(e.event, '$.event.action') AS action,
           json_extract_string(e.event, '$.event.outcome') AS outcome,
           json_extract_string(e.event, '$.zone.source') AS zone_source,
           json_extract_string(e.event, '$.zone.destination') AS zone_destination,
           json_extract_string(e.event, '$.zone.crossing') AS zone_crossing,
           json_extract_string(e.event, '$.host.name') AS host_name,
           json_extract_string(e.event, '$.source.ip') AS source_ip,
           json_extract_string(e.event, '$.destination.ip') AS destination_ip,
           coalesce(json_extract_string(e.event, '$.url.domain'),
                    json_extract_string(e.event, '$.destination.domain')) AS destination_domain,
           e.event
    FROM alert_evidence e
    WHERE lower(coalesce(json_extract_string(e.event, '$.user.name'),
                         json_extract_string(e.event, '$.source.user.name'))) = lower($user)
      AND e.event_time >= $since::TIMESTAMPTZ AND e.event_time < $until::TIMESTAMPTZ
      AND e.event_id NOT IN (SELECT event_id FROM archived)
),
timeline AS (
    SELECT * FROM archived
    UNION ALL
    SELECT * FROM evidence
)
SELECT
    t.time AS datetime,
    'Event Time' AS timestamp_desc,
    concat_ws(' ', '[' || t.source || ']', t.action, t.outcome,
              coalesce(t.source_ip, '?') || ' -> ' ||
                  coalesce(t.destination_domain, t.destination_ip, '?'),
              CASE WHEN t.zone_crossing IS NOT NULL THEN '(' || t.zone_crossing || ')' END
    ) AS message,
    t.source, t.action, t.outcome, t.zone_source, t.zone_destination, t.zone_crossing,
    t.host_name, t.source_ip, t.destination_ip, t.destination_domain,
    (SELECT list(DISTINCT ae.alert_id) FROM alert_evidence ae WHERE ae.event_id = t.event_id) AS alerts,
    t.event_id
FROM timeline t
ORDER BY t.time, t.event_id
LIMIT $limit::BIGINT
