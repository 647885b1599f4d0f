//! Crediting a confirmed transfer: the transfer's status, the session's total and status, and
//! the fee fixed on payment change together in one transaction, at most once per transfer.

use crate::domain::event::EventType;
use crate::domain::ids::random_id;
use crate::domain::money::FeeSchedule;
use crate::domain::session::{status_after_payment, SessionStatus};
use crate::faults::{FaultPoint, Faults};
use crate::service::events;
use chrono::{DurationRound, Utc};
use rust_decimal::Decimal;
use sqlx::{PgPool, Postgres, Transaction};

/// How long an underpaid session stays open for a top-up, from the payment that left it short.
pub const UNDERPAID_EXTENSION: chrono::Duration = chrono::Duration::hours(24);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credit {
    /// Added to the session; its status is now this.
    Credited(SessionStatus),
    /// The session was already Paid/Overpaid/Expired/Blocked: recorded as a late payment.
    Late,
    /// The sender is denylisted: the session is Blocked (if it was open), nothing credited.
    Blocked,
    /// Another worker decided this transfer first.
    AlreadySettled,
}

#[derive(sqlx::FromRow)]
struct Locked {
    session_id: String,
    status: String,
    amount: Decimal,
    amount_received: Decimal,
    fee_rate: Decimal,
    fee_floor: Decimal,
    transfer_amount: Decimal,
    blocked: bool,
}

/// Confirms transfer `id` and applies it to its session, with its event, in one transaction.
pub async fn confirm_and_credit(
    db: &PgPool,
    faults: &Faults,
    transfer_id: i64,
    base_url: &str,
) -> anyhow::Result<Credit> {
    let mut tx = db.begin().await?;
    let outcome = credit_in(&mut tx, faults, transfer_id, base_url).await?;
    tx.commit().await?;
    Ok(outcome)
}

/// The crediting itself, inside the caller's transaction.
async fn credit_in(
    tx: &mut Transaction<'_, Postgres>,
    faults: &Faults,
    transfer_id: i64,
    base_url: &str,
) -> anyhow::Result<Credit> {
    // Locks the session and the transfer together; a transfer someone else settled first no
    // longer matches once its lock is granted.
    let locked: Option<Locked> = sqlx::query_as(
        "SELECT t.session_id, s.status, s.amount, s.amount_received, s.fee_rate, s.fee_floor,
                t.amount AS transfer_amount, t.blocked
           FROM transactions t JOIN checkout_sessions s ON s.id = t.session_id
          WHERE t.id = $1 AND t.status = 'Unconfirmed'
            FOR UPDATE OF s, t",
    )
    .bind(transfer_id)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(session) = locked else {
        return Ok(Credit::AlreadySettled);
    };
    let session_id = session.session_id.clone();
    let status = SessionStatus::parse(&session.status)
        .ok_or_else(|| anyhow::anyhow!("session {session_id} has status {}", session.status))?;
    let now = Utc::now().duration_trunc(chrono::Duration::seconds(1))?;

    let outcome = if !status.is_open() {
        Credit::Late
    } else if session.blocked {
        sqlx::query(
            "UPDATE checkout_sessions SET status = 'Blocked', updated_at = now() WHERE id = $1",
        )
        .bind(&session_id)
        .execute(&mut **tx)
        .await?;
        Credit::Blocked
    } else {
        let received = session
            .amount_received
            .checked_add(session.transfer_amount)
            .ok_or_else(|| anyhow::anyhow!("amount_received of {session_id} would overflow"))?;
        let new_status = status_after_payment(session.amount, received);
        let fees = FeeSchedule {
            rate: session.fee_rate,
            floor: session.fee_floor,
        };
        // Fee and net stay on `amount` until paid, then are fixed on what was received.
        let (fee, net) = fees.split(if new_status.is_paid() {
            received
        } else {
            session.amount
        });
        sqlx::query(
            "UPDATE checkout_sessions
                SET status = $2, amount_received = $3, fee_amount = $4, net_amount = $5,
                    paid_at = CASE WHEN $6 THEN $7 ELSE paid_at END,
                    expires_at = CASE WHEN $8 THEN GREATEST(expires_at, $9) ELSE expires_at END,
                    updated_at = now()
              WHERE id = $1",
        )
        .bind(&session_id)
        .bind(new_status.as_str())
        .bind(received)
        .bind(fee)
        .bind(net)
        .bind(new_status.is_paid())
        .bind(now)
        .bind(new_status == SessionStatus::Underpaid)
        .bind(now + UNDERPAID_EXTENSION)
        .execute(&mut **tx)
        .await?;
        Credit::Credited(new_status)
    };

    sqlx::query(
        "UPDATE transactions
            SET status = 'Confirmed', confirmed_at = now(), updated_at = now(),
                credited = $2, late = $3
          WHERE id = $1",
    )
    .bind(transfer_id)
    .bind(matches!(outcome, Credit::Credited(_)))
    .bind(outcome == Credit::Late)
    .execute(&mut **tx)
    .await?;
    faults.hit(FaultPoint::StatusChanged);
    let event = match &outcome {
        Credit::Credited(s) if s.is_paid() => Some(EventType::Completed),
        Credit::Credited(_) => Some(EventType::Underpaid),
        Credit::Late => Some(EventType::LatePayment),
        Credit::Blocked => Some(EventType::Blocked),
        Credit::AlreadySettled => None,
    };
    if let Some(event) = event {
        events::record(tx, &session_id, event, base_url).await?;
    }
    Ok(outcome)
}

#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error("no such session")]
    NotFound,
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for SimulateError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(e.into())
    }
}

/// Test mode: a confirmed transfer of `amount` to the session, credited by exactly the path a
/// chain transfer takes (same statuses, same events), in one transaction.
pub async fn simulate(
    db: &PgPool,
    faults: &Faults,
    merchant_id: uuid::Uuid,
    session_id: &str,
    amount: Decimal,
    base_url: &str,
) -> Result<Credit, SimulateError> {
    let mut tx = db.begin().await?;
    let session: Option<(String, String, String, i16)> = sqlx::query_as(
        // Locked first: the transfer insert below takes a key-share lock on the session, and
        // two simulations each holding one would deadlock on the credit's FOR UPDATE.
        "SELECT network, chain_family, pay_address, token_decimals FROM checkout_sessions
          WHERE id = $1 AND merchant_id = $2 AND NOT livemode FOR UPDATE",
    )
    .bind(session_id)
    .bind(merchant_id)
    .fetch_optional(&mut *tx)
    .await?;
    let (network, family, pay_address, decimals) = session.ok_or(SimulateError::NotFound)?;
    if amount.scale() > u32::try_from(decimals).unwrap_or(0) {
        return Err(SimulateError::Invalid(format!(
            "the token has {decimals} decimals; the amount has more"
        )));
    }
    let hash = random_id("");
    let tx_hash = if family == "tron" {
        format!("{hash}{hash}")
    } else {
        format!("0x{hash}{hash}")
    };
    let transfer_id: i64 = sqlx::query_scalar(
        "INSERT INTO transactions (session_id, network, livemode, tx_hash, log_index, to_address,
                amount, from_address)
         VALUES ($1, $2, false, $3, 0, $4, $5, 'simulated') RETURNING id",
    )
    .bind(session_id)
    .bind(&network)
    .bind(&tx_hash)
    .bind(&pay_address)
    .bind(amount)
    .fetch_one(&mut *tx)
    .await?;
    let outcome = credit_in(&mut tx, faults, transfer_id, base_url).await?;
    tx.commit().await?;
    Ok(outcome)
}
