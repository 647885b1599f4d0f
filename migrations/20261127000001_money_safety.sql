-- Money safety: finality-aware rescans with reorg checkpoints, block times on transfers,
-- dust and unexpected-token accounting, throttled late-payment events, settle-lag tracking.

-- The highest block that was scanned with the network's confirmations on top of it: every
-- block above it is scanned again until it is that deep.
-- NULL on a cursor from before this column: the watcher rescans one confirmation window.
ALTER TABLE chain_cursors ADD COLUMN final_number bigint CHECK (final_number >= 0);

-- The hash each final block had when it became final. Each cycle checks the newest one
-- against the chain; on a mismatch (a reorg deeper than the confirmations, or a node on
-- another fork) the watcher walks back to the newest one that still matches and rescans.
CREATE TABLE chain_checkpoints (
    network   text NOT NULL,
    livemode  boolean NOT NULL,
    number    bigint NOT NULL CHECK (number >= 0),
    hash      text NOT NULL,
    PRIMARY KEY (network, livemode, number)
);

-- The time of the transfer's block: on time or late is decided by it, not by when it is
-- credited. A transfer of another configured token than the session's is `unexpected`:
-- confirmed like any other, never credited, reported. `due_since`: when it first had its
-- confirmations (a transfer due for long is reported by /readyz).
ALTER TABLE transactions
    ADD COLUMN block_time timestamptz,
    ADD COLUMN unexpected boolean NOT NULL DEFAULT false,
    ADD COLUMN due_since timestamptz,
    ADD CONSTRAINT transactions_unexpected_never_credited CHECK (NOT (credited AND unexpected));

-- Transfers that were not credited, counted per session: below the minimum (dust, never
-- stored as transactions) and of another token (unexpected).
ALTER TABLE checkout_sessions
    ADD COLUMN dust_count integer NOT NULL DEFAULT 0 CHECK (dust_count >= 0),
    ADD COLUMN unexpected_count integer NOT NULL DEFAULT 0 CHECK (unexpected_count >= 0),
    -- At most one session.late_payment event a minute: the last one written, and when the
    -- next one is due (late transfers arrived inside the minute).
    ADD COLUMN last_late_event_at timestamptz,
    ADD COLUMN late_event_due_at timestamptz;
CREATE INDEX sessions_late_event_due ON checkout_sessions (late_event_due_at)
    WHERE late_event_due_at IS NOT NULL;

ALTER TABLE events DROP CONSTRAINT events_event_type_check;
ALTER TABLE events ADD CONSTRAINT events_event_type_check CHECK (event_type IN (
    'session.completed', 'session.expired', 'session.underpaid', 'session.late_payment',
    'session.blocked', 'session.unexpected_payment'));
