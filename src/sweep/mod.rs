//! Collecting the money: deposit addresses delegate (EIP-7702) to a contract that can only
//! send their balances to the merchant's treasury; a gas tank pays for batched sweeps.
//!
//! - [`delegate`]: the `SweepDelegate` contract, its deterministic address, its calls;
//! - [`authorize`]: offline signing of the authorizations from the merchant's mnemonic;
//! - [`sweeper`]: the worker that plans, sends and records the sweeps;
//! - [`tron`]: TRON transactions (protobuf), built and signed offline.

pub mod authorize;
pub mod delegate;
pub mod sweeper;
pub mod tron;

use crate::db::sweeps::{self as db, ItemRow, Outcome, SweepRow};
use crate::db::Scope;
use crate::domain::api_key::Mode;
use crate::domain::event::EventType;
use crate::domain::ids::random_id;
use crate::domain::network::Network;
use rust_decimal::Decimal;
use sqlx::PgPool;
use std::collections::BTreeMap;

/// Settles a sweep, once: its outcome; the addresses it swept are done up to the transfers it
/// covered; those `failed` says moved nothing count one more failure; a completed sweep sends
/// `sweep.completed`. Returns the addresses given up on (`None`: it was settled already).
pub async fn settle(
    pool: &PgPool,
    sweep: &SweepRow,
    outcome: &Outcome<'_>,
    failed: impl Fn(&ItemRow) -> bool,
) -> sqlx::Result<Option<Vec<String>>> {
    let mut tx = pool.begin().await?;
    if !db::finish(&mut tx, &sweep.id, outcome).await? {
        return Ok(None);
    }
    let items = db::items(&mut *tx, std::slice::from_ref(&sweep.id)).await?;
    let done: Vec<(String, i64)> = items
        .iter()
        .filter(|(_, i)| i.swept.is_some_and(|s| s > Decimal::ZERO))
        .map(|(_, i)| (i.address.clone(), i.through_transaction))
        .collect();
    db::mark_checked(&mut *tx, sweep.network, sweep.livemode, &done).await?;
    let failures: BTreeMap<String, i64> = items
        .iter()
        .filter(|(_, i)| !done.iter().any(|(a, _)| *a == i.address) && failed(i))
        .map(|(_, i)| (i.address.clone(), i.through_transaction))
        .collect();
    let failures: Vec<(String, i64)> = failures.into_iter().collect();
    let given_up = if failures.is_empty() {
        Vec::new()
    } else {
        db::record_failures(&mut tx, sweep.network, sweep.livemode, &failures).await?
    };
    if outcome.status == "completed" {
        let scope = Scope {
            merchant_id: sweep.merchant_id,
            livemode: sweep.livemode,
        };
        let row = db::find(&mut *tx, scope, &sweep.id)
            .await?
            .unwrap_or_else(|| sweep.clone());
        let steps = db::steps(&mut *tx, std::slice::from_ref(&sweep.id)).await?;
        let data = crate::views::sweep_json(
            &row,
            items.iter().map(|(_, i)| i),
            steps.iter().map(|(_, s)| s),
        );
        crate::db::events::insert(
            &mut tx,
            &random_id("evt_"),
            sweep.merchant_id,
            sweep.livemode,
            EventType::SweepCompleted,
            crate::db::events::Subject::Sweep(&sweep.id),
            &data,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Some(given_up))
}

/// The last gas-tank balance each sweeper read (for readiness).
#[derive(Default)]
pub struct GasTanks(dashmap::DashMap<(Network, Mode), GasTankReading>);

#[derive(Debug, Clone)]
pub struct GasTankReading {
    pub address: String,
    pub balance: Decimal,
    pub low_gas_balance: Decimal,
}

impl GasTanks {
    pub fn record(&self, network: Network, mode: Mode, reading: GasTankReading) {
        self.0.insert((network, mode), reading);
    }

    /// `NETWORK/mode` → its reading, in a stable order.
    pub fn readings(&self) -> Vec<(String, GasTankReading)> {
        let mut out: Vec<_> = self
            .0
            .iter()
            .map(|e| {
                (
                    format!("{}/{}", e.key().0, e.key().1.as_str()),
                    e.value().clone(),
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}
