-- The public surface: a webhook attempt is logged as a coarse outcome only (transport error
-- text could map a private network), and resends are limited per event.

ALTER TABLE webhook_attempts ADD COLUMN outcome text;
UPDATE webhook_attempts SET outcome = CASE
        WHEN status_code BETWEEN 200 AND 299 THEN 'delivered'
        WHEN status_code IS NOT NULL THEN 'http_error'
        WHEN error ILIKE '%timed out%' THEN 'timeout'
        ELSE 'connection_failed'
    END;
-- The detail is no longer kept.
UPDATE webhook_attempts SET error = NULL WHERE error IS NOT NULL;
ALTER TABLE webhook_attempts
    ALTER COLUMN outcome SET NOT NULL,
    ADD CONSTRAINT webhook_attempts_outcome
        CHECK (outcome IN ('delivered', 'http_error', 'timeout', 'connection_failed'));

-- Each resend of an event, for the per-event limit (the last hour's are counted).
CREATE TABLE event_resends (
    event_id   text NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    resent_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX event_resends_recent ON event_resends (event_id, resent_at);
