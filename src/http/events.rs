use super::error::{ApiError, ApiResult};
use super::extract::{JsonObject, Paging, QueryParams};
use super::Routes;
use crate::domain::event::EventType;
use crate::domain::ids::SessionId;
use crate::domain::money::parse_plain_decimal;
use crate::service::Caller;
use crate::service::{events as service, payments, sessions, webhooks};
use crate::views::event_json;
use axum::extract::Path;
use axum::routing::{get, post};
use axum::Json;
use rust_decimal::Decimal;
use serde_json::Value;

pub fn routes(r: Routes) -> Routes {
    r.add("GET", "/v1/events", get(list))
        .add("GET", "/v1/events/{id}", get(retrieve))
        .add(
            "POST",
            "/v1/test_helpers/checkout/sessions/{id}/simulate_payment",
            post(simulate_payment),
        )
}

async fn list(caller: Caller, mut q: QueryParams) -> ApiResult<Json<Value>> {
    let paging = Paging::take(&mut q)?;
    let event_type: Option<EventType> = q.parsed("type")?;
    let session_id: Option<SessionId> = q.parsed("session_id")?;
    q.finish()?;
    let page = service::list(&caller, event_type, session_id.as_ref(), paging.request()).await?;
    Ok(paging.respond(&page, event_json))
}

async fn retrieve(caller: Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let row = service::find(&caller, &id).await?;
    let mut body = event_json(&row);
    body["deliveries"] = webhooks::deliveries_json(&caller.state, &row.id).await?;
    Ok(Json(body))
}

/// Test mode only: a confirmed payment of `amount`, credited like a chain transfer.
async fn simulate_payment(
    caller: Caller,
    Path(id): Path<String>,
    JsonObject(mut fields): JsonObject,
) -> ApiResult<Json<Value>> {
    if caller.mode.livemode() {
        return Err(ApiError::forbidden(
            "payments can be simulated with test keys only",
        ));
    }
    let amount = fields.required_string("amount")?;
    fields.finish()?;
    let amount = parse_plain_decimal(&amount).map_err(|m| ApiError::invalid("amount", m))?;
    if amount <= Decimal::ZERO || amount > Decimal::from(100_000_000) {
        return Err(ApiError::invalid(
            "amount",
            "must be greater than 0 and at most 100000000",
        ));
    }
    let session_id = SessionId::parse(&id)
        .ok_or_else(|| ApiError::not_found(format!("no checkout session '{id}'")))?;
    payments::simulate(
        &caller.state,
        caller.merchant.id,
        session_id.as_str(),
        amount,
    )
    .await?;
    let session = sessions::retrieve(&caller, &id).await?;
    Ok(Json(session.to_json(&caller.state.config.base_url)))
}
