//! Whether each network's watcher keeps up: `/readyz` reports it, and creating a session on a
//! network whose watcher is stale is refused (a customer would pay into a chain nobody reads).

use crate::config::NetworkConfig;
use crate::db::chain::{self as db, CursorRow};
use crate::domain::api_key::Mode;
use crate::domain::network::Network;
use crate::service::Error;
use crate::state::AppState;
use chrono::{DateTime, Utc};
use dashmap::DashMap;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// How long a create reuses a health reading.
const CACHE_TTL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Ok,
    /// The watcher does not keep up with the chain: payments are not even detected.
    Stale(String),
    /// Detection works, but a transfer that has its confirmations is not being settled.
    Degraded(String),
}

/// Degraded when the oldest transfer due for settling has waited longer than `max_lag`.
pub fn judge_settling(net: &NetworkConfig, oldest_due: Option<DateTime<Utc>>) -> Health {
    let Some(since) = oldest_due else {
        return Health::Ok;
    };
    let age = (Utc::now() - since).num_seconds().max(0);
    if age > i64::try_from(net.max_lag.as_secs()).unwrap_or(i64::MAX) {
        return Health::Degraded(format!(
            "a confirmed transfer has waited {age} s to be settled (see last_error)"
        ));
    }
    Health::Ok
}

/// Judges a cursor row against the network's bounds.
pub fn judge(net: &NetworkConfig, row: Option<&CursorRow>) -> Health {
    let Some(success) = row.and_then(|r| r.last_success_at) else {
        return Health::Stale("has not completed a scan yet".into());
    };
    let age = (Utc::now() - success).num_seconds().max(0);
    if age > i64::try_from(net.max_lag.as_secs()).unwrap_or(i64::MAX) {
        return Health::Stale(format!("last scanned the chain {age} s ago"));
    }
    let behind = row
        .and_then(|r| Some(r.head_number? - r.block_number?))
        .unwrap_or(0);
    if behind > i64::try_from(net.max_lag_blocks).unwrap_or(i64::MAX) {
        return Health::Stale(format!("is {behind} blocks behind the chain head"));
    }
    Health::Ok
}

#[derive(Default)]
pub struct HealthCache(DashMap<(Network, Mode), (Instant, Health)>);

/// 503 when the network is read from a chain and its watcher is stale.
pub async fn ensure_fresh(state: &AppState, net: &NetworkConfig) -> Result<(), Error> {
    if !net.watched() {
        return Ok(());
    }
    let key = (net.network, net.mode);
    let cached = state
        .chain_health
        .0
        .get(&key)
        .filter(|e| e.0.elapsed() < CACHE_TTL)
        .map(|e| e.1.clone());
    let health = match cached {
        Some(h) => h,
        None => {
            let row = db::cursor(&state.db, net.network, net.mode.livemode()).await?;
            let h = judge(net, row.as_ref());
            state
                .chain_health
                .0
                .insert(key, (Instant::now(), h.clone()));
            h
        }
    };
    match health {
        Health::Ok | Health::Degraded(_) => Ok(()),
        Health::Stale(why) => Err(Error::Unavailable(format!(
            "payments on {} cannot be detected right now: its chain watcher {why}; retry shortly",
            net.network.as_str()
        ))),
    }
}

/// Every watched network's state, and whether all are healthy.
pub async fn report(state: &AppState) -> Result<(bool, Value), Error> {
    let rows = db::all_cursors(&state.db).await?;
    let due = db::oldest_due(&state.db).await?;
    let mut all_ok = true;
    let mut out = serde_json::Map::new();
    for net in state.config.enabled_networks() {
        if !net.watched() {
            continue;
        }
        let row = rows
            .iter()
            .find(|r| r.network == net.network && r.livemode == net.mode.livemode());
        let oldest_due = due
            .iter()
            .find(|d| d.network == net.network && d.livemode == net.mode.livemode())
            .map(|d| d.since);
        let health = match judge(net, row) {
            Health::Ok => judge_settling(net, oldest_due),
            stale => stale,
        };
        let (status, reason) = match &health {
            Health::Ok => ("ok", None),
            Health::Stale(why) => ("stale", Some(why.clone())),
            Health::Degraded(why) => ("degraded", Some(why.clone())),
        };
        all_ok &= health == Health::Ok;
        out.insert(
            format!("{}/{}", net.network.as_str(), net.mode.as_str()),
            json!({
                "status": status,
                "reason": reason,
                "head": row.and_then(|r| r.head_number),
                "cursor": row.and_then(|r| r.block_number),
                "lag_blocks": row.and_then(|r| Some(r.head_number? - r.block_number?)),
                "seconds_since_success": row
                    .and_then(|r| r.last_success_at)
                    .map(|t| (Utc::now() - t).num_seconds()),
                "last_error": row.and_then(|r| r.last_error.clone()),
                "oldest_due_seconds": oldest_due.map(|t| (Utc::now() - t).num_seconds()),
            }),
        );
    }
    Ok((all_ok, Value::Object(out)))
}
