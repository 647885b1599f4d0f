use super::error::ApiResult;
use super::extract::JsonObject;
use super::Routes;
use crate::service::webhooks as service;
use crate::service::Caller;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::Json;
use serde_json::{json, Value};

pub fn routes(r: Routes) -> Routes {
    r.add("POST", "/v1/webhook_endpoints", post(create))
        .add("GET", "/v1/webhook_endpoints", get(list))
        .add("DELETE", "/v1/webhook_endpoints/{id}", delete(remove))
        .add(
            "POST",
            "/v1/webhook_endpoints/{id}/rotate_secret",
            post(rotate),
        )
        .add("POST", "/v1/events/{id}/resend", post(resend))
}

async fn create(
    caller: Caller,
    JsonObject(mut fields): JsonObject,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let url = fields.required_string("url")?;
    let events = fields.optional_string_list("events")?;
    fields.finish()?;
    let body = service::create(&caller, &url, events).await?;
    Ok((StatusCode::CREATED, Json(body)))
}

async fn list(caller: Caller) -> ApiResult<Json<Value>> {
    let rows = service::list(&caller).await?;
    let data: Vec<Value> = rows
        .iter()
        .map(|e| service::endpoint_json(e, None))
        .collect();
    Ok(Json(json!({ "data": data })))
}

async fn remove(caller: Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    service::delete(&caller, &id).await?;
    Ok(Json(json!({ "id": id, "deleted": true })))
}

async fn rotate(caller: Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(service::rotate(&caller, &id).await?))
}

async fn resend(caller: Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let due = service::resend(&caller, &id).await?;
    Ok(Json(json!({ "id": id, "deliveries_due": due })))
}
