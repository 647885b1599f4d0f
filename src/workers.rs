//! Background work. Each worker is a `tick()` that tests can call; `run_worker` is the one
//! loop around them all (pacing, backoff, panics, shutdown).

use crate::domain::event::EventType;
use crate::domain::network::Network;
use crate::state::AppState;
use futures_util::FutureExt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What a tick asks of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// More work is waiting: run again at once.
    Again,
    /// Caught up: wait the worker's interval.
    Wait,
}

/// Ticks that panicked, over every worker since start (a panic is logged and the worker lives).
pub static WORKER_PANICS: AtomicU64 = AtomicU64::new(0);

/// Runs `tick` until `shutdown`: again at once when it says so, else every `every`; after a
/// failure or a panic it waits `every` × failures (at most `max_backoff`).
pub async fn run_worker<F, Fut, E>(
    name: &str,
    every: Duration,
    max_backoff: Duration,
    shutdown: CancellationToken,
    mut tick: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Pace, E>>,
    E: std::fmt::Display,
{
    let mut failures: u32 = 0;
    loop {
        let wait = match AssertUnwindSafe(tick()).catch_unwind().await {
            Ok(Ok(pace)) => {
                failures = 0;
                if pace == Pace::Again {
                    Duration::ZERO
                } else {
                    every
                }
            }
            Ok(Err(e)) => {
                failures += 1;
                tracing::warn!(worker = name, error = %e, failures, "worker tick failed");
                every.saturating_mul(failures.min(10)).min(max_backoff)
            }
            Err(_) => {
                failures += 1;
                WORKER_PANICS.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    worker = name,
                    failures,
                    "worker tick panicked; the worker goes on"
                );
                every.saturating_mul(failures.min(10)).min(max_backoff)
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    tracing::info!(worker = name, "worker stopped");
}

/// Deletes idempotency keys past their retention, in small batches.
pub async fn idempotency_cleanup_tick(state: &AppState) -> sqlx::Result<u64> {
    crate::db::idempotency::cleanup(&state.db, state.config.idempotency.retention, 1000).await
}

/// Expires open sessions past `expires_at` whose network's watcher has caught up with that
/// moment (simulated networks have no chain to wait for). Returns the expired ids.
pub async fn expiry_tick(state: &AppState) -> sqlx::Result<Vec<String>> {
    let simulated: Vec<_> = state
        .config
        .enabled_networks()
        .into_iter()
        .filter(|n| n.simulated)
        .map(|n| (n.network, n.mode.livemode()))
        .collect();
    let (networks, modes): (Vec<Network>, Vec<bool>) = simulated.into_iter().unzip();
    record_due(state, Due::Expired(&networks, &modes)).await
}

/// Writes the `session.late_payment` events that were held back by the one-a-minute limit,
/// each covering the late transfers since the last one. Returns the sessions.
pub async fn late_events_tick(state: &AppState) -> sqlx::Result<Vec<String>> {
    record_due(state, Due::LatePayments).await
}

/// Sessions that are due an event: expiring ones (on these networks and modes), or ones with
/// held-back late payments.
enum Due<'a> {
    Expired(&'a [Network], &'a [bool]),
    LatePayments,
}

/// Takes what is due in batches, each committed with its events; returns the sessions.
async fn record_due(state: &AppState, due: Due<'_>) -> sqlx::Result<Vec<String>> {
    const BATCH: usize = 200;
    let mut sessions = Vec::new();
    loop {
        let mut tx = state.db.begin().await?;
        let (batch, event_type) = match due {
            Due::Expired(networks, modes) => (
                crate::db::chain::expire_due(&mut *tx, networks, modes, BATCH as i64).await?,
                EventType::Expired,
            ),
            Due::LatePayments => (
                crate::db::payments::take_due_late_events(&mut *tx, BATCH as i64).await?,
                EventType::LatePayment,
            ),
        };
        for id in &batch {
            let base_url = &state.config.base_url;
            crate::service::events::record(&mut tx, id, event_type, base_url).await?;
        }
        tx.commit().await?;
        let done = batch.len() < BATCH;
        sessions.extend(batch);
        if done {
            return Ok(sessions);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_panicking_tick_is_logged_and_the_worker_goes_on() {
        let calls = Arc::new(AtomicU32::new(0));
        let shutdown = CancellationToken::new();
        let (c, stop) = (calls.clone(), shutdown.clone());
        let before = WORKER_PANICS.load(Ordering::Relaxed);
        let worker = tokio::spawn(run_worker(
            "test",
            Duration::from_millis(5),
            Duration::from_millis(20),
            shutdown.clone(),
            move || {
                let (c, stop) = (c.clone(), stop.clone());
                async move {
                    match c.fetch_add(1, Ordering::SeqCst) {
                        0 => panic!("a bug in one tick"),
                        1 => Err("a failed tick"),
                        2 => Ok(Pace::Again),
                        _ => {
                            stop.cancel();
                            Ok(Pace::Wait)
                        }
                    }
                }
            },
        ));
        tokio::time::timeout(Duration::from_secs(5), worker)
            .await
            .expect("the worker stops on shutdown")
            .expect("the worker itself never panics");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            4,
            "it went on after the panic and the error"
        );
        assert!(WORKER_PANICS.load(Ordering::Relaxed) > before);
    }
}
