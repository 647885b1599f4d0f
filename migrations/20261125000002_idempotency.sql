-- Idempotency keys: one row per (merchant, mode, key). A row is `running` while a request owns
-- it (owner + locked_at, taken over after a timeout) and `done` once its response is stored.
CREATE TABLE idempotency_keys (
    merchant_id      uuid NOT NULL REFERENCES merchants (id),
    livemode         boolean NOT NULL,
    key              text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    request_hash     bytea NOT NULL CHECK (length(request_hash) = 32),
    state            text NOT NULL CHECK (state IN ('running', 'done')),
    owner            uuid,
    locked_at        timestamptz,
    response_status  smallint,
    response_body    bytea,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, livemode, key),
    CONSTRAINT idempotency_done_has_response CHECK (
        state = 'running' OR (response_status IS NOT NULL AND response_body IS NOT NULL))
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

-- The key that created a session: a second session for one key is impossible.
ALTER TABLE checkout_sessions ADD COLUMN idempotency_key text;
CREATE UNIQUE INDEX sessions_idempotency_key ON checkout_sessions (merchant_id, livemode, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
