//! Idempotency keys: claim, take over, complete, release, clean up.

use super::Scope;
use sqlx::{PgExecutor, PgPool};
use std::time::Duration;
use uuid::Uuid;

/// A key this request owns until it stores a response or releases it.
#[derive(Debug, Clone)]
pub struct Claim {
    pub scope: Scope,
    pub key: String,
    pub owner: Uuid,
}

#[derive(Debug, Clone)]
pub struct Existing {
    pub request_hash: Vec<u8>,
    pub state: ClaimState,
    pub stale: bool,
    pub response_status: Option<i16>,
    pub response_body: Option<Vec<u8>>,
}

crate::domain::names::string_enum! {
    /// A key is `running` while its request is, then `done` with the stored response.
    pub enum ClaimState ("a claim state") {
        Running = "running", Done = "done",
    }
}

pub enum ClaimOutcome {
    Claimed(Claim),
    Existing(Existing),
}

/// Claims the key for this request, or returns what is already there.
pub async fn claim(
    db: &PgPool,
    scope: Scope,
    key: &str,
    request_hash: &[u8],
    lock_timeout: Duration,
) -> sqlx::Result<ClaimOutcome> {
    loop {
        let owner = Uuid::new_v4();
        // Committed without waiting for the disk: other requests see the claim at once, and a
        // claim lost to a database crash took nothing with it (the session's own commit
        // flushes the log past the claim, so a stored session always has its claim).
        let inserted = sqlx::query!(
            "INSERT INTO idempotency_keys (merchant_id, livemode, key, request_hash, state, owner, locked_at)
             SELECT $1, $2, $3, $4, 'running', $5, now()
               FROM (SELECT set_config('synchronous_commit', 'off', true)) AS no_disk_wait
             ON CONFLICT (merchant_id, livemode, key) DO NOTHING",
            scope.merchant_id,
            scope.livemode,
            key,
            request_hash,
            owner,
        )
        .execute(db)
        .await?;
        if inserted.rows_affected() == 1 {
            return Ok(ClaimOutcome::Claimed(Claim {
                scope,
                key: key.to_owned(),
                owner,
            }));
        }
        let existing = sqlx::query_as!(
            Existing,
            r#"SELECT request_hash, state AS "state: _", response_status, response_body,
                      (state = 'running' AND locked_at < now() - make_interval(secs => $4)) AS "stale!"
                 FROM idempotency_keys WHERE merchant_id = $1 AND livemode = $2 AND key = $3"#,
            scope.merchant_id,
            scope.livemode,
            key,
            lock_timeout.as_secs_f64(),
        )
        .fetch_optional(db)
        .await?;
        // Released between the two statements: try to claim again.
        if let Some(existing) = existing {
            return Ok(ClaimOutcome::Existing(existing));
        }
    }
}

/// Takes over a claim whose owner has not finished within the lock timeout. At most one taker wins.
pub async fn take_over(
    db: &PgPool,
    scope: Scope,
    key: &str,
    lock_timeout: Duration,
) -> sqlx::Result<Option<Claim>> {
    let owner = Uuid::new_v4();
    let won = sqlx::query!(
        "UPDATE idempotency_keys SET owner = $4, locked_at = now()
         WHERE merchant_id = $1 AND livemode = $2 AND key = $3 AND state = 'running'
           AND locked_at < now() - make_interval(secs => $5)",
        scope.merchant_id,
        scope.livemode,
        key,
        owner,
        lock_timeout.as_secs_f64(),
    )
    .execute(db)
    .await?;
    Ok((won.rows_affected() == 1).then(|| Claim {
        scope,
        key: key.to_owned(),
        owner,
    }))
}

/// Stores the response; false when the claim was lost to a taker.
pub async fn complete(
    db: impl PgExecutor<'_>,
    claim: &Claim,
    status: u16,
    body: &[u8],
) -> sqlx::Result<bool> {
    let status = i16::try_from(status).map_err(|e| sqlx::Error::Encode(e.into()))?;
    let done = sqlx::query!(
        "UPDATE idempotency_keys
         SET state = 'done', response_status = $5, response_body = $6, owner = NULL, locked_at = NULL
         WHERE merchant_id = $1 AND livemode = $2 AND key = $3 AND owner = $4",
        claim.scope.merchant_id,
        claim.scope.livemode,
        claim.key,
        claim.owner,
        status,
        body,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives the key up (nothing stored), so a corrected retry can use it.
pub async fn release(db: &PgPool, claim: &Claim) -> sqlx::Result<()> {
    sqlx::query!(
        "DELETE FROM idempotency_keys
         WHERE merchant_id = $1 AND livemode = $2 AND key = $3 AND owner = $4 AND state = 'running'",
        claim.scope.merchant_id,
        claim.scope.livemode,
        claim.key,
        claim.owner,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Deletes keys older than `retention` in small batches (row locks only, skipping busy rows),
/// and forgets the key on sessions of that age. Each batch is its own statement, so no lock is
/// held for long. Returns the number of keys deleted.
pub async fn cleanup(db: &PgPool, retention: Duration, batch: i64) -> sqlx::Result<u64> {
    let age = retention.as_secs_f64();
    let deleted = in_batches(batch, || {
        sqlx::query!(
            "DELETE FROM idempotency_keys WHERE ctid IN (
                SELECT ctid FROM idempotency_keys
                WHERE created_at < now() - make_interval(secs => $1)
                LIMIT $2 FOR UPDATE SKIP LOCKED)",
            age,
            batch,
        )
        .execute(db)
    })
    .await?;
    in_batches(batch, || {
        sqlx::query!(
            "UPDATE checkout_sessions SET idempotency_key = NULL WHERE id IN (
                SELECT id FROM checkout_sessions
                WHERE idempotency_key IS NOT NULL AND created_at < now() - make_interval(secs => $1)
                LIMIT $2 FOR UPDATE SKIP LOCKED)",
            age,
            batch,
        )
        .execute(db)
    })
    .await?;
    Ok(deleted)
}

/// Runs a batch statement until one comes back short; the rows it touched in all.
async fn in_batches<F, Fut>(batch: i64, mut run: F) -> sqlx::Result<u64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = sqlx::Result<sqlx::postgres::PgQueryResult>>,
{
    let mut total = 0;
    loop {
        let done = run().await?.rows_affected();
        total += done;
        if done < batch.unsigned_abs() {
            return Ok(total);
        }
    }
}
