-- name: outbox-status
-- description: Teams delivery per destination and state: backlog, retries, unknown outcomes.
SELECT
    destination,
    state,
    count(*) AS alerts,
    sum(attempts)::BIGINT AS attempts,
    sum(unknown_outcomes)::BIGINT AS unknown_outcomes,
    min(created_at) AS oldest,
    max(delivered_at) AS last_delivered,
    arg_max(last_error, coalesce(last_attempt_at, created_at)) AS last_error
FROM outbox
WHERE created_at >= $since::TIMESTAMPTZ AND created_at < $until::TIMESTAMPTZ
GROUP BY destination, state
ORDER BY destination, state
