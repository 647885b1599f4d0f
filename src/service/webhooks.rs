//! Webhook endpoints as merchants manage them, and the delivery log the events API shows.

use crate::db::webhooks::{self as db, EndpointRow};
use crate::domain::event::{DeliveryStatus, EventType};
use crate::domain::ids::{is_random_id, random_id};
use crate::service::{events, Caller, Error, Field};
use crate::state::AppState;
use crate::views::timestamp;
use crate::webhooks::{signing, target};
use serde_json::{json, Value};

/// How long a rotated-out secret still signs.
pub const ROTATION_OVERLAP: chrono::Duration = chrono::Duration::hours(24);
/// Endpoints per merchant and mode.
const MAX_ENDPOINTS: usize = 16;

pub fn endpoint_json(e: &EndpointRow, secret: Option<&str>) -> Value {
    let mut v = json!({
        "id": e.id,
        "url": e.url,
        "events": e.event_types,
        "livemode": e.livemode,
        "created_at": timestamp(e.created_at),
    });
    if let Some(secret) = secret {
        v["secret"] = json!(secret);
    }
    v
}

pub async fn create(
    caller: &Caller,
    url: &str,
    events: Option<Vec<String>>,
) -> Result<Value, Error> {
    let state = &caller.state;
    let guard = !state.config.webhooks.allow_private_targets;
    let url = target::check(url, guard)
        .await
        .map_err(|m| Error::invalid(Field::Url, m))?;
    let events = match events {
        None => None,
        Some(list) if list.is_empty() => {
            return Err(Error::invalid(
                Field::Events,
                "must name at least one event type, or be left out for all",
            ))
        }
        Some(list) => {
            let mut parsed = Vec::new();
            for name in list {
                let t = EventType::parse(&name).ok_or_else(|| {
                    Error::invalid(Field::Events, format!("'{name}' is not an event type"))
                })?;
                if !parsed.contains(&t) {
                    parsed.push(t);
                }
            }
            Some(parsed)
        }
    };
    let existing = db::list_endpoints(&state.db, caller.scope()).await?;
    if existing.len() >= MAX_ENDPOINTS {
        return Err(Error::invalid(
            Field::Url,
            format!("at most {MAX_ENDPOINTS} webhook endpoints per mode"),
        ));
    }
    let secret = signing::new_secret();
    let row = db::insert_endpoint(
        &state.db,
        &random_id("we_"),
        caller.scope(),
        url.as_str(),
        events.as_deref(),
        &secret,
    )
    .await?;
    Ok(endpoint_json(&row, Some(&secret)))
}

/// The merchant's endpoints in `mode`.
pub async fn list(caller: &Caller) -> Result<Vec<EndpointRow>, Error> {
    Ok(db::list_endpoints(&caller.state.db, caller.scope()).await?)
}

fn endpoint_missing(id: &str) -> Error {
    Error::NotFound(format!("no webhook endpoint '{id}'"))
}

pub async fn delete(caller: &Caller, id: &str) -> Result<(), Error> {
    if !is_random_id("we_", id)
        || !db::delete_endpoint(&caller.state.db, caller.scope(), id).await?
    {
        return Err(endpoint_missing(id));
    }
    Ok(())
}

pub async fn rotate(caller: &Caller, id: &str) -> Result<Value, Error> {
    if !is_random_id("we_", id) {
        return Err(endpoint_missing(id));
    }
    let secret = signing::new_secret();
    let row = db::rotate_secret(
        &caller.state.db,
        caller.scope(),
        id,
        &secret,
        ROTATION_OVERLAP,
    )
    .await?
    .ok_or_else(|| endpoint_missing(id))?;
    let mut v = endpoint_json(&row, Some(&secret));
    v["previous_secret_expires_at"] = json!(row.previous_secret_until.map(timestamp));
    Ok(v)
}

/// Sends the merchant's event `id` again; returns how many deliveries are now due.
pub async fn resend(caller: &Caller, id: &str) -> Result<u64, Error> {
    let event = events::find(caller, id).await?;
    match db::resend(&caller.state.db, &event.id).await? {
        db::Resend::Due(due) => Ok(due),
        db::Resend::Limited(wait) => Err(Error::RateLimited {
            retry_after: wait,
            reason: format!(
                "this event was resent {} times in the last hour; try again in {wait} s",
                db::RESENDS_PER_HOUR
            ),
        }),
    }
}

/// Each delivery of the event with its attempts, for `GET /v1/events/{id}`.
pub async fn deliveries_json(state: &AppState, event_id: &str) -> Result<Value, Error> {
    let (deliveries, attempts) = db::deliveries_of(&state.db, event_id).await?;
    Ok(Value::Array(
        deliveries
            .iter()
            .map(|d| {
                let tries: Vec<Value> = attempts
                    .iter()
                    .filter(|a| a.delivery_id == d.id)
                    .map(|a| {
                        json!({
                            "attempted_at": timestamp(a.attempted_at),
                            "duration_ms": a.duration_ms,
                            "outcome": a.outcome,
                            "status_code": a.status_code,
                        })
                    })
                    .collect();
                json!({
                    "endpoint_id": d.endpoint_id,
                    "url": d.url,
                    "status": d.status,
                    "attempts": d.attempts,
                    "next_attempt_at": (d.status == DeliveryStatus::Pending).then(|| timestamp(d.next_attempt_at)),
                    "attempt_log": tries,
                })
            })
            .collect(),
    ))
}
