-- Sweeps (EVM, EIP-7702): deposit addresses delegate to a contract that can only pay the
-- merchant's treasury; a gas tank sends batched sweeps. See src/sweep/.

-- Authorizations signed offline (`sweep authorize`) and imported; harmless on their own.
CREATE TABLE sweep_authorizations (
    chain_id       bigint NOT NULL CHECK (chain_id > 0),
    address        text NOT NULL CHECK (address ~ '^0x[0-9a-fA-F]{40}$'),
    delegate       text NOT NULL CHECK (delegate ~ '^0x[0-9a-fA-F]{40}$'),
    merchant_id    uuid NOT NULL REFERENCES merchants (id),
    address_index  bigint NOT NULL CHECK (address_index >= 0),
    nonce          bigint NOT NULL CHECK (nonce >= 0),
    y_parity       smallint NOT NULL CHECK (y_parity IN (0, 1)),
    r              bytea NOT NULL CHECK (length(r) = 32),
    s              bytea NOT NULL CHECK (length(s) = 32),
    imported_at    timestamptz NOT NULL DEFAULT now(),
    -- The address's nonce moved past this one: it can never apply (a new one is needed).
    stale_at       timestamptz,
    PRIMARY KEY (chain_id, address, delegate)
);

CREATE TABLE sweeps (
    id              text PRIMARY KEY CHECK (id ~ '^sw_[0-9a-f]{32}$'),
    merchant_id     uuid NOT NULL REFERENCES merchants (id),
    livemode        boolean NOT NULL,
    network         text NOT NULL,
    treasury        text NOT NULL,
    delegate        text NOT NULL,
    gas_tank        text NOT NULL,
    tx_hash         text NOT NULL UNIQUE,
    tx_nonce        bigint NOT NULL CHECK (tx_nonce >= 0),
    -- The signed transaction, sent again until it is mined or its nonce is taken.
    raw_tx          bytea NOT NULL,
    authorizations  integer NOT NULL CHECK (authorizations >= 0),
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'completed', 'failed', 'dropped')),
    block_number    bigint,
    gas_used        bigint,
    -- What the gas tank paid, in the native coin's smallest unit.
    fee             numeric,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);
CREATE INDEX sweeps_list ON sweeps (merchant_id, livemode, created_at DESC, id DESC);
CREATE INDEX sweeps_pending ON sweeps (network, livemode) WHERE status = 'pending';

CREATE TABLE sweep_items (
    sweep_id             text NOT NULL REFERENCES sweeps (id),
    address              text NOT NULL,
    address_index        bigint NOT NULL CHECK (address_index >= 0),
    currency             text NOT NULL CHECK (currency IN ('USDT', 'USDC')),
    contract             text NOT NULL,
    -- The balance read just before sending, and what the receipt shows reached the treasury.
    expected             numeric NOT NULL CHECK (expected >= 0),
    swept                numeric CHECK (swept >= 0),
    authorized           boolean NOT NULL,
    -- The newest confirmed transfer to the address this sweep covers.
    through_transaction  bigint NOT NULL,
    PRIMARY KEY (sweep_id, address, currency)
);
CREATE INDEX sweep_items_address ON sweep_items (address);

-- Per deposit address: transfers up to this id have been swept or found below the minimum
-- (or failed to sweep three times in a row); a newer confirmed transfer makes it a candidate
-- again.
CREATE TABLE sweep_addresses (
    network          text NOT NULL,
    livemode         boolean NOT NULL,
    address          text NOT NULL,
    checked_through  bigint NOT NULL,
    -- Settled sweeps in a row that moved nothing from it (a blacklisted address, a paused token).
    failed_attempts  integer NOT NULL DEFAULT 0,
    PRIMARY KEY (network, livemode, address)
);

-- Candidates are found from confirmed transfers by network and id.
CREATE INDEX transactions_confirmed_by_network ON transactions (network, livemode, id)
    WHERE status = 'Confirmed';

-- Sweep events belong to no session.
ALTER TABLE events ALTER COLUMN session_id DROP NOT NULL;
ALTER TABLE events ADD COLUMN sweep_id text REFERENCES sweeps (id);
ALTER TABLE events ADD CONSTRAINT events_subject CHECK (num_nonnulls(session_id, sweep_id) = 1);
ALTER TABLE events DROP CONSTRAINT events_event_type_check;
ALTER TABLE events ADD CONSTRAINT events_event_type_check CHECK (event_type IN (
    'session.completed', 'session.expired', 'session.underpaid', 'session.late_payment',
    'session.blocked', 'session.unexpected_payment', 'sweep.completed'));
