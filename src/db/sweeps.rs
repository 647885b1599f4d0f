//! Sweeps: imported authorizations, candidate addresses, sweep records and their items.

use super::{PageRequest, Scope};
use crate::domain::money::Token;
use crate::domain::network::Network;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

/// One imported authorization, as stored (and as imported).
#[derive(Debug, Clone)]
pub struct AuthorizationRow {
    pub address: String,
    pub address_index: i64,
    pub nonce: i64,
    pub y_parity: i16,
    pub r: Vec<u8>,
    pub s: Vec<u8>,
}

/// Stores the authorizations (a newer signature for an address replaces the older one) and
/// makes their addresses candidates again. Returns how many were stored.
pub async fn import_authorizations(
    db: &PgPool,
    merchant_id: Uuid,
    chain_id: i64,
    delegate: &str,
    entries: &[AuthorizationRow],
) -> sqlx::Result<u64> {
    let mut tx = db.begin().await?;
    let addresses: Vec<String> = entries.iter().map(|e| e.address.clone()).collect();
    let indexes: Vec<i64> = entries.iter().map(|e| e.address_index).collect();
    let nonces: Vec<i64> = entries.iter().map(|e| e.nonce).collect();
    let parities: Vec<i16> = entries.iter().map(|e| e.y_parity).collect();
    let rs: Vec<Vec<u8>> = entries.iter().map(|e| e.r.clone()).collect();
    let ss: Vec<Vec<u8>> = entries.iter().map(|e| e.s.clone()).collect();
    let stored = sqlx::query!(
        "INSERT INTO sweep_authorizations
                (chain_id, address, delegate, merchant_id, address_index, nonce, y_parity, r, s)
         SELECT $1, a, $2, $3, i, n, p, r, s
           FROM unnest($4::text[], $5::bigint[], $6::bigint[], $7::smallint[], $8::bytea[],
                       $9::bytea[]) AS u(a, i, n, p, r, s)
         ON CONFLICT (chain_id, address, delegate) DO UPDATE
            SET nonce = EXCLUDED.nonce, y_parity = EXCLUDED.y_parity, r = EXCLUDED.r,
                s = EXCLUDED.s, merchant_id = EXCLUDED.merchant_id,
                address_index = EXCLUDED.address_index, imported_at = now(), stale_at = NULL",
        chain_id,
        delegate,
        merchant_id,
        &addresses,
        &indexes,
        &nonces,
        &parities,
        &rs,
        &ss,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query!(
        "DELETE FROM sweep_addresses WHERE address = ANY ($1)",
        &addresses
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(stored)
}

/// Usable (not stale) authorizations for these addresses.
pub async fn authorizations(
    db: &PgPool,
    chain_id: i64,
    delegate: &str,
    addresses: &[String],
) -> sqlx::Result<Vec<AuthorizationRow>> {
    sqlx::query_as!(
        AuthorizationRow,
        "SELECT address, address_index, nonce, y_parity, r, s FROM sweep_authorizations
          WHERE chain_id = $1 AND delegate = $2 AND address = ANY ($3) AND stale_at IS NULL",
        chain_id,
        delegate,
        addresses,
    )
    .fetch_all(db)
    .await
}

/// The address's nonce has moved past these authorizations: they can never apply.
pub async fn mark_stale(
    db: &PgPool,
    chain_id: i64,
    delegate: &str,
    addresses: &[String],
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE sweep_authorizations SET stale_at = now()
          WHERE chain_id = $1 AND delegate = $2 AND address = ANY ($3) AND stale_at IS NULL",
        chain_id,
        delegate,
        addresses,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A deposit address with confirmed transfers not yet swept nor found below the minimum.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub address: String,
    pub address_index: i64,
    /// The newest confirmed transfer to it.
    pub through: i64,
    /// The block of its newest confirmed transfer: balances read before it are stale.
    pub through_block: Option<i64>,
}

/// The merchant's deposit addresses on the network with confirmed transfers newer than their
/// last check, and no sweep in flight; oldest transfers first.
pub async fn candidates(
    db: &PgPool,
    scope: Scope,
    network: Network,
    limit: i64,
) -> sqlx::Result<Vec<Candidate>> {
    sqlx::query_as!(
        Candidate,
        r#"SELECT s.pay_address AS address, s.address_index, max(t.id) AS "through!",
                  max(t.block_number) AS through_block
             FROM transactions t
             JOIN checkout_sessions s ON s.id = t.session_id
             LEFT JOIN sweep_addresses a
               ON a.network = t.network AND a.livemode = t.livemode AND a.address = s.pay_address
            WHERE t.network = $3 AND t.livemode = $2 AND t.status = 'Confirmed'
              AND s.merchant_id = $1 AND t.id > coalesce(a.checked_through, 0)
              AND NOT EXISTS (
                    SELECT 1 FROM sweep_items i JOIN sweeps w ON w.id = i.sweep_id
                     WHERE i.address = s.pay_address AND w.status = 'pending'
                       AND w.network = $3 AND w.livemode = $2)
            GROUP BY s.pay_address, s.address_index
            ORDER BY min(t.id)
            LIMIT $4"#,
        scope.merchant_id,
        scope.livemode,
        network as Network,
        limit,
    )
    .fetch_all(db)
    .await
}

/// Transfers up to `through` need no sweep (swept, or below the minimum).
pub async fn mark_checked(
    db: impl sqlx::PgExecutor<'_>,
    network: Network,
    livemode: bool,
    checked: &[(String, i64)],
) -> sqlx::Result<()> {
    let addresses: Vec<String> = checked.iter().map(|c| c.0.clone()).collect();
    let through: Vec<i64> = checked.iter().map(|c| c.1).collect();
    sqlx::query!(
        "INSERT INTO sweep_addresses (network, livemode, address, checked_through)
         SELECT $1, $2, a, t FROM unnest($3::text[], $4::bigint[]) AS u(a, t)
         ON CONFLICT (network, livemode, address) DO UPDATE
            SET checked_through = greatest(sweep_addresses.checked_through,
                                           EXCLUDED.checked_through),
                failed_attempts = 0",
        network as Network,
        livemode,
        &addresses,
        &through,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// After this many settled sweeps in a row that moved nothing from an address, it waits for
/// its next payment (rather than costing gas every round).
pub const MAX_FAILED_ATTEMPTS: i32 = 3;

/// Counts one more sweep that moved nothing from each `(address, through)`; an address that
/// reaches [`MAX_FAILED_ATTEMPTS`] is marked checked through `through` (it waits for its next
/// payment). Returns those addresses.
pub async fn record_failures(
    tx: &mut Transaction<'_, Postgres>,
    network: Network,
    livemode: bool,
    failed: &[(String, i64)],
) -> sqlx::Result<Vec<String>> {
    let addresses: Vec<String> = failed.iter().map(|c| c.0.clone()).collect();
    let through: Vec<i64> = failed.iter().map(|c| c.1).collect();
    sqlx::query!(
        "INSERT INTO sweep_addresses (network, livemode, address, checked_through, failed_attempts)
         SELECT $1, $2, a, 0, 1 FROM unnest($3::text[]) AS u(a)
         ON CONFLICT (network, livemode, address) DO UPDATE
            SET failed_attempts = sweep_addresses.failed_attempts + 1",
        network as Network,
        livemode,
        &addresses,
    )
    .execute(&mut **tx)
    .await?;
    sqlx::query_scalar!(
        "UPDATE sweep_addresses a
            SET checked_through = greatest(a.checked_through, u.t), failed_attempts = 0
           FROM unnest($3::text[], $4::bigint[]) AS u(address, t)
          WHERE a.network = $1 AND a.livemode = $2 AND a.address = u.address
            AND a.failed_attempts >= $5
         RETURNING a.address",
        network as Network,
        livemode,
        &addresses,
        &through,
        MAX_FAILED_ATTEMPTS,
    )
    .fetch_all(&mut **tx)
    .await
}

pub struct NewSweep<'a> {
    pub id: &'a str,
    pub scope: Scope,
    pub network: Network,
    pub treasury: &'a str,
    pub delegate: &'a str,
    pub gas_tank: &'a str,
    pub tx_hash: &'a str,
    pub tx_nonce: i64,
    pub raw_tx: &'a [u8],
    pub authorizations: i32,
}

#[derive(Debug, Clone)]
pub struct ItemRow {
    pub address: String,
    pub address_index: i64,
    pub currency: Token,
    pub contract: String,
    pub expected: Decimal,
    pub swept: Option<Decimal>,
    pub authorized: bool,
    pub through_transaction: i64,
}

/// Records a signed sweep before it is sent, so that it is sent again after a crash.
pub async fn insert(db: &PgPool, sweep: &NewSweep<'_>, items: &[ItemRow]) -> sqlx::Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query!(
        "INSERT INTO sweeps (id, merchant_id, livemode, network, treasury, delegate, gas_tank,
                             tx_hash, tx_nonce, raw_tx, authorizations)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        sweep.id,
        sweep.scope.merchant_id,
        sweep.scope.livemode,
        sweep.network as Network,
        sweep.treasury,
        sweep.delegate,
        sweep.gas_tank,
        sweep.tx_hash,
        sweep.tx_nonce,
        sweep.raw_tx,
        sweep.authorizations,
    )
    .execute(&mut *tx)
    .await?;
    for item in items {
        sqlx::query!(
            "INSERT INTO sweep_items (sweep_id, address, address_index, currency, contract,
                                      expected, authorized, through_transaction)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            sweep.id,
            item.address,
            item.address_index,
            item.currency as Token,
            item.contract,
            item.expected,
            item.authorized,
            item.through_transaction,
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

#[derive(Debug, Clone)]
pub struct SweepRow {
    pub id: String,
    pub merchant_id: Uuid,
    pub livemode: bool,
    pub network: Network,
    pub treasury: String,
    /// EVM: the SweepDelegate; TRON: the staking account that lent energy, if any.
    pub delegate: Option<String>,
    pub gas_tank: String,
    /// EVM only (a TRON sweep is several transactions: [`StepRow`]).
    pub tx_hash: Option<String>,
    pub tx_nonce: Option<i64>,
    pub raw_tx: Option<Vec<u8>>,
    pub authorizations: i32,
    /// TRON only: `delegate`, `burn` or `none`.
    pub energy_mode: Option<String>,
    pub status: String,
    pub block_number: Option<i64>,
    pub gas_used: Option<i64>,
    pub fee: Option<Decimal>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// Sweeps sent on the network and not yet settled, oldest first.
pub async fn pending(db: &PgPool, network: Network, livemode: bool) -> sqlx::Result<Vec<SweepRow>> {
    sqlx::query_as!(
        SweepRow,
        r#"SELECT id, merchant_id, livemode, network AS "network: _", treasury, delegate, gas_tank,
                  tx_hash, tx_nonce, raw_tx, authorizations, energy_mode, status, block_number,
                  gas_used, fee, created_at, finished_at
             FROM sweeps
            WHERE network = $1 AND livemode = $2 AND status = 'pending' AND energy_mode IS NULL
            ORDER BY tx_nonce"#,
        network as Network,
        livemode,
    )
    .fetch_all(db)
    .await
}

pub async fn items(
    db: impl sqlx::PgExecutor<'_>,
    sweep_ids: &[String],
) -> sqlx::Result<Vec<(String, ItemRow)>> {
    let rows = sqlx::query!(
        r#"SELECT sweep_id, address, address_index, currency AS "currency: Token", contract,
                  expected, swept, authorized, through_transaction
             FROM sweep_items WHERE sweep_id = ANY ($1) ORDER BY sweep_id, address_index, currency"#,
        sweep_ids,
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let item = ItemRow {
                address: r.address,
                address_index: r.address_index,
                currency: r.currency,
                contract: r.contract,
                expected: r.expected,
                swept: r.swept,
                authorized: r.authorized,
                through_transaction: r.through_transaction,
            };
            (r.sweep_id, item)
        })
        .collect())
}

/// How a sent sweep ended.
pub struct Outcome<'a> {
    pub status: &'a str,
    pub block_number: Option<i64>,
    pub gas_used: Option<i64>,
    pub fee: Option<Decimal>,
    /// What reached the treasury, by (address, currency).
    pub swept: &'a [(String, Token, Decimal)],
}

/// Settles a pending sweep (once: false if it was settled already).
pub async fn finish(
    tx: &mut Transaction<'_, Postgres>,
    id: &str,
    outcome: &Outcome<'_>,
) -> sqlx::Result<bool> {
    let updated = sqlx::query!(
        "UPDATE sweeps SET status = $2, block_number = $3, gas_used = $4, fee = $5,
                           finished_at = now()
          WHERE id = $1 AND status = 'pending'",
        id,
        outcome.status,
        outcome.block_number,
        outcome.gas_used,
        outcome.fee,
    )
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if updated == 0 {
        return Ok(false);
    }
    let addresses: Vec<String> = outcome.swept.iter().map(|s| s.0.clone()).collect();
    let currencies: Vec<String> = outcome
        .swept
        .iter()
        .map(|s| s.1.as_str().to_owned())
        .collect();
    let amounts: Vec<Decimal> = outcome.swept.iter().map(|s| s.2).collect();
    sqlx::query!(
        "UPDATE sweep_items i SET swept = coalesce(u.amount, 0)
           FROM sweep_items k
           LEFT JOIN unnest($2::text[], $3::text[], $4::numeric[]) AS u(address, currency, amount)
             ON u.address = k.address AND u.currency = k.currency
          WHERE i.sweep_id = $1 AND k.sweep_id = i.sweep_id AND k.address = i.address
            AND k.currency = i.currency",
        id,
        &addresses,
        &currencies,
        &amounts,
    )
    .execute(&mut **tx)
    .await?;
    Ok(true)
}

pub async fn find(
    db: impl sqlx::PgExecutor<'_>,
    scope: Scope,
    id: &str,
) -> sqlx::Result<Option<SweepRow>> {
    sqlx::query_as!(
        SweepRow,
        r#"SELECT id, merchant_id, livemode, network AS "network: _", treasury, delegate, gas_tank,
                  tx_hash, tx_nonce, raw_tx, authorizations, energy_mode, status, block_number,
                  gas_used, fee, created_at, finished_at
             FROM sweeps WHERE id = $1 AND merchant_id = $2 AND livemode = $3"#,
        id,
        scope.merchant_id,
        scope.livemode,
    )
    .fetch_optional(db)
    .await
}

/// One page of the merchant's sweeps, newest first, with the total.
pub async fn list(
    db: &PgPool,
    scope: Scope,
    rows: PageRequest,
) -> sqlx::Result<(Vec<SweepRow>, i64)> {
    let total = sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM sweeps WHERE merchant_id = $1 AND livemode = $2"#,
        scope.merchant_id,
        scope.livemode,
    )
    .fetch_one(db)
    .await?;
    let rows = sqlx::query_as!(
        SweepRow,
        r#"SELECT id, merchant_id, livemode, network AS "network: _", treasury, delegate, gas_tank,
                  tx_hash, tx_nonce, raw_tx, authorizations, energy_mode, status, block_number,
                  gas_used, fee, created_at, finished_at
             FROM sweeps WHERE merchant_id = $1 AND livemode = $2
            ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4"#,
        scope.merchant_id,
        scope.livemode,
        rows.limit,
        rows.offset,
    )
    .fetch_all(db)
    .await?;
    Ok((rows, total))
}

/// One transaction of a TRON sweep.
#[derive(Debug, Clone)]
pub struct StepRow {
    pub position: i32,
    /// `activation`, `funding`, `delegation`, `transfer` or `undelegation`.
    pub kind: String,
    pub address: String,
    pub tx_id: String,
    pub raw_tx: Vec<u8>,
    pub expiration: i64,
    /// `pending`, `sent`, `confirmed`, `failed` or `skipped`.
    pub status: String,
    pub error: Option<String>,
    pub block_number: Option<i64>,
    pub energy_used: Option<i64>,
    pub fee: Option<Decimal>,
}

pub struct NewTronSweep<'a> {
    pub id: &'a str,
    pub scope: Scope,
    pub treasury: &'a str,
    pub staking_account: Option<&'a str>,
    pub gas_wallet: &'a str,
    pub energy_mode: &'a str,
}

pub enum TronInsert {
    Inserted,
    /// The sweep was recorded before (nothing written).
    Exists,
    /// Another sweep in flight holds these addresses (nothing written).
    InFlight(Vec<String>),
}

/// Records a TRON sweep, its items and its signed transactions before anything is sent, unless
/// it exists or another sweep in flight holds one of its addresses (checked under a lock, so
/// two plans cannot both take an address).
pub async fn insert_tron(
    db: &PgPool,
    sweep: &NewTronSweep<'_>,
    items: &[ItemRow],
    steps: &[StepRow],
) -> sqlx::Result<TronInsert> {
    let mut tx = db.begin().await?;
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtext('tron-sweep-record'), $1::int)",
        i32::from(sweep.scope.livemode),
    )
    .execute(&mut *tx)
    .await?;
    let addresses: Vec<String> = items.iter().map(|i| i.address.clone()).collect();
    let held = sqlx::query_scalar!(
        "SELECT DISTINCT i.address FROM sweep_items i JOIN sweeps w ON w.id = i.sweep_id
          WHERE w.status = 'pending' AND w.network = 'TRON' AND w.livemode = $1
            AND w.id <> $2 AND i.address = ANY ($3)",
        sweep.scope.livemode,
        sweep.id,
        &addresses,
    )
    .fetch_all(&mut *tx)
    .await?;
    if !held.is_empty() {
        return Ok(TronInsert::InFlight(held));
    }
    let inserted = sqlx::query!(
        "INSERT INTO sweeps (id, merchant_id, livemode, network, treasury, delegate, gas_tank,
                             authorizations, energy_mode)
         VALUES ($1, $2, $3, 'TRON', $4, $5, $6, 0, $7)
         ON CONFLICT (id) DO NOTHING",
        sweep.id,
        sweep.scope.merchant_id,
        sweep.scope.livemode,
        sweep.treasury,
        sweep.staking_account,
        sweep.gas_wallet,
        sweep.energy_mode,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(TronInsert::Exists);
    }
    for item in items {
        sqlx::query!(
            "INSERT INTO sweep_items (sweep_id, address, address_index, currency, contract,
                                      expected, authorized, through_transaction)
             VALUES ($1, $2, $3, $4, $5, $6, false, $7)",
            sweep.id,
            item.address,
            item.address_index,
            item.currency as Token,
            item.contract,
            item.expected,
            item.through_transaction,
        )
        .execute(&mut *tx)
        .await?;
    }
    for step in steps {
        sqlx::query!(
            "INSERT INTO sweep_transactions (sweep_id, position, kind, address, tx_id, raw_tx,
                                             expiration, status, error)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            sweep.id,
            step.position,
            step.kind,
            step.address,
            step.tx_id,
            step.raw_tx,
            step.expiration,
            step.status,
            step.error,
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(TronInsert::Inserted)
}

/// The transactions of these sweeps, in order.
pub async fn steps(
    db: impl sqlx::PgExecutor<'_>,
    sweep_ids: &[String],
) -> sqlx::Result<Vec<(String, StepRow)>> {
    let rows = sqlx::query!(
        "SELECT sweep_id, position, kind, address, tx_id, raw_tx, expiration, status, error,
                block_number, energy_used, fee
           FROM sweep_transactions WHERE sweep_id = ANY ($1) ORDER BY sweep_id, position",
        sweep_ids,
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let step = StepRow {
                position: r.position,
                kind: r.kind,
                address: r.address,
                tx_id: r.tx_id,
                raw_tx: r.raw_tx,
                expiration: r.expiration,
                status: r.status,
                error: r.error,
                block_number: r.block_number,
                energy_used: r.energy_used,
                fee: r.fee,
            };
            (r.sweep_id, step)
        })
        .collect())
}

/// Records what became of one transaction.
pub async fn update_step(db: &PgPool, sweep_id: &str, step: &StepRow) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE sweep_transactions
            SET status = $3, error = $4, block_number = $5, energy_used = $6, fee = $7,
                tx_id = $8, raw_tx = $9, expiration = $10
          WHERE sweep_id = $1 AND position = $2",
        sweep_id,
        step.position,
        step.status,
        step.error,
        step.block_number,
        step.energy_used,
        step.fee,
        step.tx_id,
        step.raw_tx,
        step.expiration,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// What a confirmed transfer moved from `address` to the treasury.
pub async fn set_swept(
    db: &PgPool,
    sweep_id: &str,
    address: &str,
    currency: Token,
    swept: Decimal,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE sweep_items SET swept = $4 WHERE sweep_id = $1 AND address = $2 AND currency = $3",
        sweep_id,
        address,
        currency as Token,
        swept,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A sweep by id alone (the broadcaster resumes its own).
pub async fn find_by_id(db: &PgPool, id: &str) -> sqlx::Result<Option<SweepRow>> {
    sqlx::query_as!(
        SweepRow,
        r#"SELECT id, merchant_id, livemode, network AS "network: _", treasury, delegate, gas_tank,
                  tx_hash, tx_nonce, raw_tx, authorizations, energy_mode, status, block_number,
                  gas_used, fee, created_at, finished_at
             FROM sweeps WHERE id = $1"#,
        id,
    )
    .fetch_optional(db)
    .await
}
