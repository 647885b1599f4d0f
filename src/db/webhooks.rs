//! Webhook endpoints, deliveries and attempts.

use super::Scope;
use crate::domain::event::{AttemptOutcome, DeliveryStatus, EventType};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct EndpointRow {
    pub id: String,
    pub merchant_id: Uuid,
    pub livemode: bool,
    pub url: String,
    pub event_types: Option<Vec<EventType>>,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_secret_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

pub async fn insert_endpoint(
    db: &PgPool,
    id: &str,
    scope: Scope,
    url: &str,
    event_types: Option<&[EventType]>,
    secret: &str,
) -> sqlx::Result<EndpointRow> {
    sqlx::query_as!(
        EndpointRow,
        r#"INSERT INTO webhook_endpoints (id, merchant_id, livemode, url, event_types, secret)
           VALUES ($1, $2, $3, $4, $5, $6)
           RETURNING id, merchant_id, livemode, url, event_types AS "event_types: _", secret, previous_secret,
                  previous_secret_until, created_at, deleted_at"#,
        id,
        scope.merchant_id,
        scope.livemode,
        url,
        event_types as Option<&[EventType]>,
        secret,
    )
    .fetch_one(db)
    .await
}

pub async fn list_endpoints(db: &PgPool, scope: Scope) -> sqlx::Result<Vec<EndpointRow>> {
    sqlx::query_as!(
        EndpointRow,
        r#"SELECT id, merchant_id, livemode, url, event_types AS "event_types: _", secret, previous_secret,
                  previous_secret_until, created_at, deleted_at
             FROM webhook_endpoints
            WHERE merchant_id = $1 AND livemode = $2 AND deleted_at IS NULL
            ORDER BY created_at, id"#,
        scope.merchant_id,
        scope.livemode,
    )
    .fetch_all(db)
    .await
}

/// Soft delete: past deliveries keep their endpoint; no new ones are made.
pub async fn delete_endpoint(db: &PgPool, scope: Scope, id: &str) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE webhook_endpoints SET deleted_at = now()
          WHERE id = $1 AND merchant_id = $2 AND livemode = $3 AND deleted_at IS NULL",
        id,
        scope.merchant_id,
        scope.livemode,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The new secret signs from now on; the old one also signs until `overlap` has passed.
pub async fn rotate_secret(
    db: &PgPool,
    scope: Scope,
    id: &str,
    secret: &str,
    overlap: chrono::Duration,
) -> sqlx::Result<Option<EndpointRow>> {
    sqlx::query_as!(
        EndpointRow,
        r#"UPDATE webhook_endpoints
              SET previous_secret = secret, previous_secret_until = now() + $5, secret = $4
            WHERE id = $1 AND merchant_id = $2 AND livemode = $3 AND deleted_at IS NULL
           RETURNING id, merchant_id, livemode, url, event_types AS "event_types: _", secret, previous_secret,
                  previous_secret_until, created_at, deleted_at"#,
        id,
        scope.merchant_id,
        scope.livemode,
        secret,
        overlap as _,
    )
    .fetch_optional(db)
    .await
}

/// A delivery claimed for sending, with what the request needs.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub id: i64,
    pub claim_token: Uuid,
    pub attempts: i32,
    pub event_id: String,
    pub event_type: EventType,
    pub livemode: bool,
    pub created_at: DateTime<Utc>,
    pub data: serde_json::Value,
    pub url: String,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_secret_until: Option<DateTime<Utc>>,
}

/// Claims up to `limit` due deliveries for `hold`; rows another dispatcher holds are skipped,
/// and a claim whose holder died lapses after `hold`.
///
/// Fair, not strictly oldest first: the endpoints with due deliveries take turns, and within
/// an endpoint its sessions take turns (oldest first within a turn), so a noisy session or
/// endpoint delays the others by one place per turn rather than by its whole backlog. The
/// candidates are bounded: every live endpoint with due deliveries contributes its oldest
/// `max(limit, candidates / due endpoints)` of them, so the query's cost follows `candidates`
/// and the number of endpoints, not the number of due rows. Within one endpoint, sessions take
/// turns among those oldest rows (a session's event further back waits for that window).
pub async fn claim_due(
    db: &PgPool,
    limit: i64,
    candidates: i64,
    hold: std::time::Duration,
) -> sqlx::Result<Vec<ClaimedDelivery>> {
    sqlx::query_as!(
        ClaimedDelivery,
        r#"WITH RECURSIVE pending_endpoints AS (
            -- A loose index scan: each endpoint with pending deliveries, one probe each.
            (SELECT endpoint_id FROM webhook_deliveries WHERE status = 'pending'
              ORDER BY endpoint_id LIMIT 1)
            UNION ALL
            SELECT next.endpoint_id FROM pending_endpoints p CROSS JOIN LATERAL (
                SELECT d.endpoint_id FROM webhook_deliveries d
                 WHERE d.status = 'pending' AND d.endpoint_id > p.endpoint_id
                 ORDER BY d.endpoint_id LIMIT 1) next
         ), due_endpoints AS (
            -- Not deleted, with a due delivery nobody holds.
            SELECT p.endpoint_id FROM pending_endpoints p
              JOIN webhook_endpoints w ON w.id = p.endpoint_id AND w.deleted_at IS NULL
             WHERE EXISTS (
                SELECT 1 FROM webhook_deliveries d
                 WHERE d.endpoint_id = p.endpoint_id AND d.status = 'pending'
                   AND d.next_attempt_at <= now()
                   AND (d.locked_until IS NULL OR d.locked_until < now()))
         ), share AS (
            SELECT greatest($1, $3 / greatest(count(*), 1)) AS per_endpoint FROM due_endpoints
         ), candidates AS (
            SELECT c.id, c.endpoint_id, c.next_attempt_at,
                   coalesce(e.session_id, e.sweep_id) AS session_id
              FROM due_endpoints p
             CROSS JOIN LATERAL (
                SELECT d.id, d.endpoint_id, d.next_attempt_at, d.event_id
                  FROM webhook_deliveries d
                 WHERE d.endpoint_id = p.endpoint_id AND d.status = 'pending'
                   AND d.next_attempt_at <= now()
                   AND (d.locked_until IS NULL OR d.locked_until < now())
                 ORDER BY d.next_attempt_at, d.id
                 LIMIT (SELECT per_endpoint FROM share)) c
              JOIN events e ON e.id = c.event_id
         ), turns AS (
            -- Within an endpoint, its sessions' 1st deliveries first (oldest first), then their
            -- 2nd... Across endpoints, each endpoint's 1st turn first, then the 2nd...
            SELECT id, next_attempt_at,
                   row_number() OVER (PARTITION BY endpoint_id
                                      ORDER BY session_turn, next_attempt_at, id) AS turn
              FROM (SELECT id, endpoint_id, next_attempt_at,
                           row_number() OVER (PARTITION BY endpoint_id, session_id
                                              ORDER BY next_attempt_at, id) AS session_turn
                      FROM candidates) by_session
         ), picks AS (
            -- Some spares for rows another dispatcher is locking right now.
            SELECT id, turn, next_attempt_at FROM turns
             ORDER BY turn, next_attempt_at, id LIMIT 2 * $1
         ), due AS (
            SELECT d.id FROM webhook_deliveries d JOIN picks ON picks.id = d.id
             WHERE d.status = 'pending' AND d.next_attempt_at <= now()
               AND (d.locked_until IS NULL OR d.locked_until < now())
             ORDER BY picks.turn, picks.next_attempt_at, picks.id
             LIMIT $1
             FOR UPDATE OF d SKIP LOCKED
         ), claimed AS (
            UPDATE webhook_deliveries d
               SET locked_until = now() + make_interval(secs => $2), updated_at = now(),
                   claim_token = gen_random_uuid()
              FROM due WHERE d.id = due.id
            RETURNING d.id, d.claim_token, d.attempts, d.event_id, d.endpoint_id
         )
         SELECT c.id AS "id!", c.claim_token AS "claim_token!", c.attempts AS "attempts!",
                e.id AS event_id, e.event_type AS "event_type: _", e.livemode, e.created_at,
                e.data, w.url, w.secret, w.previous_secret, w.previous_secret_until
           FROM claimed c
           JOIN events e ON e.id = c.event_id
           JOIN webhook_endpoints w ON w.id = c.endpoint_id"#,
        limit,
        hold.as_secs_f64(),
        candidates,
    )
    .fetch_all(db)
    .await
}

pub struct AttemptRecord {
    pub delivery_id: i64,
    pub claim_token: Uuid,
    pub duration_ms: i32,
    pub status_code: Option<i32>,
    pub outcome: AttemptOutcome,
}

/// Logs the attempt and moves the delivery on: `succeeded`, `failed` (no retry left), or
/// pending again at `next_attempt_at`. One transaction. A claim that lapsed or was reset
/// (resend) no longer decides the delivery; the attempt is still logged.
pub async fn finish_attempt(
    db: &PgPool,
    attempt: &AttemptRecord,
    status: DeliveryStatus,
    next_attempt_at: Option<DateTime<Utc>>,
) -> sqlx::Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query!(
        "INSERT INTO webhook_attempts (delivery_id, duration_ms, status_code, outcome)
         VALUES ($1, $2, $3, $4)",
        attempt.delivery_id,
        attempt.duration_ms,
        attempt.status_code,
        attempt.outcome as AttemptOutcome,
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "UPDATE webhook_deliveries
            SET status = $2, attempts = attempts + 1, locked_until = NULL, claim_token = NULL,
                updated_at = now(),
                next_attempt_at = COALESCE($3, next_attempt_at)
          WHERE id = $1 AND claim_token = $4",
        attempt.delivery_id,
        status as DeliveryStatus,
        next_attempt_at,
        attempt.claim_token,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub id: i64,
    pub endpoint_id: String,
    pub url: String,
    pub status: DeliveryStatus,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct AttemptRow {
    pub delivery_id: i64,
    pub attempted_at: DateTime<Utc>,
    pub duration_ms: i32,
    pub status_code: Option<i32>,
    pub outcome: AttemptOutcome,
}

pub async fn deliveries_of(
    db: &PgPool,
    event_id: &str,
) -> sqlx::Result<(Vec<DeliveryRow>, Vec<AttemptRow>)> {
    let deliveries = sqlx::query_as!(
        DeliveryRow,
        r#"SELECT d.id, d.endpoint_id, w.url, d.status AS "status: _", d.attempts,
                  d.next_attempt_at
             FROM webhook_deliveries d JOIN webhook_endpoints w ON w.id = d.endpoint_id
            WHERE d.event_id = $1 ORDER BY d.id"#,
        event_id,
    )
    .fetch_all(db)
    .await?;
    let ids: Vec<i64> = deliveries.iter().map(|d| d.id).collect();
    let attempts = sqlx::query_as!(
        AttemptRow,
        r#"SELECT delivery_id, attempted_at, duration_ms, status_code, outcome AS "outcome: _"
             FROM webhook_attempts
            WHERE delivery_id = ANY($1) ORDER BY attempted_at, id"#,
        &ids,
    )
    .fetch_all(db)
    .await?;
    Ok((deliveries, attempts))
}

/// Resends allowed per event within an hour.
pub const RESENDS_PER_HOUR: i64 = 10;

pub enum Resend {
    /// How many deliveries are now due.
    Due(u64),
    /// Over the limit: seconds until the oldest resend of the hour lapses.
    Limited(u64),
}

/// Sends the event again now: its deliveries become pending and due, and endpoints created
/// since get one too; at most [`RESENDS_PER_HOUR`] times in any hour.
pub async fn resend(db: &PgPool, event_id: &str) -> sqlx::Result<Resend> {
    let mut tx = db.begin().await?;
    // The event's row lock serializes resends of one event. It is taken in its own statement:
    // the count below then reads a snapshot taken after the lock was granted, so it is exact.
    sqlx::query_scalar!(
        "SELECT 1 AS locked FROM events WHERE id = $1 FOR UPDATE",
        event_id
    )
    .fetch_optional(&mut *tx)
    .await?;
    let recent = sqlx::query!(
        r#"WITH pruned AS (DELETE FROM event_resends
                            WHERE event_id = $1 AND resent_at <= now() - interval '1 hour')
           SELECT count(*) AS "count!",
                  extract(epoch FROM min(resent_at) + interval '1 hour' - now())::float8 AS wait
             FROM event_resends
            WHERE event_id = $1 AND resent_at > now() - interval '1 hour'"#,
        event_id,
    )
    .fetch_one(&mut *tx)
    .await?;
    if recent.count >= RESENDS_PER_HOUR {
        let wait = recent.wait.unwrap_or(3600.0).ceil().max(1.0) as u64;
        return Ok(Resend::Limited(wait));
    }
    sqlx::query!("INSERT INTO event_resends (event_id) VALUES ($1)", event_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query!(
        "INSERT INTO webhook_deliveries (event_id, endpoint_id)
         SELECT e.id, w.id FROM events e JOIN webhook_endpoints w
           ON w.merchant_id = e.merchant_id AND w.livemode = e.livemode
          WHERE e.id = $1 AND w.deleted_at IS NULL
            AND (w.event_types IS NULL OR e.event_type = ANY (w.event_types))
         ON CONFLICT ON CONSTRAINT webhook_deliveries_once DO NOTHING",
        event_id,
    )
    .execute(&mut *tx)
    .await?;
    let due = sqlx::query!(
        "UPDATE webhook_deliveries d SET status = 'pending', next_attempt_at = now(),
                locked_until = NULL, claim_token = NULL, updated_at = now()
           FROM webhook_endpoints w
          WHERE d.event_id = $1 AND w.id = d.endpoint_id AND w.deleted_at IS NULL",
        event_id,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Resend::Due(due.rows_affected()))
}

/// Deliveries waiting for their attempt now.
pub async fn due_count(db: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM webhook_deliveries
            WHERE status = 'pending' AND next_attempt_at <= now()"#
    )
    .fetch_one(db)
    .await
}
