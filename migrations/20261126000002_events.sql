-- Events (written in the transaction of the status change that causes them), webhook
-- endpoints, and one delivery per (event, endpoint) with its attempts.

CREATE TABLE events (
    id           text PRIMARY KEY CHECK (id ~ '^evt_[0-9a-f]{32}$'),
    merchant_id  uuid NOT NULL REFERENCES merchants (id),
    livemode     boolean NOT NULL,
    event_type   text NOT NULL CHECK (event_type IN ('session.completed', 'session.expired',
                     'session.underpaid', 'session.late_payment', 'session.blocked')),
    session_id   text NOT NULL REFERENCES checkout_sessions (id),
    data         jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_list ON events (merchant_id, livemode, created_at DESC, id DESC);
CREATE INDEX events_by_session ON events (session_id, created_at);

CREATE TABLE webhook_endpoints (
    id                        text PRIMARY KEY CHECK (id ~ '^we_[0-9a-f]{32}$'),
    merchant_id               uuid NOT NULL REFERENCES merchants (id),
    livemode                  boolean NOT NULL,
    url                       text NOT NULL CHECK (length(url) <= 2048),
    -- NULL: every event type.
    event_types               text[],
    secret                    text NOT NULL,
    -- During a rotation the previous secret also signs, until it lapses.
    previous_secret           text,
    previous_secret_until     timestamptz,
    created_at                timestamptz NOT NULL DEFAULT now(),
    deleted_at                timestamptz
);
CREATE INDEX webhook_endpoints_merchant ON webhook_endpoints (merchant_id, livemode)
    WHERE deleted_at IS NULL;

CREATE TABLE webhook_deliveries (
    id               bigserial PRIMARY KEY,
    event_id         text NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    endpoint_id      text NOT NULL REFERENCES webhook_endpoints (id),
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    -- A dispatcher holds the delivery until then (a crashed one's claim lapses); only the
    -- holder of `claim_token` may record the outcome.
    locked_until     timestamptz,
    claim_token      uuid,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_deliveries_once UNIQUE (event_id, endpoint_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';

CREATE TABLE webhook_attempts (
    id            bigserial PRIMARY KEY,
    delivery_id   bigint NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempted_at  timestamptz NOT NULL DEFAULT now(),
    duration_ms   integer NOT NULL,
    status_code   integer,
    error         text
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, attempted_at);
