-- name: alert-evidence
-- description: The events behind one alert, in order (an id prefix of 8+ characters is enough).
-- param: alert_id (required) the alert id shown in Teams or in `recent-alerts`
SELECT
    e.event_time AS datetime,
    'Event Time' AS timestamp_desc,
    a.rule_title || ': ' || concat_ws(' ',
        json_extract_string(e.event, '$.event.action'),
        json_extract_string(e.event, '$.user.name'),
        coalesce(json_extract_string(e.event, '$.source.ip'), '?') || ' -> ' ||
        coalesce(json_extract_string(e.event, '$.url.domain'),
                 json_extract_string(e.event, '$.destination.ip'), '?')) AS message,
    e.ordinal,
    e.event_id,
    e.topic,
    e."partition",
    e."offset",
    e.line,
    json_extract_string(e.event, '$.event.dataset') AS dataset,
    json_extract_string(e.event, '$.zone.crossing') AS zone_crossing,
    e.event,
    a.id AS alert_id
FROM alert_evidence e
JOIN alerts a ON a.id = e.alert_id
WHERE a.id LIKE $alert_id || '%' AND length($alert_id) >= 8
ORDER BY a.id, e.ordinal
