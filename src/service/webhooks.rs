//! Webhook endpoints as merchants manage them, and the delivery log the events API shows.

use crate::db::webhooks::{self as db, EndpointRow};
use crate::domain::api_key::Mode;
use crate::domain::event::{DeliveryStatus, EventType};
use crate::domain::ids::{is_random_id, random_id};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::views::timestamp;
use crate::webhooks::{signing, target};
use serde_json::{json, Value};
use uuid::Uuid;

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
    state: &AppState,
    merchant_id: Uuid,
    mode: Mode,
    url: &str,
    events: Option<Vec<String>>,
) -> ApiResult<Value> {
    let guard = !state.config.webhooks.allow_private_targets;
    let url = target::check(url, guard)
        .await
        .map_err(|m| ApiError::invalid("url", m))?;
    let events = match events {
        None => None,
        Some(list) if list.is_empty() => {
            return Err(ApiError::invalid(
                "events",
                "must name at least one event type, or be left out for all",
            ))
        }
        Some(list) => {
            let mut parsed = Vec::new();
            for name in list {
                let t = EventType::parse(&name).ok_or_else(|| {
                    ApiError::invalid("events", format!("'{name}' is not an event type"))
                })?;
                if !parsed.contains(&t) {
                    parsed.push(t);
                }
            }
            Some(parsed)
        }
    };
    let existing = db::list_endpoints(&state.db, merchant_id, mode.livemode()).await?;
    if existing.len() >= MAX_ENDPOINTS {
        return Err(ApiError::invalid(
            "url",
            format!("at most {MAX_ENDPOINTS} webhook endpoints per mode"),
        ));
    }
    let secret = signing::new_secret();
    let row = db::insert_endpoint(
        &state.db,
        &random_id("we_"),
        merchant_id,
        mode.livemode(),
        url.as_str(),
        events.as_deref(),
        &secret,
    )
    .await?;
    Ok(endpoint_json(&row, Some(&secret)))
}

fn endpoint_missing(id: &str) -> ApiError {
    ApiError::not_found(format!("no webhook endpoint '{id}'"))
}

pub async fn delete(state: &AppState, merchant_id: Uuid, mode: Mode, id: &str) -> ApiResult<()> {
    if !is_random_id("we_", id)
        || !db::delete_endpoint(&state.db, merchant_id, mode.livemode(), id).await?
    {
        return Err(endpoint_missing(id));
    }
    Ok(())
}

pub async fn rotate(state: &AppState, merchant_id: Uuid, mode: Mode, id: &str) -> ApiResult<Value> {
    if !is_random_id("we_", id) {
        return Err(endpoint_missing(id));
    }
    let secret = signing::new_secret();
    let row = db::rotate_secret(
        &state.db,
        merchant_id,
        mode.livemode(),
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

/// Each delivery of the event with its attempts, for `GET /v1/events/{id}`.
pub async fn deliveries_json(state: &AppState, event_id: &str) -> ApiResult<Value> {
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
