use super::error::{ApiError, ApiResult};
use super::extract::{JsonObject, Paging, QueryParams};
use super::Routes;
use crate::db::sub_merchants::{SubMerchant, SubMerchantPatch};
use crate::domain::ids::SubMerchantCode;
use crate::domain::sub_merchant::SubMerchantStatus;
use crate::domain::urls::HttpUrl;
use crate::service::sub_merchants as service;
use crate::service::Caller;
use crate::views::timestamp;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Json;
use serde_json::{json, Value};

pub fn routes(r: Routes) -> Routes {
    r.add("POST", "/v1/sub-merchants", post(create))
        .add("GET", "/v1/sub-merchants", get(list))
        .add("GET", "/v1/sub-merchants/{code}", get(retrieve))
        .add(
            "PATCH",
            "/v1/sub-merchants/{code}",
            axum::routing::patch(update),
        )
}

fn sub_merchant_json(s: &SubMerchant) -> Value {
    json!({
        "sub_merchant_code": s.code,
        "display_name": s.display_name,
        "logo_url": s.logo_url,
        "status": s.status,
        "livemode": s.livemode,
        "created_at": timestamp(s.created_at),
        "updated_at": timestamp(s.updated_at),
    })
}

fn parse_logo(value: &str) -> ApiResult<HttpUrl> {
    HttpUrl::parse(value).map_err(|m| ApiError::invalid("logo_url", m))
}

async fn create(
    caller: Caller,
    JsonObject(mut f): JsonObject,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let code: SubMerchantCode = f.required("sub_merchant_code")?;
    let display_name = f.required_string("display_name")?;
    let logo_url: Option<HttpUrl> = f.optional("logo_url")?;
    f.finish()?;
    // The length limit is on the name as sent; it is stored trimmed.
    service::check_display_name(&display_name)?;
    let sub = service::create(&caller, code, display_name.trim(), logo_url).await?;
    Ok((StatusCode::CREATED, Json(sub_merchant_json(&sub))))
}

async fn list(caller: Caller, mut q: QueryParams) -> ApiResult<Json<Value>> {
    let paging = Paging::take(&mut q)?;
    q.finish()?;
    let page = service::list(&caller, paging.request()).await?;
    Ok(paging.respond(&page, sub_merchant_json))
}

async fn retrieve(caller: Caller, Path(code): Path<String>) -> ApiResult<Json<Value>> {
    let sub = service::retrieve(&caller, &code).await?;
    Ok(Json(sub_merchant_json(&sub)))
}

async fn update(
    caller: Caller,
    Path(code): Path<String>,
    JsonObject(mut f): JsonObject,
) -> ApiResult<Json<Value>> {
    let display_name = f.optional_non_null_string("display_name")?;
    let logo_url = f.nullable_string("logo_url")?;
    let status = f.optional_non_null_string("status")?;
    f.finish()?;
    let status = status
        .map(|s| s.parse::<SubMerchantStatus>())
        .transpose()
        .map_err(|e| ApiError::invalid("status", e.to_string()))?;
    let logo_url = match logo_url {
        Some(Some(url)) => Some(Some(parse_logo(&url)?)),
        Some(None) => Some(None),
        None => None,
    };
    if let Some(name) = &display_name {
        service::check_display_name(name)?;
    }
    let display_name = display_name.as_deref().map(str::trim);
    let patch = SubMerchantPatch {
        display_name,
        logo_url: logo_url.as_ref().map(|o| o.as_ref().map(HttpUrl::as_str)),
        status,
    };
    let sub = service::update(&caller, &code, &patch).await?;
    Ok(Json(sub_merchant_json(&sub)))
}
