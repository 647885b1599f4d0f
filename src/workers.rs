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
