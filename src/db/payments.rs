//! Crediting a confirmed transfer: the session and transfer rows it reads and writes, and the
//! throttle on late-payment events.

use crate::domain::credit::Credited;
use crate::domain::network::{ChainFamily, Network};
use crate::domain::session::SessionStatus;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{PgExecutor, Postgres, Transaction};
use uuid::Uuid;

/// A transfer and its session, both locked for crediting.
#[derive(Debug, Clone)]
pub struct LockedTransfer {
    pub session_id: String,
    pub status: SessionStatus,
    pub amount: Decimal,
    pub amount_received: Decimal,
    pub fee_rate: Decimal,
    pub fee_floor: Decimal,
    pub expires_at: DateTime<Utc>,
    pub network: Network,
    pub tx_hash: String,
    pub token_contract: Option<String>,
    pub transfer_amount: Decimal,
    pub block_time: Option<DateTime<Utc>>,
    pub blocked: bool,
    pub unexpected: bool,
}

/// Locks the session and the still-unconfirmed transfer together; `None` when someone else
/// settled the transfer first (it no longer matches once its lock is granted).
pub async fn lock_unconfirmed(
    tx: &mut Transaction<'_, Postgres>,
    transfer_id: i64,
) -> sqlx::Result<Option<LockedTransfer>> {
    sqlx::query_as!(
        LockedTransfer,
        r#"SELECT t.session_id, s.status AS "status: _", s.amount, s.amount_received, s.fee_rate,
                  s.fee_floor, s.expires_at, t.network AS "network: _", t.tx_hash, t.token_contract,
                  t.amount AS transfer_amount, t.block_time, t.blocked, t.unexpected
             FROM transactions t JOIN checkout_sessions s ON s.id = t.session_id
            WHERE t.id = $1 AND t.status = 'Unconfirmed'
              FOR UPDATE OF s, t"#,
        transfer_id,
    )
    .fetch_optional(&mut **tx)
    .await
}

pub async fn apply_credit(
    tx: &mut Transaction<'_, Postgres>,
    session_id: &str,
    totals: &Credited,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE checkout_sessions
            SET status = $2, amount_received = $3, fee_amount = $4, net_amount = $5,
                paid_at = COALESCE($6, paid_at), expires_at = $7, updated_at = now()
          WHERE id = $1",
        session_id,
        totals.status as SessionStatus,
        totals.amount_received,
        totals.fee_amount,
        totals.net_amount,
        totals.paid_at,
        totals.expires_at,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Moves a locked session to a closed status (Expired or Blocked).
pub async fn close_session(
    tx: &mut Transaction<'_, Postgres>,
    session_id: &str,
    status: SessionStatus,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE checkout_sessions SET status = $2, updated_at = now() WHERE id = $1",
        session_id,
        status as SessionStatus,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn count_unexpected(
    tx: &mut Transaction<'_, Postgres>,
    session_id: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE checkout_sessions SET unexpected_count = unexpected_count + 1, updated_at = now()
          WHERE id = $1",
        session_id,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The transfer is settled: confirmed, and credited or not.
pub async fn mark_confirmed(
    tx: &mut Transaction<'_, Postgres>,
    transfer_id: i64,
    credited: bool,
    late: bool,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE transactions
            SET status = 'Confirmed', confirmed_at = now(), updated_at = now(),
                credited = $2, late = $3
          WHERE id = $1",
        transfer_id,
        credited,
        late,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// At most one `session.late_payment` a minute per session. True when the caller writes the
/// event now; otherwise the next one is scheduled for the end of the minute (see
/// [`take_due_late_events`]), covering every late transfer until then.
pub async fn claim_late_event(
    tx: &mut Transaction<'_, Postgres>,
    session_id: &str,
) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"UPDATE checkout_sessions SET
              late_event_due_at = CASE WHEN last_late_event_at > now() - interval '1 minute'
                                       THEN COALESCE(late_event_due_at, last_late_event_at + interval '1 minute')
                                  END,
              last_late_event_at = CASE WHEN last_late_event_at > now() - interval '1 minute'
                                        THEN last_late_event_at ELSE now() END
            WHERE id = $1
           RETURNING last_late_event_at = now() AS "now!""#,
        session_id,
    )
    .fetch_one(&mut **tx)
    .await
}

/// Sessions whose deferred late-payment event is due; each is marked written (the caller
/// writes the events in the same transaction).
pub async fn take_due_late_events(
    db: impl PgExecutor<'_>,
    limit: i64,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        "WITH due AS (
            SELECT id FROM checkout_sessions
             WHERE late_event_due_at <= now()
             ORDER BY late_event_due_at
             LIMIT $1
             FOR UPDATE SKIP LOCKED
         )
         UPDATE checkout_sessions s SET late_event_due_at = NULL, last_late_event_at = now()
           FROM due WHERE s.id = due.id
         RETURNING s.id",
        limit,
    )
    .fetch_all(db)
    .await
}

/// A test-mode session, locked, with what a simulated transfer needs.
#[derive(Debug, Clone)]
pub struct SimulationTarget {
    pub network: Network,
    pub chain_family: ChainFamily,
    pub pay_address: String,
    pub currency_contract: String,
    pub token_decimals: i16,
}

/// Locked first: the transfer insert takes a key-share lock on the session, and two
/// simulations each holding one would deadlock on the credit's `FOR UPDATE`.
pub async fn lock_test_session(
    tx: &mut Transaction<'_, Postgres>,
    merchant_id: Uuid,
    session_id: &str,
) -> sqlx::Result<Option<SimulationTarget>> {
    sqlx::query_as!(
        SimulationTarget,
        r#"SELECT network AS "network: _", chain_family AS "chain_family: _", pay_address,
                  currency_contract, token_decimals
             FROM checkout_sessions
            WHERE id = $1 AND merchant_id = $2 AND NOT livemode FOR UPDATE"#,
        session_id,
        merchant_id,
    )
    .fetch_optional(&mut **tx)
    .await
}

/// A synthetic transfer in a block mined now; returns its id.
pub async fn insert_simulated_transfer(
    tx: &mut Transaction<'_, Postgres>,
    session_id: &str,
    target: &SimulationTarget,
    tx_hash: &str,
    amount: Decimal,
) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        "INSERT INTO transactions (session_id, network, livemode, tx_hash, log_index, to_address,
                amount, from_address, token_contract, block_time)
         VALUES ($1, $2, false, $3, 0, $4, $5, 'simulated', $6, now()) RETURNING id",
        session_id,
        target.network as Network,
        tx_hash,
        target.pay_address,
        amount,
        target.currency_contract,
    )
    .fetch_one(&mut **tx)
    .await
}
