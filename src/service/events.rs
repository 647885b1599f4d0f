//! Writing events: always inside the transaction of the change that causes them, with the
//! session as it is after that change.

use crate::db::events::{self as db, EventRow};
use crate::domain::event::EventType;
use crate::domain::ids::{is_random_id, random_id, SessionId};
use crate::service::{Caller, Error, Page, PageRequest};
use crate::views::session_json;
use serde_json::Value;
use sqlx::{Postgres, Transaction};

/// The transactions an event's session lists at most (the newest ones).
pub const EVENT_TRANSACTIONS: i64 = 100;

/// Records `event_type` for the session (and its webhook deliveries); returns the event id.
pub async fn record(
    tx: &mut Transaction<'_, Postgres>,
    session_id: &str,
    event_type: EventType,
    base_url: &str,
) -> sqlx::Result<String> {
    record_with(tx, session_id, event_type, base_url, None).await
}

/// `record`, with one more field in the event's data (e.g. the unexpected transfer).
pub async fn record_with(
    tx: &mut Transaction<'_, Postgres>,
    session_id: &str,
    event_type: EventType,
    base_url: &str,
    extra: Option<(&str, Value)>,
) -> sqlx::Result<String> {
    let (row, mut txs) = db::session_snapshot(tx, session_id, EVENT_TRANSACTIONS + 1).await?;
    let truncated = txs.len() > EVENT_TRANSACTIONS as usize;
    if truncated {
        txs.remove(0);
    }
    let mut data = session_json(&row, &txs, base_url);
    if truncated {
        data["transactions_truncated"] = Value::Bool(true);
    }
    if let Some((key, value)) = extra {
        data[key] = value;
    }
    let id = random_id("evt_");
    db::insert(
        tx,
        &id,
        row.merchant_id,
        row.livemode,
        event_type,
        db::Subject::Session(session_id),
        &data,
    )
    .await?;
    Ok(id)
}

/// The merchant's event `id`; a malformed id is as missing as an unknown one.
pub async fn find(caller: &Caller, id: &str) -> Result<EventRow, Error> {
    let missing = || Error::NotFound(format!("no event '{id}'"));
    if !is_random_id("evt_", id) {
        return Err(missing());
    }
    db::find(&caller.state.db, caller.scope(), id)
        .await?
        .ok_or_else(missing)
}

/// One page of the merchant's events, newest first, optionally of one type or session.
pub async fn list(
    caller: &Caller,
    event_type: Option<EventType>,
    session_id: Option<&SessionId>,
    rows: PageRequest,
) -> Result<Page<EventRow>, Error> {
    let (items, total) = db::list(
        &caller.state.db,
        caller.scope(),
        event_type,
        session_id.map(SessionId::as_str),
        rows,
    )
    .await?;
    Ok(Page { items, total })
}
