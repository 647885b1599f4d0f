//! Events and what webhook deliveries they fan out to.

use super::sessions::{self, SessionRow, TransactionRow};
use super::{PageRequest, Scope};
use crate::domain::event::EventType;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct EventRow {
    pub id: String,
    pub merchant_id: Uuid,
    pub livemode: bool,
    pub event_type: EventType,
    /// `None` for a sweep's event.
    pub session_id: Option<String>,
    pub data: Value,
    pub created_at: DateTime<Utc>,
}

/// The session and its newest `limit` listed transactions (oldest first), read inside the
/// transaction that changed them.
pub async fn session_snapshot(
    tx: &mut Transaction<'_, Postgres>,
    session_id: &str,
    limit: i64,
) -> sqlx::Result<(SessionRow, Vec<TransactionRow>)> {
    let row = sessions::by_id(&mut **tx, session_id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    let txs = sessions::newest_transactions(&mut **tx, session_id, limit).await?;
    Ok((row, txs))
}

/// What an event is about.
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    Session(&'a str),
    Sweep(&'a str),
}

/// Inserts the event and, in the same statement, one pending delivery per live endpoint of
/// the merchant and mode that subscribes to its type.
pub async fn insert(
    tx: &mut Transaction<'_, Postgres>,
    id: &str,
    merchant_id: Uuid,
    livemode: bool,
    event_type: EventType,
    subject: Subject<'_>,
    data: &Value,
) -> sqlx::Result<()> {
    let (session_id, sweep_id) = match subject {
        Subject::Session(id) => (Some(id), None),
        Subject::Sweep(id) => (None, Some(id)),
    };
    sqlx::query!(
        "WITH e AS (
            INSERT INTO events (id, merchant_id, livemode, event_type, session_id, sweep_id, data)
            VALUES ($1, $2, $3, $4, $5, $7, $6)
            RETURNING id
         )
         INSERT INTO webhook_deliveries (event_id, endpoint_id)
         SELECT e.id, w.id FROM e, webhook_endpoints w
          WHERE w.merchant_id = $2 AND w.livemode = $3 AND w.deleted_at IS NULL
            AND (w.event_types IS NULL OR $4 = ANY (w.event_types))",
        id,
        merchant_id,
        livemode,
        event_type as EventType,
        session_id,
        data,
        sweep_id,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn find(db: &PgPool, scope: Scope, id: &str) -> sqlx::Result<Option<EventRow>> {
    sqlx::query_as!(
        EventRow,
        r#"SELECT id, merchant_id, livemode, event_type AS "event_type: _", session_id, data,
                  created_at
             FROM events WHERE id = $1 AND merchant_id = $2 AND livemode = $3"#,
        id,
        scope.merchant_id,
        scope.livemode,
    )
    .fetch_optional(db)
    .await
}

/// One page, newest first, and the total.
pub async fn list(
    db: &PgPool,
    scope: Scope,
    event_type: Option<EventType>,
    session_id: Option<&str>,
    rows: PageRequest,
) -> sqlx::Result<(Vec<EventRow>, i64)> {
    let total = sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM events
            WHERE merchant_id = $1 AND livemode = $2
              AND ($3::text IS NULL OR event_type = $3) AND ($4::text IS NULL OR session_id = $4)"#,
        scope.merchant_id,
        scope.livemode,
        event_type as Option<EventType>,
        session_id,
    )
    .fetch_one(db)
    .await?;
    let rows = sqlx::query_as!(
        EventRow,
        r#"SELECT id, merchant_id, livemode, event_type AS "event_type: _", session_id, data,
                  created_at
             FROM events
            WHERE merchant_id = $1 AND livemode = $2
              AND ($3::text IS NULL OR event_type = $3) AND ($4::text IS NULL OR session_id = $4)
            ORDER BY created_at DESC, id DESC LIMIT $5 OFFSET $6"#,
        scope.merchant_id,
        scope.livemode,
        event_type as Option<EventType>,
        session_id,
        rows.limit,
        rows.offset,
    )
    .fetch_all(db)
    .await?;
    Ok((rows, total))
}
