-- Core schema: merchants, keys, sub-merchants, sessions, transactions, address allocation.

CREATE TABLE merchants (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    logo_url    text CHECK (length(logo_url) <= 2048),
    tron_xpub   text,
    evm_xpub    text,
    fee_rate    numeric CHECK (fee_rate >= 0 AND fee_rate < 1),
    is_demo     boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX merchants_one_demo ON merchants (is_demo) WHERE is_demo;

CREATE TABLE api_keys (
    id           uuid PRIMARY KEY,
    merchant_id  uuid NOT NULL REFERENCES merchants (id),
    livemode     boolean NOT NULL,
    key_hash     bytea NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    key_prefix   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);
CREATE INDEX api_keys_merchant ON api_keys (merchant_id);

CREATE TABLE sub_merchants (
    merchant_id   uuid NOT NULL REFERENCES merchants (id),
    livemode      boolean NOT NULL,
    code          text NOT NULL CHECK (code ~ '^[A-Za-z0-9-][A-Za-z0-9_-]{0,99}$'),
    display_name  text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 200),
    logo_url      text CHECK (length(logo_url) <= 2048),
    status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, livemode, code)
);

-- Next child index per watch-only xpub: an index is handed out once, whoever shares the key.
CREATE TABLE address_allocators (
    chain_family  text NOT NULL CHECK (chain_family IN ('tron', 'evm', 'solana')),
    xpub          text NOT NULL,
    next_index    bigint NOT NULL CHECK (next_index >= 0 AND next_index <= 2147483648),
    PRIMARY KEY (chain_family, xpub)
);

CREATE TABLE checkout_sessions (
    id                   text PRIMARY KEY CHECK (id ~ '^cs_[0-9a-f]{32}$'),
    merchant_id          uuid NOT NULL REFERENCES merchants (id),
    livemode             boolean NOT NULL,
    sub_merchant_code    text,
    status               text NOT NULL DEFAULT 'Pending'
                         CHECK (status IN ('Pending', 'Underpaid', 'Paid', 'Overpaid', 'Expired', 'Blocked')),
    amount               numeric NOT NULL CHECK (amount > 0 AND amount <= 10000000),
    amount_received      numeric NOT NULL DEFAULT 0 CHECK (amount_received >= 0),
    fee_rate             numeric NOT NULL CHECK (fee_rate >= 0 AND fee_rate < 1),
    fee_floor            numeric NOT NULL CHECK (fee_floor >= 0),
    fee_amount           numeric NOT NULL CHECK (fee_amount >= 0),
    net_amount           numeric NOT NULL CHECK (net_amount >= 0),
    currency             text NOT NULL CHECK (currency IN ('USDT', 'USDC')),
    network              text NOT NULL CHECK (network IN ('TRON', 'SOLANA', 'BSC', 'ETHEREUM', 'POLYGON', 'ARBITRUM', 'OPTIMISM', 'BASE')),
    chain_family         text NOT NULL CHECK (chain_family IN ('tron', 'evm', 'solana')),
    currency_contract    text NOT NULL,
    token_decimals       smallint NOT NULL CHECK (token_decimals BETWEEN 0 AND 36),
    detection_rpc_url    text,
    pay_address          text NOT NULL,
    address_xpub         text NOT NULL,
    address_index        bigint NOT NULL CHECK (address_index >= 0),
    pricing_amount       numeric NOT NULL CHECK (pricing_amount > 0),
    pricing_currency     text NOT NULL,
    exchange_rate        numeric NOT NULL CHECK (exchange_rate > 0),
    client_reference_id  text CHECK (length(client_reference_id) <= 200),
    success_url          text NOT NULL CHECK (length(success_url) <= 2048),
    cancel_url           text NOT NULL CHECK (length(cancel_url) <= 2048),
    merchant_name        text NOT NULL,
    merchant_logo_url    text,
    created_at           timestamptz NOT NULL,
    expires_at           timestamptz NOT NULL CHECK (expires_at > created_at),
    paid_at              timestamptz,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT sessions_pay_address_unique UNIQUE (chain_family, pay_address),
    CONSTRAINT sessions_address_index_unique UNIQUE (chain_family, address_xpub, address_index),
    CONSTRAINT sessions_sub_merchant_fk FOREIGN KEY (merchant_id, livemode, sub_merchant_code)
        REFERENCES sub_merchants (merchant_id, livemode, code)
);
CREATE INDEX sessions_list ON checkout_sessions (merchant_id, livemode, created_at DESC, id DESC);
CREATE INDEX sessions_by_reference ON checkout_sessions (merchant_id, livemode, client_reference_id)
    WHERE client_reference_id IS NOT NULL;
CREATE INDEX sessions_open_by_network ON checkout_sessions (network, livemode, expires_at)
    WHERE status IN ('Pending', 'Underpaid');

-- Transfers seen on chain; filled by the chain watcher (or test-mode simulation).
CREATE TABLE transactions (
    id            bigserial PRIMARY KEY,
    session_id    text NOT NULL REFERENCES checkout_sessions (id),
    network       text NOT NULL,
    livemode      boolean NOT NULL,
    tx_hash       text NOT NULL,
    log_index     bigint NOT NULL CHECK (log_index >= 0),
    block_number  bigint,
    block_hash    text,
    from_address  text,
    to_address    text NOT NULL,
    amount        numeric NOT NULL CHECK (amount >= 0),
    status        text NOT NULL DEFAULT 'Unconfirmed'
                  CHECK (status IN ('Unconfirmed', 'Confirmed', 'Failed', 'NotFound')),
    credited      boolean NOT NULL DEFAULT false,
    late          boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT transactions_once UNIQUE (network, livemode, tx_hash, log_index),
    CONSTRAINT transactions_credit_confirmed CHECK (NOT credited OR status = 'Confirmed')
);
CREATE INDEX transactions_session ON transactions (session_id, created_at, id);
