//! `Idempotency-Key` on every POST: replay, conflict, in-progress, takeover of dead claims.

use super::error::ApiError;
use super::extract::{BODY_LIMIT, SUB_MERCHANT_HEADER};
use crate::db::idempotency::{self as db, Claim, ClaimOutcome, ClaimState};
use crate::service::Caller;
use crate::state::AppState;
use axum::body::{to_bytes, Body};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub const HEADER: &str = "idempotency-key";
pub const REPLAYED: &str = "idempotency-replayed";

/// Marks a response whose idempotent reply the handler already stored in its own transaction.
#[derive(Debug, Clone, Copy)]
pub struct ReplyStored;

/// Validates the header: 1–255 printable ASCII characters.
fn parse_key(value: &HeaderValue) -> Result<String, ApiError> {
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > 255 {
        return Err(ApiError::invalid(
            "Idempotency-Key",
            "must be 1 to 255 characters",
        ));
    }
    if !bytes.iter().all(|b| (0x20..=0x7e).contains(b)) {
        return Err(ApiError::invalid(
            "Idempotency-Key",
            "must contain only printable ASCII characters",
        ));
    }
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

/// JSON with object keys sorted and `null` members dropped, so the same parameters in another
/// order or spacing, or with an optional field sent as `null` instead of omitted, match.
fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, _)| k)
                .collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), canonical(&map[k])))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// What makes two requests "the same": method, path, sub-merchant header and parameters.
fn request_hash(method: &Method, path: &str, sub_merchant: Option<&[u8]>, body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(method.as_str().as_bytes());
    h.update([0]);
    h.update(path.as_bytes());
    h.update([0]);
    match sub_merchant {
        Some(code) => {
            h.update([1]);
            h.update(code);
        }
        None => h.update([0]),
    }
    h.update([0]);
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => h.update(canonical(&v).to_string().as_bytes()),
        Err(_) => h.update(body),
    }
    h.finalize().into()
}

fn replay(status: i16, body: Vec<u8>) -> Response {
    let status = u16::try_from(status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let mut response = (status, [(CONTENT_TYPE, "application/json")], body).into_response();
    response
        .headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

pub async fn layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST || !req.headers().contains_key(HEADER) {
        return next.run(req).await;
    }
    if req.headers().get_all(HEADER).iter().nth(1).is_some() {
        return ApiError::duplicated(
            "Idempotency-Key",
            "send one Idempotency-Key header, not several",
        )
        .into_response();
    }
    match handle(state, req, next).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn handle(state: AppState, req: Request, next: Next) -> Result<Response, ApiError> {
    let (mut parts, body) = req.into_parts();
    let caller = Caller::from_request_parts(&mut parts, &state).await?;
    let key = parse_key(&parts.headers[HEADER])?;
    let body = to_bytes(body, BODY_LIMIT).await.map_err(|_| {
        ApiError::too_large(format!(
            "the request body is larger than {} KiB",
            BODY_LIMIT / 1024
        ))
    })?;
    let hash = request_hash(
        &parts.method,
        parts.uri.path(),
        parts
            .headers
            .get(SUB_MERCHANT_HEADER)
            .map(HeaderValue::as_bytes),
        &body,
    );
    let timeout = state.config.idempotency.lock_timeout;
    let claim = match db::claim(&state.db, caller.scope(), &key, &hash, timeout).await? {
        ClaimOutcome::Claimed(claim) => claim,
        ClaimOutcome::Existing(existing) => {
            if existing.request_hash != hash {
                return Err(ApiError::idempotency(
                    "idempotency_conflict",
                    "this Idempotency-Key was already used with a different request",
                )
                .with_param("Idempotency-Key"));
            }
            match (
                existing.state,
                existing.response_status,
                existing.response_body,
            ) {
                (ClaimState::Done, Some(status), Some(body)) => return Ok(replay(status, body)),
                _ if existing.stale => db::take_over(&state.db, caller.scope(), &key, timeout)
                    .await?
                    .ok_or_else(in_progress)?,
                _ => return Err(in_progress()),
            }
        }
    };

    parts.extensions.insert(caller);
    parts.extensions.insert(claim.clone());
    let response = next.run(Request::from_parts(parts, Body::from(body))).await;
    finish(&state, &claim, response).await
}

fn in_progress() -> ApiError {
    ApiError::idempotency(
        "request_in_progress",
        "a request with this Idempotency-Key is still being processed; retry shortly",
    )
}

/// Stores the response under the key, or releases the key when the outcome should not stick:
/// validation failures, conflicts, rate limits (a retry after the wait must go through, and a
/// replay would lose Retry-After), server errors.
async fn finish(state: &AppState, claim: &Claim, response: Response) -> Result<Response, ApiError> {
    if response.extensions().get::<ReplyStored>().is_some() {
        return Ok(response);
    }
    let status = response.status();
    if status == StatusCode::BAD_REQUEST
        || status == StatusCode::CONFLICT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
    {
        db::release(&state.db, claim).await?;
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let bytes = to_bytes(body, usize::MAX)
        .await
        .map_err(ApiError::internal)?;
    db::complete(&state.db, claim, status.as_u16(), &bytes).await?;
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert!(parse_key(&HeaderValue::from_static("order-1")).is_ok());
        assert!(parse_key(&HeaderValue::from_static("")).is_err());
        assert!(parse_key(&HeaderValue::from_str(&"k".repeat(256)).unwrap()).is_err());
        assert!(parse_key(&HeaderValue::from_str(&"k".repeat(255)).unwrap()).is_ok());
        assert!(parse_key(&HeaderValue::from_bytes(b"a\tb").unwrap()).is_err());
        assert!(parse_key(&HeaderValue::from_bytes(&[0xe2, 0x9c, 0x93]).unwrap()).is_err());
    }

    #[test]
    fn hashing_ignores_key_order_and_spacing_but_not_values() {
        let m = Method::POST;
        let a = request_hash(&m, "/p", None, br#"{"a": 1, "b": [1, {"y": 2, "x": 1}]}"#);
        let b = request_hash(&m, "/p", None, br#"{"b":[1,{"x":1,"y":2}],"a":1}"#);
        assert_eq!(a, b);
        assert_ne!(
            a,
            request_hash(&m, "/p", None, br#"{"a": 2, "b": [1, {"y": 2, "x": 1}]}"#)
        );
        assert_ne!(
            a,
            request_hash(&m, "/q", None, br#"{"a": 1, "b": [1, {"y": 2, "x": 1}]}"#)
        );
        assert_ne!(
            a,
            request_hash(
                &m,
                "/p",
                Some(b"shop"),
                br#"{"a": 1, "b": [1, {"y": 2, "x": 1}]}"#
            )
        );
        assert_ne!(
            request_hash(&m, "/p", Some(b""), b""),
            request_hash(&m, "/p", None, b"")
        );
    }
}
