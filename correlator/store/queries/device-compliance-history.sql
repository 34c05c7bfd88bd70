-- name: device-compliance-history
-- description: A device's Intune compliance and ownership over time (archive and alert evidence).
-- param: device (required) device id or host name (case-insensitive)
WITH intune AS (
    SELECT time, event_id, event FROM events
    WHERE source = 'intune'
      AND (lower(device_id) = lower($device) OR lower(host_name) = lower($device))
      AND time >= $since::TIMESTAMPTZ AND time < $until::TIMESTAMPTZ
    UNION ALL
    SELECT DISTINCT ON (event_id) event_time AS time, event_id, event FROM alert_evidence
    WHERE json_extract_string(event, '$.event.dataset') LIKE 'intune%'
      AND (lower(json_extract_string(event, '$.device.id')) = lower($device)
           OR lower(json_extract_string(event, '$.host.name')) = lower($device))
      AND event_time >= $since::TIMESTAMPTZ AND event_time < $until::TIMESTAMPTZ
      AND event_id NOT IN (SELECT event_id FROM events WHERE source = 'intune')
)
SELECT
    time AS datetime,
    'Compliance Observed' AS timestamp_desc,
    concat_ws(' ', json_extract_string(event, '$.host.name'),
              'compliance=' || coalesce(json_extract_string(event, '$.intune.compliance'), '?'),
              'ownership=' || coalesce(json_extract_string(event, '$.intune.ownership'), '?'),
              json_extract_string(event, '$.event.action')) AS message,
    json_extract_string(event, '$.intune.compliance') AS compliance,
    json_extract_string(event, '$.intune.ownership') AS ownership,
    json_extract_string(event, '$.host.name') AS host_name,
    json_extract_string(event, '$.device.id') AS device_id,
    json_extract_string(event, '$.user.name') AS user_name,
    json_extract_string(event, '$.host.os.name') AS os,
    json_extract_string(event, '$.event.action') AS action,
    event_id
FROM intune
ORDER BY time, event_id
