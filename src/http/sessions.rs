use super::error::{ApiError, ApiResult};
use super::extract::{
    sub_merchant_code, sub_merchant_from_header, JsonObject, Paging, QueryParams,
};
use super::idempotency::ReplyStored;
use super::Routes;
use crate::db::idempotency::Claim;
use crate::db::sessions::SessionFilter;
use crate::domain::ids::SubMerchantCode;
use crate::domain::money::{parse_plain_decimal, Token};
use crate::domain::network::Network;
use crate::service::sessions::{self as service, CreateSession};
use crate::service::Caller;
use axum::extract::Path;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Extension;
use axum::Json;
use chrono::{DateTime, Utc};
use serde_json::Value;

pub fn routes(r: Routes) -> Routes {
    r.add("POST", "/v1/checkout/sessions", post(create))
        .add("GET", "/v1/checkout/sessions", get(list))
        .add("GET", "/v1/checkout/sessions/{id}", get(retrieve))
        .add("POST", "/v1/checkout/sessions/{id}/expire", post(expire))
}

/// Turns the body's fields into a `CreateSession`; each failure names its field.
fn parse_create(
    mut f: super::extract::Fields,
    sub_merchant_code: Option<SubMerchantCode>,
) -> ApiResult<CreateSession> {
    let request = CreateSession {
        pricing_amount: f.required_with("pricing_amount", parse_plain_decimal)?,
        pricing_currency: f.required("pricing_currency")?,
        currency: f.required("currency")?,
        network: f.required("network")?,
        success_url: f.required("success_url")?,
        cancel_url: f.required("cancel_url")?,
        client_reference_id: f.optional("client_reference_id")?,
        sub_merchant_code,
    };
    f.finish()?;
    if request.currency == Token::Usdc && request.network == Network::Tron {
        return Err(ApiError::invalid(
            "currency",
            "USDC is not available on TRON",
        ));
    }
    Ok(request)
}

async fn create(
    caller: Caller,
    claim: Option<Extension<Claim>>,
    headers: HeaderMap,
    JsonObject(fields): JsonObject,
) -> ApiResult<Response> {
    let request = parse_create(fields, sub_merchant_code(&headers)?)?;
    let claim = claim.map(|Extension(c)| c);
    let created = service::create(&caller, request, claim.as_ref())
        .await
        .map_err(sub_merchant_from_header)?;
    let body = ([(CONTENT_TYPE, "application/json")], created.json);
    Ok(match claim {
        Some(_) => (StatusCode::CREATED, Extension(ReplyStored), body).into_response(),
        None => (StatusCode::CREATED, body).into_response(),
    })
}

async fn retrieve(caller: Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let found = service::retrieve(&caller, &id).await?;
    Ok(Json(found.to_json(&caller.state.config.base_url)))
}

async fn expire(caller: Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let expired = service::expire(&caller, &id).await?;
    Ok(Json(expired.to_json(&caller.state.config.base_url)))
}

/// A time filter: RFC 3339 or unix seconds.
struct ApiTime(DateTime<Utc>);

impl std::str::FromStr for ApiTime {
    type Err = &'static str;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if let Ok(t) = DateTime::parse_from_rfc3339(value) {
            return Ok(Self(t.with_timezone(&Utc)));
        }
        value
            .parse::<i64>()
            .ok()
            .and_then(|secs| DateTime::from_timestamp(secs, 0))
            .map(Self)
            .ok_or("must be an RFC 3339 timestamp or unix seconds")
    }
}

async fn list(caller: Caller, mut q: QueryParams) -> ApiResult<Json<Value>> {
    let paging = Paging::take(&mut q)?;
    let filter = SessionFilter {
        status: q.parsed("status")?,
        network: q.parsed("network")?,
        client_reference_id: q.parsed("client_reference_id")?,
        sub_merchant_code: q.parsed("sub_merchant_code")?,
        created_after: q.parsed::<ApiTime>("created_after")?.map(|t| t.0),
        created_before: q.parsed::<ApiTime>("created_before")?.map(|t| t.0),
    };
    q.finish()?;
    let page = service::list(&caller, &filter, paging.request()).await?;
    Ok(paging.respond(&page, |s| s.to_json(&caller.state.config.base_url)))
}
