-- TRON sweeps: planned online, signed offline, broadcast by the server as several
-- transactions (activation, energy delegation, one USDT transfer per address, undelegation).
-- They share `sweeps` and `sweep_items` with the EVM sweeps; their transactions are rows of
-- `sweep_transactions`.

ALTER TABLE sweeps
    ALTER COLUMN delegate DROP NOT NULL,
    ALTER COLUMN tx_hash DROP NOT NULL,
    ALTER COLUMN tx_nonce DROP NOT NULL,
    ALTER COLUMN raw_tx DROP NOT NULL,
    -- TRON: how the transfers' energy was paid.
    ADD COLUMN energy_mode text CHECK (energy_mode IN ('delegate', 'burn', 'none')),
    -- An EVM sweep is one transaction; a TRON sweep is a plan and its transactions.
    ADD CONSTRAINT sweeps_shape CHECK (
        (energy_mode IS NULL AND delegate IS NOT NULL AND tx_hash IS NOT NULL
             AND tx_nonce IS NOT NULL AND raw_tx IS NOT NULL)
        OR (energy_mode IS NOT NULL AND tx_hash IS NULL AND tx_nonce IS NULL
             AND raw_tx IS NULL));

CREATE TABLE sweep_transactions (
    sweep_id      text NOT NULL REFERENCES sweeps (id),
    position      integer NOT NULL CHECK (position >= 0),
    -- activation: TRX that activates the address; funding: TRX it burns for energy (`burn`);
    -- delegation/undelegation: energy lent and taken back; transfer: its USDT to the treasury.
    kind          text NOT NULL CHECK (kind IN ('activation', 'funding', 'delegation',
                                                'transfer', 'undelegation')),
    -- The deposit address the transaction serves.
    address       text NOT NULL,
    tx_id         text NOT NULL UNIQUE CHECK (tx_id ~ '^[0-9a-f]{64}$'),
    -- The signed transaction (protobuf), broadcast again after a crash.
    raw_tx        bytea NOT NULL,
    -- Milliseconds since the epoch: the network refuses it after this.
    expiration    bigint NOT NULL,
    -- pending: not broadcast; sent: accepted by a node; confirmed: executed successfully and
    -- as deep as the network's confirmations; failed: refused, reverted or expired; skipped:
    -- not sent (the address's balance moved, or an earlier step for it failed).
    status        text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'sent', 'confirmed', 'failed', 'skipped')),
    error         text,
    block_number  bigint,
    energy_used   bigint CHECK (energy_used >= 0),
    -- TRX burned for it, in sun.
    fee           numeric CHECK (fee >= 0),
    PRIMARY KEY (sweep_id, position)
);
