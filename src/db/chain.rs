//! The chain watcher's tables: cursors and leases, detected transfers, anomalies.

use crate::domain::network::{ChainFamily, Network};
use crate::domain::session::TransactionStatus;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{PgExecutor, PgPool, Postgres, Transaction};
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct CursorRow {
    pub network: Network,
    pub livemode: bool,
    pub block_number: Option<i64>,
    pub block_hash: Option<String>,
    pub block_time: Option<DateTime<Utc>>,
    pub safe_time: Option<DateTime<Utc>>,
    pub head_number: Option<i64>,
    pub final_number: Option<i64>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub lease_owner: Option<Uuid>,
    pub lease_expires_at: Option<DateTime<Utc>>,
}

/// The newest block number the network's watcher has seen.
pub async fn head_number(
    db: &PgPool,
    network: Network,
    livemode: bool,
) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar!(
        "SELECT head_number FROM chain_cursors WHERE network = $1 AND livemode = $2",
        network as Network,
        livemode,
    )
    .fetch_optional(db)
    .await
    .map(Option::flatten)
}

/// How far one network's watcher trails, for the metrics.
#[derive(Debug, Clone)]
pub struct CursorLag {
    pub network: Network,
    pub livemode: bool,
    pub lag_blocks: Option<i64>,
    pub lag_seconds: Option<f64>,
    pub since_success_seconds: Option<f64>,
    pub oldest_unconfirmed_seconds: Option<f64>,
}

/// Every watcher's lag behind its head and the clock, and its oldest unconfirmed transfer.
pub async fn cursor_lags(db: &PgPool) -> sqlx::Result<Vec<CursorLag>> {
    sqlx::query_as!(
        CursorLag,
        r#"SELECT c.network AS "network: _", c.livemode,
                  c.head_number - c.block_number AS lag_blocks,
                  extract(epoch FROM now() - c.block_time)::float8 AS lag_seconds,
                  extract(epoch FROM now() - c.last_success_at)::float8 AS since_success_seconds,
                  (SELECT extract(epoch FROM now() - min(t.created_at))::float8
                     FROM transactions t
                    WHERE t.network = c.network AND t.livemode = c.livemode
                      AND t.status = 'Unconfirmed') AS oldest_unconfirmed_seconds
             FROM chain_cursors c"#
    )
    .fetch_all(db)
    .await
}

/// Takes or renews the lease on a network's watcher. True when `owner` holds it afterwards.
pub async fn acquire_lease(
    db: &PgPool,
    network: Network,
    livemode: bool,
    owner: Uuid,
    ttl: Duration,
) -> sqlx::Result<bool> {
    let held = sqlx::query_scalar!(
        "INSERT INTO chain_cursors (network, livemode, lease_owner, lease_expires_at)
         VALUES ($1, $2, $3, now() + make_interval(secs => $4))
         ON CONFLICT (network, livemode) DO UPDATE
            SET lease_owner = EXCLUDED.lease_owner, lease_expires_at = EXCLUDED.lease_expires_at
          WHERE chain_cursors.lease_owner IS NULL
             OR chain_cursors.lease_owner = EXCLUDED.lease_owner
             OR chain_cursors.lease_expires_at < now()
         RETURNING lease_owner",
        network as Network,
        livemode,
        owner,
        ttl.as_secs_f64(),
    )
    .fetch_optional(db)
    .await?;
    Ok(held.flatten() == Some(owner))
}

/// Gives the lease up at once (on shutdown), so another replica need not wait for it to lapse.
pub async fn release_lease(
    db: &PgPool,
    network: Network,
    livemode: bool,
    owner: Uuid,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE chain_cursors SET lease_owner = NULL, lease_expires_at = NULL
          WHERE network = $1 AND livemode = $2 AND lease_owner = $3",
        network as Network,
        livemode,
        owner,
    )
    .execute(db)
    .await?;
    Ok(())
}

pub async fn cursor(
    db: impl PgExecutor<'_>,
    network: Network,
    livemode: bool,
) -> sqlx::Result<Option<CursorRow>> {
    sqlx::query_as!(
        CursorRow,
        r#"SELECT network AS "network: _", livemode, block_number, block_hash, block_time, safe_time,
                  head_number, final_number, last_success_at, last_error, last_error_at,
                  lease_owner, lease_expires_at
             FROM chain_cursors WHERE network = $1 AND livemode = $2"#,
        network as Network,
        livemode,
    )
    .fetch_optional(db)
    .await
}

pub async fn all_cursors(db: &PgPool) -> sqlx::Result<Vec<CursorRow>> {
    sqlx::query_as!(
        CursorRow,
        r#"SELECT network AS "network: _", livemode, block_number, block_hash, block_time, safe_time,
                  head_number, final_number, last_success_at, last_error, last_error_at,
                  lease_owner, lease_expires_at
             FROM chain_cursors ORDER BY livemode, network"#
    )
    .fetch_all(db)
    .await
}

/// Where a scan ended: the block whose transfers are now all stored, and the newest block
/// scanned with its confirmations on top (final).
#[derive(Debug, Clone)]
pub struct CursorAdvance {
    pub block_number: i64,
    pub block_hash: String,
    pub block_time: DateTime<Utc>,
    pub final_number: i64,
    pub final_hash: String,
    /// The final block's time: expiry waits for it to pass `expires_at`.
    pub safe_time: DateTime<Utc>,
    pub head_number: i64,
}

/// Checkpoints kept per network for walking back after a deep reorg.
const CHECKPOINTS_KEPT: i64 = 128;

/// Moves the cursor and records the final block's checkpoint, inside the transaction that
/// stored the range's transfers. False when `owner` no longer holds the lease: the caller
/// must roll back.
pub async fn advance_cursor(
    tx: &mut Transaction<'_, Postgres>,
    network: Network,
    livemode: bool,
    owner: Uuid,
    to: &CursorAdvance,
) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE chain_cursors
            SET block_number = $4, block_hash = $5, block_time = $6, head_number = $7,
                safe_time = $8, final_number = $9,
                last_success_at = now(), last_error = NULL, last_error_at = NULL
          WHERE network = $1 AND livemode = $2 AND lease_owner = $3",
        network as Network,
        livemode,
        owner,
        to.block_number,
        to.block_hash,
        to.block_time,
        to.head_number,
        to.safe_time,
        to.final_number,
    )
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    sqlx::query!(
        "WITH put AS (
            INSERT INTO chain_checkpoints (network, livemode, number, hash) VALUES ($1, $2, $3, $4)
            ON CONFLICT (network, livemode, number) DO UPDATE SET hash = EXCLUDED.hash
         )
         DELETE FROM chain_checkpoints
          WHERE network = $1 AND livemode = $2
            AND number < (SELECT number FROM chain_checkpoints
                           WHERE network = $1 AND livemode = $2
                           ORDER BY number DESC OFFSET $5 LIMIT 1)",
        network as Network,
        livemode,
        to.final_number,
        to.final_hash,
        CHECKPOINTS_KEPT - 1,
    )
    .execute(&mut **tx)
    .await?;
    Ok(true)
}

/// After a walk-back: the final block is the older one that still matches, and expiry waits
/// for the rescan to pass `expires_at` again.
pub async fn rewind_final(
    db: &PgPool,
    network: Network,
    livemode: bool,
    owner: Uuid,
    final_number: i64,
    safe_time: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE chain_cursors SET final_number = $4, safe_time = $5
          WHERE network = $1 AND livemode = $2 AND lease_owner = $3",
        network as Network,
        livemode,
        owner,
        final_number,
        safe_time,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The hash block `number` had when it became final, if recorded.
pub async fn checkpoint(
    db: &PgPool,
    network: Network,
    livemode: bool,
    number: i64,
) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!(
        "SELECT hash FROM chain_checkpoints WHERE network = $1 AND livemode = $2 AND number = $3",
        network as Network,
        livemode,
        number,
    )
    .fetch_optional(db)
    .await
}

/// A block's hash when it became final.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub number: i64,
    pub hash: String,
}

/// Recorded checkpoints below `number`, newest first.
pub async fn checkpoints_below(
    db: &PgPool,
    network: Network,
    livemode: bool,
    number: i64,
    limit: i64,
) -> sqlx::Result<Vec<Checkpoint>> {
    sqlx::query_as!(
        Checkpoint,
        "SELECT number, hash FROM chain_checkpoints
          WHERE network = $1 AND livemode = $2 AND number < $3
          ORDER BY number DESC LIMIT $4",
        network as Network,
        livemode,
        number,
        limit,
    )
    .fetch_all(db)
    .await
}

pub async fn record_error(
    db: &PgPool,
    network: Network,
    livemode: bool,
    owner: Uuid,
    error: &str,
) -> sqlx::Result<()> {
    let error: String = error.chars().take(500).collect();
    sqlx::query!(
        "UPDATE chain_cursors SET last_error = $4, last_error_at = now()
          WHERE network = $1 AND livemode = $2 AND lease_owner = $3",
        network as Network,
        livemode,
        owner,
        error,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The pay addresses a watcher asks the node about: open sessions', and closed ones' until
/// `late_window` after their `expires_at`, so late payments are still seen; at most `limit`.
pub async fn watched_addresses(
    db: &PgPool,
    network: Network,
    livemode: bool,
    late_window: Duration,
    limit: Option<i64>,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        "SELECT pay_address FROM checkout_sessions
          WHERE network = $1 AND livemode = $2
            AND (status IN ('Pending', 'Underpaid')
                 OR expires_at > now() - make_interval(secs => $3))
          LIMIT $4",
        network as Network,
        livemode,
        late_window.as_secs_f64(),
        limit,
    )
    .fetch_all(db)
    .await
}

/// A session that a transfer's recipient address belongs to.
#[derive(Debug, Clone)]
pub struct AddressOwner {
    pub pay_address: String,
    pub session_id: String,
    pub currency_contract: String,
    pub token_decimals: i16,
}

/// The sessions of this network and mode whose pay address is one of `addresses`: one
/// indexed lookup for a whole scanned range, however many sessions are open.
pub async fn sessions_by_address(
    db: &PgPool,
    network: Network,
    livemode: bool,
    family: ChainFamily,
    addresses: &[String],
) -> sqlx::Result<Vec<AddressOwner>> {
    if addresses.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as!(
        AddressOwner,
        "SELECT pay_address, id AS session_id, currency_contract, token_decimals
           FROM checkout_sessions
          WHERE chain_family = $1 AND pay_address = ANY($2) AND network = $3 AND livemode = $4",
        family as ChainFamily,
        addresses,
        network as Network,
        livemode,
    )
    .fetch_all(db)
    .await
}

#[derive(Debug, Clone)]
pub struct NewTransfer {
    pub session_id: String,
    pub tx_hash: String,
    pub log_index: i64,
    pub block_number: i64,
    pub block_hash: String,
    pub from_address: String,
    pub to_address: String,
    pub amount: Decimal,
    pub token_contract: String,
    pub block_time: DateTime<Utc>,
    /// The sender is on the denylist.
    pub blocked: bool,
    /// Another configured token than the session's currency.
    pub unexpected: bool,
}

/// Stores transfers once per (network, mode, tx hash, log index). A transfer seen again in a
/// different block (a reorg moved it) gets the new block while it is not yet decided; a
/// confirmed or failed one never changes. Returns how many rows were new or moved.
pub async fn upsert_transfers(
    tx: &mut Transaction<'_, Postgres>,
    network: Network,
    livemode: bool,
    transfers: &[NewTransfer],
) -> sqlx::Result<u64> {
    if transfers.is_empty() {
        return Ok(0);
    }
    macro_rules! column {
        ($field:ident) => {
            transfers
                .iter()
                .map(|t| t.$field.clone())
                .collect::<Vec<_>>()
        };
    }
    let done = sqlx::query!(
        "INSERT INTO transactions (session_id, network, livemode, tx_hash, log_index,
                block_number, block_hash, from_address, to_address, amount, token_contract,
                blocked, block_time, unexpected)
         SELECT s, $1, $2, h, i, bn, bh, f, t, a, c, b, bt, u
           FROM UNNEST($3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::text[],
                       $8::text[], $9::text[], $10::numeric[], $11::text[], $12::boolean[],
                       $13::timestamptz[], $14::boolean[])
                AS u(s, h, i, bn, bh, f, t, a, c, b, bt, u)
         ON CONFLICT (network, livemode, tx_hash, log_index) DO UPDATE
            -- Log indexes count across the block: in another block, (tx, index) may name
            -- another of the transaction's transfers. An unsettled row takes what the chain
            -- says now, whole.
            SET block_number = EXCLUDED.block_number, block_hash = EXCLUDED.block_hash,
                block_time = EXCLUDED.block_time, session_id = EXCLUDED.session_id,
                from_address = EXCLUDED.from_address, to_address = EXCLUDED.to_address,
                amount = EXCLUDED.amount, token_contract = EXCLUDED.token_contract,
                blocked = EXCLUDED.blocked, unexpected = EXCLUDED.unexpected,
                status = 'Unconfirmed', due_since = NULL, updated_at = now()
          WHERE transactions.status = 'NotFound'
             OR (transactions.status = 'Unconfirmed'
                 AND transactions.block_hash IS DISTINCT FROM EXCLUDED.block_hash)",
        network as Network,
        livemode,
        &column!(session_id),
        &column!(tx_hash),
        &column!(log_index),
        &column!(block_number),
        &column!(block_hash),
        &column!(from_address),
        &column!(to_address),
        &column!(amount),
        &column!(token_contract),
        &column!(blocked),
        &column!(block_time),
        &column!(unexpected),
    )
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

#[derive(Debug, Clone)]
pub struct NewAnomaly {
    pub tx_hash: String,
    pub log_index: i64,
    pub kind: &'static str,
    pub session_id: Option<String>,
    pub detail: String,
}

/// Stores anomalies once per (network, mode, tx, log index, kind), and counts each new dust
/// transfer on its session, in one statement.
pub async fn insert_anomalies(
    tx: &mut Transaction<'_, Postgres>,
    network: Network,
    livemode: bool,
    anomalies: &[NewAnomaly],
) -> sqlx::Result<()> {
    if anomalies.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&NewAnomaly) -> String| anomalies.iter().map(f).collect::<Vec<_>>();
    let log_indexes: Vec<i64> = anomalies.iter().map(|a| a.log_index).collect();
    let sessions: Vec<Option<String>> = anomalies.iter().map(|a| a.session_id.clone()).collect();
    sqlx::query!(
        r#"WITH new AS (
              INSERT INTO chain_anomalies (network, livemode, tx_hash, log_index, kind, session_id, detail)
              SELECT $1, $2, h, i, k, s, d
                FROM UNNEST($3::text[], $4::bigint[], $5::text[], $6::text[], $7::text[])
                     AS u(h, i, k, s, d)
              ON CONFLICT ON CONSTRAINT chain_anomalies_once DO NOTHING
              RETURNING session_id, kind
           )
           UPDATE checkout_sessions s SET dust_count = s.dust_count + n.count
             FROM (SELECT session_id, count(*)::int AS count FROM new
                    WHERE kind = 'dust' AND session_id IS NOT NULL GROUP BY session_id) n
            WHERE s.id = n.session_id"#,
        network as Network,
        livemode,
        &column(|a| a.tx_hash.clone()),
        &log_indexes,
        &column(|a| a.kind.to_owned()),
        &sessions as &[Option<String>],
        &column(|a| a.detail.clone()),
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One transfer below the minimum to the session's address (a simulation's).
pub async fn count_dust(tx: &mut Transaction<'_, Postgres>, session_id: &str) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE checkout_sessions SET dust_count = dust_count + 1 WHERE id = $1",
        session_id,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// An unconfirmed transfer, as stored.
#[derive(Debug, Clone)]
pub struct PendingTransfer {
    pub id: i64,
    pub session_id: String,
    pub tx_hash: String,
    pub log_index: i64,
    pub block_number: Option<i64>,
    pub block_hash: Option<String>,
    pub to_address: String,
    pub amount: Decimal,
    pub token_contract: Option<String>,
}

/// Unconfirmed transfers in blocks at or below `max_block`, oldest first; each is marked due
/// from now on (the first time), so a transfer that stays due is seen by `/readyz`.
pub async fn due_transfers(
    db: &PgPool,
    network: Network,
    livemode: bool,
    max_block: i64,
    limit: i64,
) -> sqlx::Result<Vec<PendingTransfer>> {
    sqlx::query_as!(
        PendingTransfer,
        "WITH due AS (
            SELECT id FROM transactions
             WHERE network = $1 AND livemode = $2 AND status = 'Unconfirmed'
               AND block_number <= $3
             ORDER BY block_number, id
             LIMIT $4
         )
         UPDATE transactions t SET due_since = COALESCE(t.due_since, now())
           FROM due WHERE t.id = due.id
         RETURNING t.id, t.session_id, t.tx_hash, t.log_index, t.block_number, t.block_hash,
                   t.to_address, t.amount, t.token_contract",
        network as Network,
        livemode,
        max_block,
        limit,
    )
    .fetch_all(db)
    .await
}

/// Since when the oldest transfer of a network and mode that has its confirmations has been
/// waiting to be settled.
#[derive(Debug, Clone)]
pub struct OldestDue {
    pub network: Network,
    pub livemode: bool,
    pub since: DateTime<Utc>,
}

pub async fn oldest_due(db: &PgPool) -> sqlx::Result<Vec<OldestDue>> {
    sqlx::query_as!(
        OldestDue,
        r#"SELECT network AS "network: _", livemode, min(due_since) AS "since!"
             FROM transactions
            WHERE status = 'Unconfirmed' AND due_since IS NOT NULL
            GROUP BY network, livemode"#
    )
    .fetch_all(db)
    .await
}

/// Settles a transfer that will never be credited (`NotFound` or `Failed`).
pub async fn set_outcome(db: &PgPool, id: i64, status: TransactionStatus) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE transactions SET status = $2, updated_at = now()
          WHERE id = $1 AND status = 'Unconfirmed'",
        id,
        status as TransactionStatus,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Open sessions past `expires_at` become Expired, but only where the network's watcher has
/// scanned confirmed blocks past that moment (or the network is simulated: no chain to wait for) and no
/// transfer mined in time is still confirming (one mined after `expires_at` is late anyway).
/// Returns the expired ids.
pub async fn expire_due(
    db: impl PgExecutor<'_>,
    simulated_networks: &[Network],
    simulated_livemodes: &[bool],
    limit: i64,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        "WITH due AS (
            SELECT s.id FROM checkout_sessions s
             WHERE s.status IN ('Pending', 'Underpaid') AND s.expires_at <= now()
               AND (EXISTS (SELECT 1 FROM chain_cursors c
                             WHERE c.network = s.network AND c.livemode = s.livemode
                               -- Strictly past: a later block may share the final one's second.
                               AND c.safe_time > s.expires_at)
                    OR (s.network, s.livemode) IN (SELECT * FROM UNNEST($1::text[], $2::boolean[])))
               AND NOT EXISTS (SELECT 1 FROM transactions t
                                WHERE t.session_id = s.id AND t.status = 'Unconfirmed'
                                  AND NOT t.unexpected
                                  AND (t.block_time IS NULL OR t.block_time <= s.expires_at))
             ORDER BY s.expires_at
             LIMIT $3
             FOR UPDATE OF s SKIP LOCKED
         )
         UPDATE checkout_sessions s SET status = 'Expired', updated_at = now()
           FROM due WHERE s.id = due.id AND s.status IN ('Pending', 'Underpaid')
         RETURNING s.id",
        simulated_networks as &[Network],
        simulated_livemodes,
        limit,
    )
    .fetch_all(db)
    .await
}
