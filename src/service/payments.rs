//! Crediting a confirmed transfer: the transfer's status, the session's total and status, the
//! fee fixed on payment, and the events, together in one transaction, at most once per
//! transfer. The rules themselves are `domain::credit::decide`.

use crate::config::TokenConfig;
use crate::db::payments as db;
use crate::domain::credit::{self, ConfirmedTransfer, Decision, SessionState};
use crate::domain::event::EventType;
use crate::domain::ids::random_id;
use crate::domain::money::{format_amount, FeeSchedule};
use crate::domain::network::ChainFamily;
use crate::domain::session::SessionStatus;
use crate::faults::{FaultPoint, Faults};
use crate::service::{events, Error, Field};
use crate::state::AppState;
use chrono::{DurationRound, Utc};
use rust_decimal::Decimal;
use serde_json::json;
use sqlx::{PgPool, Postgres, Transaction};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credit {
    /// Added to the session; its status is now this.
    Credited(SessionStatus),
    /// Not credited: the session was closed, or the transfer was mined after `expires_at`
    /// (then the session is Expired now).
    Late,
    /// The sender is denylisted: the session is Blocked, nothing credited.
    Blocked,
    /// Another token than the session's: counted and reported, never credited.
    Unexpected,
    /// Below the minimum creditable amount (simulations): counted on the session only.
    Dust,
    /// Another worker decided this transfer first.
    AlreadySettled,
}

/// Confirms transfer `id` and applies it to its session, with its events, in one transaction.
/// `tokens` are the network's, to name an unexpected token in its event.
pub async fn confirm_and_credit(
    db: &PgPool,
    faults: &Faults,
    transfer_id: i64,
    base_url: &str,
    tokens: &[TokenConfig],
) -> Result<Credit, Error> {
    let mut tx = db.begin().await?;
    let outcome = credit_in(&mut tx, faults, transfer_id, base_url, tokens).await?;
    tx.commit().await?;
    Ok(outcome)
}

/// The crediting itself, inside the caller's transaction.
async fn credit_in(
    tx: &mut Transaction<'_, Postgres>,
    faults: &Faults,
    transfer_id: i64,
    base_url: &str,
    tokens: &[TokenConfig],
) -> Result<Credit, Error> {
    let Some(locked) = db::lock_unconfirmed(tx, transfer_id).await? else {
        return Ok(Credit::AlreadySettled);
    };
    let session_id = locked.session_id.clone();
    let now = Utc::now()
        .duration_trunc(chrono::Duration::seconds(1))
        .map_err(Error::internal)?;
    let session = SessionState {
        status: locked.status,
        amount: locked.amount,
        amount_received: locked.amount_received,
        expires_at: locked.expires_at,
        fees: FeeSchedule {
            rate: locked.fee_rate,
            floor: locked.fee_floor,
        },
    };
    let transfer = ConfirmedTransfer {
        amount: locked.transfer_amount,
        block_time: locked.block_time,
        blocked: locked.blocked,
        unexpected: locked.unexpected,
    };
    let decision = credit::decide(&session, &transfer, now).map_err(Error::internal)?;

    let mut to_record: Vec<EventType> = Vec::new();
    let outcome = match &decision {
        Decision::Credit(c) => {
            db::apply_credit(tx, &session_id, c).await?;
            to_record.push(if c.status.is_paid() {
                EventType::Completed
            } else {
                EventType::Underpaid
            });
            Credit::Credited(c.status)
        }
        Decision::Late { expire } => {
            if *expire {
                db::close_session(tx, &session_id, SessionStatus::Expired).await?;
                to_record.push(EventType::Expired);
            }
            if db::claim_late_event(tx, &session_id).await? {
                to_record.push(EventType::LatePayment);
            }
            Credit::Late
        }
        Decision::Block => {
            db::close_session(tx, &session_id, SessionStatus::Blocked).await?;
            to_record.push(EventType::Blocked);
            Credit::Blocked
        }
        Decision::Unexpected => {
            db::count_unexpected(tx, &session_id).await?;
            Credit::Unexpected
        }
    };
    db::mark_confirmed(
        tx,
        transfer_id,
        matches!(decision, Decision::Credit(_)),
        matches!(decision, Decision::Late { .. }),
    )
    .await?;
    faults.hit(FaultPoint::StatusChanged);
    for event in to_record {
        events::record(tx, &session_id, event, base_url).await?;
    }
    if decision == Decision::Unexpected {
        let currency = locked.token_contract.as_deref().and_then(|c| {
            tokens
                .iter()
                .find(|t| t.contract == c)
                .map(|t| t.token.as_str())
        });
        let payment = json!({
            "tx_hash": locked.tx_hash,
            "amount": format_amount(locked.transfer_amount),
            "currency": currency,
            "network": locked.network,
            "token_contract": locked.token_contract,
        });
        events::record_with(
            tx,
            &session_id,
            EventType::UnexpectedPayment,
            base_url,
            Some(("unexpected_payment", payment)),
        )
        .await?;
    }
    Ok(outcome)
}

/// Test mode: a transfer of `amount` to the session, mined now and confirmed at once, taking
/// exactly the path a chain transfer takes (dust rule, statuses, events), in one transaction.
pub async fn simulate(
    state: &AppState,
    merchant_id: uuid::Uuid,
    session_id: &str,
    amount: Decimal,
) -> Result<Credit, Error> {
    let mut tx = state.db.begin().await?;
    let target = db::lock_test_session(&mut tx, merchant_id, session_id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no checkout session '{session_id}'")))?;
    let decimals = target.token_decimals;
    if amount.scale() > u32::try_from(decimals).unwrap_or(0) {
        return Err(Error::invalid(
            Field::Amount,
            format!("the token has {decimals} decimals; the amount has more"),
        ));
    }
    let hash = random_id("");
    let tx_hash = if target.chain_family == ChainFamily::Tron {
        format!("{hash}{hash}")
    } else {
        format!("0x{hash}{hash}")
    };
    if amount < min_amount(state, &target) {
        crate::db::chain::count_dust(&mut tx, session_id).await?;
        tx.commit().await?;
        return Ok(Credit::Dust);
    }
    let transfer_id =
        db::insert_simulated_transfer(&mut tx, session_id, &target, &tx_hash, amount).await?;
    let outcome = credit_in(
        &mut tx,
        &state.faults,
        transfer_id,
        &state.config.base_url,
        &[],
    )
    .await?;
    tx.commit().await?;
    if matches!(outcome, Credit::Credited(status) if status.is_paid()) {
        crate::metrics::session_completed(target.network, false);
    }
    Ok(outcome)
}

/// The session's token's minimum creditable amount in test mode.
fn min_amount(state: &AppState, target: &db::SimulationTarget) -> Decimal {
    state
        .config
        .network(target.network, crate::domain::api_key::Mode::Test)
        .tokens
        .iter()
        .find(|t| t.contract == target.currency_contract)
        .map_or(crate::config::DEFAULT_MIN_AMOUNT, |t| t.min_amount)
}
