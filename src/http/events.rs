use super::error::{ApiError, ApiResult};
use super::extract::{Auth, JsonObject, Paging, QueryParams};
use super::Routes;
use crate::domain::event::EventType;
use crate::domain::ids::SessionId;
use crate::domain::money::parse_plain_decimal;
use crate::service::{events as service, payments, sessions, webhooks};
use crate::state::AppState;
use crate::views::event_json;
use axum::extract::{Path, State};
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

async fn list(
    State(state): State<AppState>,
    auth: Auth,
    mut q: QueryParams,
) -> ApiResult<Json<Value>> {
    let paging = Paging::take(&mut q)?;
    let event_type: Option<EventType> = q.parsed("type")?;
    let session_id: Option<SessionId> = q.parsed("session_id")?;
    q.finish()?;
    let (merchant, mode) = (auth.merchant.id, auth.mode);
    let rows = paging.request();
    let page = service::list(
        &state,
        merchant,
        mode,
        event_type,
        session_id.as_ref(),
        rows,
    )
    .await?;
    Ok(paging.respond(&page, event_json))
}

async fn retrieve(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let row = service::find(&state, auth.merchant.id, auth.mode, &id).await?;
    let mut body = event_json(&row);
    body["deliveries"] = webhooks::deliveries_json(&state, &row.id).await?;
    Ok(Json(body))
}

/// Test mode only: a confirmed payment of `amount`, credited like a chain transfer.
async fn simulate_payment(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    JsonObject(mut fields): JsonObject,
) -> ApiResult<Json<Value>> {
    if auth.mode.livemode() {
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
    payments::simulate(&state, auth.merchant.id, session_id.as_str(), amount).await?;
    let session = sessions::retrieve(&state, &auth.merchant, auth.mode, &id).await?;
    Ok(Json(session.to_json(&state.config.base_url)))
}
