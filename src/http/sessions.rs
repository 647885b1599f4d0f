use super::error::{ApiError, ApiResult};
use super::extract::{
    sub_merchant_code, sub_merchant_from_header, Auth, JsonObject, Paging, QueryParams,
};
use super::idempotency::ReplyStored;
use super::Routes;
use crate::db::idempotency::Claim;
use crate::db::sessions::SessionFilter;
use crate::domain::ids::SubMerchantCode;
use crate::domain::money::{parse_plain_decimal, PricingCurrency, Token};
use crate::domain::network::Network;
use crate::domain::session::SessionStatus;
use crate::domain::urls::HttpUrl;
use crate::service::sessions::{self as service, CreateSession};
use crate::state::AppState;
use crate::views::session_json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Extension;
use axum::Json;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

pub fn routes(r: Routes) -> Routes {
    r.add("POST", "/v1/checkout/sessions", post(create))
        .add("GET", "/v1/checkout/sessions", get(list))
        .add("GET", "/v1/checkout/sessions/{id}", get(retrieve))
        .add("POST", "/v1/checkout/sessions/{id}/expire", post(expire))
}

fn parse_url(name: &str, value: &str) -> ApiResult<HttpUrl> {
    HttpUrl::parse(value).map_err(|m| ApiError::invalid(name, m))
}

/// Turns the body's fields into a `CreateSession`; each failure names its field.
fn parse_create(
    mut f: super::extract::Fields,
    sub_merchant_code: Option<SubMerchantCode>,
) -> ApiResult<CreateSession> {
    let pricing_amount = f.required_string("pricing_amount")?;
    let pricing_currency = f.required_string("pricing_currency")?;
    let currency = f.required_string("currency")?;
    let network = f.required_string("network")?;
    let success_url = f.required_string("success_url")?;
    let cancel_url = f.required_string("cancel_url")?;
    let client_reference_id = f.optional_string("client_reference_id")?;
    f.finish()?;

    let pricing_amount =
        parse_plain_decimal(&pricing_amount).map_err(|m| ApiError::invalid("pricing_amount", m))?;
    let pricing_currency = PricingCurrency::parse(&pricing_currency).ok_or_else(|| {
        ApiError::invalid(
            "pricing_currency",
            format!("'{pricing_currency}' is not a supported currency (USDT, USDC or a fiat code such as USD)"),
        )
    })?;
    let currency = Token::parse(&currency).ok_or_else(|| {
        ApiError::invalid(
            "currency",
            format!("'{currency}' is not a settlement token (USDT or USDC)"),
        )
    })?;
    let network = Network::parse(&network).ok_or_else(|| {
        ApiError::invalid(
            "network",
            format!("'{network}' is not a network (TRON, SOLANA, BSC, ETHEREUM, POLYGON, ARBITRUM, OPTIMISM, BASE)"),
        )
    })?;
    if currency == Token::Usdc && network == Network::Tron {
        return Err(ApiError::invalid(
            "currency",
            "USDC is not available on TRON",
        ));
    }
    let success_url = parse_url("success_url", &success_url)?;
    let cancel_url = parse_url("cancel_url", &cancel_url)?;
    if let Some(reference) = &client_reference_id {
        if reference.chars().count() > 200 {
            return Err(ApiError::invalid(
                "client_reference_id",
                "must be at most 200 characters",
            ));
        }
        if reference.chars().any(char::is_control) {
            return Err(ApiError::invalid(
                "client_reference_id",
                "must not contain control characters",
            ));
        }
    }
    Ok(CreateSession {
        pricing_amount,
        pricing_currency,
        currency,
        network,
        success_url,
        cancel_url,
        client_reference_id,
        sub_merchant_code,
    })
}

async fn create(
    State(state): State<AppState>,
    auth: Auth,
    claim: Option<Extension<Claim>>,
    headers: HeaderMap,
    JsonObject(fields): JsonObject,
) -> ApiResult<Response> {
    let request = parse_create(fields, sub_merchant_code(&headers)?)?;
    let claim = claim.map(|Extension(c)| c);
    let row = service::create(&state, &auth.merchant, auth.mode, request, claim.as_ref())
        .await
        .map_err(sub_merchant_from_header)?;
    let body = Json(session_json(&row, &[], &state.config.base_url));
    Ok(match claim {
        Some(_) => (StatusCode::CREATED, Extension(ReplyStored), body).into_response(),
        None => (StatusCode::CREATED, body).into_response(),
    })
}

async fn retrieve(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let found = service::retrieve(&state, &auth.merchant, auth.mode, &id).await?;
    Ok(Json(found.to_json(&state.config.base_url)))
}

async fn expire(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let expired = service::expire(&state, &auth.merchant, auth.mode, &id).await?;
    Ok(Json(expired.to_json(&state.config.base_url)))
}

/// RFC 3339 or unix seconds.
fn parse_time(name: &str, value: &str) -> ApiResult<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Ok(t.with_timezone(&Utc));
    }
    value
        .parse::<i64>()
        .ok()
        .and_then(|secs| DateTime::from_timestamp(secs, 0))
        .ok_or_else(|| ApiError::invalid(name, "must be an RFC 3339 timestamp or unix seconds"))
}

async fn list(
    State(state): State<AppState>,
    auth: Auth,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    let mut q = QueryParams::parse(raw.as_deref())?;
    let paging = Paging::take(&mut q)?;
    let mut filter = SessionFilter::default();
    if let Some(status) = q.take("status") {
        let parsed = SessionStatus::parse(&status).ok_or_else(|| {
            ApiError::invalid(
                "status",
                "must be one of Pending, Underpaid, Paid, Overpaid, Expired, Blocked",
            )
        })?;
        filter.status = Some(parsed);
    }
    if let Some(network) = q.take("network") {
        let parsed = Network::parse(&network)
            .ok_or_else(|| ApiError::invalid("network", format!("'{network}' is not a network")))?;
        filter.network = Some(parsed);
    }
    if let Some(reference) = q.take("client_reference_id") {
        if reference.chars().count() > 200 {
            return Err(ApiError::invalid(
                "client_reference_id",
                "must be at most 200 characters",
            ));
        }
        filter.client_reference_id = Some(reference);
    }
    if let Some(code) = q.take("sub_merchant_code") {
        let parsed =
            SubMerchantCode::parse(&code).map_err(|m| ApiError::invalid("sub_merchant_code", m))?;
        filter.sub_merchant_code = Some(parsed.as_str().to_owned());
    }
    if let Some(t) = q.take("created_after") {
        filter.created_after = Some(parse_time("created_after", &t)?);
    }
    if let Some(t) = q.take("created_before") {
        filter.created_before = Some(parse_time("created_before", &t)?);
    }
    q.finish()?;
    let page = service::list(
        &state,
        &auth.merchant,
        auth.mode,
        &filter,
        paging.page_size,
        paging.offset(),
    )
    .await?;
    let data: Vec<Value> = page
        .items
        .iter()
        .map(|s| s.to_json(&state.config.base_url))
        .collect();
    Ok(Json(
        json!({ "data": data, "meta": paging.meta(page.total) }),
    ))
}
