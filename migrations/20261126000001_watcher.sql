-- Chain watcher: one cursor and lease per (network, mode), transfer details, anomalies.

CREATE TABLE chain_cursors (
    network           text NOT NULL,
    livemode          boolean NOT NULL,
    -- The replica that runs this network's watcher, until lease_expires_at.
    lease_owner       uuid,
    lease_expires_at  timestamptz,
    -- The last block whose transfers are stored (NULL until the first scan).
    block_number      bigint CHECK (block_number >= 0),
    block_hash        text,
    block_time        timestamptz,
    -- The time of the newest block with the network's confirmations: expiry waits for it, so
    -- a reorg of the unconfirmed tip cannot expire a session paid in time.
    safe_time         timestamptz,
    head_number       bigint,
    last_success_at   timestamptz,
    last_error        text,
    last_error_at     timestamptz,
    PRIMARY KEY (network, livemode),
    CONSTRAINT chain_cursors_block_complete
        CHECK ((block_number IS NULL) = (block_hash IS NULL) AND (block_number IS NULL) = (block_time IS NULL))
);

ALTER TABLE transactions
    ADD COLUMN token_contract text,
    ADD COLUMN blocked boolean NOT NULL DEFAULT false,
    ADD COLUMN confirmed_at timestamptz;

-- Unconfirmed transfers by network, for the confirmation pass.
CREATE INDEX transactions_unconfirmed ON transactions (network, livemode, block_number)
    WHERE status = 'Unconfirmed';

-- What the watcher saw but could not credit: a value too large to store, the wrong token.
CREATE TABLE chain_anomalies (
    id          bigserial PRIMARY KEY,
    network     text NOT NULL,
    livemode    boolean NOT NULL,
    tx_hash     text NOT NULL,
    log_index   bigint NOT NULL,
    kind        text NOT NULL,
    session_id  text REFERENCES checkout_sessions (id),
    detail      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT chain_anomalies_once UNIQUE (network, livemode, tx_hash, log_index, kind)
);
