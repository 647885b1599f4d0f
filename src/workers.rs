//! Background loops. Each is a `tick()` that tests can call, plus a loop around it.

use crate::state::AppState;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Deletes idempotency keys past their retention, in small batches.
pub async fn idempotency_cleanup_tick(state: &AppState) -> sqlx::Result<u64> {
    crate::db::idempotency::cleanup(&state.db, state.config.idempotency.retention, 1000).await
}

pub fn spawn_idempotency_cleanup(
    state: AppState,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(600));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = every.tick() => match idempotency_cleanup_tick(&state).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(deleted = n, "expired idempotency keys deleted"),
                    Err(e) => tracing::warn!(error = %e, "idempotency cleanup failed"),
                },
            }
        }
        tracing::info!("idempotency cleanup stopped");
    })
}

/// Expires open sessions past `expires_at` whose network's watcher has caught up with that
/// moment (simulated networks have no chain to wait for). Returns the expired ids.
pub async fn expiry_tick(state: &AppState) -> sqlx::Result<Vec<String>> {
    let simulated: Vec<_> = state
        .config
        .enabled_networks()
        .into_iter()
        .filter(|n| n.simulated)
        .map(|n| (n.network.as_str().to_owned(), n.mode.livemode()))
        .collect();
    let (networks, modes): (Vec<String>, Vec<bool>) = simulated.into_iter().unzip();
    const BATCH: usize = 200;
    let mut expired = Vec::new();
    loop {
        // Each batch and its events commit together.
        let mut tx = state.db.begin().await?;
        let batch = crate::db::chain::expire_due(&mut *tx, &networks, &modes, BATCH as i64).await?;
        for id in &batch {
            crate::service::events::record(
                &mut tx,
                id,
                crate::domain::event::EventType::Expired,
                &state.config.base_url,
            )
            .await?;
        }
        tx.commit().await?;
        let done = batch.len() < BATCH;
        expired.extend(batch);
        if done {
            return Ok(expired);
        }
    }
}

/// Writes the `session.late_payment` events that were held back by the one-a-minute limit,
/// each covering the late transfers since the last one. Returns the sessions.
pub async fn late_events_tick(state: &AppState) -> sqlx::Result<Vec<String>> {
    const BATCH: usize = 200;
    let mut written = Vec::new();
    loop {
        let mut tx = state.db.begin().await?;
        let batch = crate::db::payments::take_due_late_events(&mut *tx, BATCH as i64).await?;
        for id in &batch {
            crate::service::events::record(
                &mut tx,
                id,
                crate::domain::event::EventType::LatePayment,
                &state.config.base_url,
            )
            .await?;
        }
        tx.commit().await?;
        let done = batch.len() < BATCH;
        written.extend(batch);
        if done {
            return Ok(written);
        }
    }
}

pub fn spawn_expiry(state: AppState, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(state.config.watcher.expiry_interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = every.tick() => {
                    match expiry_tick(&state).await {
                        Ok(ids) if ids.is_empty() => {}
                        Ok(ids) => tracing::info!(count = ids.len(), "sessions expired"),
                        Err(e) => tracing::warn!(error = %e, "expiry failed"),
                    }
                    if let Err(e) = late_events_tick(&state).await {
                        tracing::warn!(error = %e, "writing held-back late-payment events failed");
                    }
                }
            }
        }
        tracing::info!("expiry worker stopped");
    })
}

/// One watcher task per network and mode read from a chain.
pub fn spawn_watchers(
    state: &AppState,
    shutdown: CancellationToken,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut handles = Vec::new();
    for net in state.config.enabled_networks() {
        if !net.watched() {
            continue;
        }
        let watcher = crate::chain::watcher::Watcher::new(
            state,
            net,
            crate::chain::rpc::RetryPolicy::default(),
        )?;
        handles.push(tokio::spawn(watcher.run(shutdown.clone())));
    }
    Ok(handles)
}

/// Every background loop of `serve`.
pub fn spawn_all(
    state: &AppState,
    shutdown: CancellationToken,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut handles = spawn_watchers(state, shutdown.clone())?;
    let dispatcher =
        crate::webhooks::dispatcher::Dispatcher::new(state.db.clone(), &state.config.webhooks)?;
    handles.push(tokio::spawn(dispatcher.run(shutdown.clone())));
    handles.push(spawn_expiry(state.clone(), shutdown.clone()));
    handles.push(spawn_idempotency_cleanup(state.clone(), shutdown));
    Ok(handles)
}
