//! Writing events: always inside the transaction of the change that causes them, with the
//! session as it is after that change.

use crate::db::events as db;
use crate::domain::event::EventType;
use crate::domain::ids::random_id;
use crate::views::session_json;
use sqlx::{Postgres, Transaction};

/// Records `event_type` for the session (and its webhook deliveries); returns the event id.
pub async fn record(
    tx: &mut Transaction<'_, Postgres>,
    session_id: &str,
    event_type: EventType,
    base_url: &str,
) -> sqlx::Result<String> {
    let (row, txs) = db::session_snapshot(tx, session_id).await?;
    let data = session_json(&row, &txs, base_url);
    let id = random_id("evt_");
    db::insert(
        tx,
        &id,
        row.merchant_id,
        row.livemode,
        event_type.as_str(),
        session_id,
        &data,
    )
    .await?;
    Ok(id)
}
