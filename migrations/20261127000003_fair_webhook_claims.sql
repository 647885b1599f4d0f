-- Fair webhook claims: the dispatcher takes due deliveries round-robin across endpoints (and
-- across sessions within an endpoint) instead of strictly oldest first, so one noisy session
-- or endpoint cannot hold up every other merchant's events.
--
-- This index serves both steps of a claim: a loose scan over the endpoints that have pending
-- deliveries (one probe per endpoint), and, per endpoint, its oldest due deliveries (a range up
-- to now()). It replaces the global due index, which no query uses any more.
CREATE INDEX webhook_deliveries_fair ON webhook_deliveries (endpoint_id, next_attempt_at, id)
    WHERE status = 'pending';
DROP INDEX webhook_deliveries_due;
