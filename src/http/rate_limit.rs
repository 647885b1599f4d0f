//! The rate-limit layer: per API key on the API, per client address on the public routes,
//! a cap on open live-status streams per client address, and the `RateLimit-*` headers on
//! every answer (health checks aside).
//!
//! It runs after routing (it needs the matched route) and before everything that costs: on
//! the API it authenticates the key itself (then hands the result on, so the request still
//! makes one lookup) and takes a token from that key's bucket before the idempotency layer or
//! the handler run. A key whose bucket is empty is refused without touching the database.
//! Failed authentications are charged to the client address, and a client address over its
//! limit gets no database lookup for a key that has made no request in the last seconds, so
//! guessing keys is as limited as loading pages.

use super::client_ip::client_ip;
use super::error::ApiError;
use super::extract::{authenticate, bearer_key};
use crate::limits::{client_key, Decision, StreamSlot};
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

pub const LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
pub const REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
pub const RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// Retry-After when a client has all its live-status streams open (the page falls back to
/// polling `/view` after a few failed attempts anyway).
const STREAMS_RETRY_AFTER: u64 = 10;
/// The key lookup runs before the request timeout layer; it gets the same bound.
const AUTH_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Health checks: never limited (load balancers and orchestrators poll them).
    Exempt,
    /// Limited per client address.
    Public,
    /// Per client address, and it holds a stream slot while the answer streams.
    Stream,
    /// The API: authenticated, limited per key.
    Keyed,
}

fn class(route: Option<&str>) -> Class {
    match route {
        Some("/healthz" | "/readyz") => Class::Exempt,
        Some("/v1/checkout/sessions/{id}/events") => Class::Stream,
        Some(
            "/{id}"
            | "/v1/checkout/sessions/{id}/view"
            | "/v1/checkout/sessions/{id}/logo"
            | "/assets/checkout.css"
            | "/assets/checkout.js"
            | "/openapi.yaml",
        ) => Class::Public,
        // Unknown paths cost nothing but a 404; they count against the address.
        None => Class::Public,
        Some(_) => Class::Keyed,
    }
}

pub async fn layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    match class(route) {
        Class::Exempt => next.run(req).await,
        Class::Public => public(&state, req, next, false).await,
        Class::Stream => public(&state, req, next, true).await,
        Class::Keyed => keyed(&state, req, next).await,
    }
}

/// The client's address, as the limits see it.
fn client(state: &AppState, req: &Request) -> IpAddr {
    // Without connection info (the router called directly, in-process) all callers are one.
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    client_key(client_ip(peer, req.headers(), &state.config.rate_limits))
}

async fn public(state: &AppState, req: Request, next: Next, stream: bool) -> Response {
    let client = client(state, &req);
    let decision = state.limits.clients.take(client, Instant::now());
    if !decision.allowed {
        return refused(&decision, limited(Over::Address, decision.retry_after));
    }
    let slot = if stream {
        match state.limits.streams.acquire(client) {
            Some(slot) => Some(slot),
            None => {
                let e = limited(
                    Over::Streams(state.config.rate_limits.ip_streams),
                    STREAMS_RETRY_AFTER,
                );
                return refused(&decision, e);
            }
        }
    } else {
        None
    };
    let response = next.run(req).await;
    let response = match slot {
        Some(slot) if response.status().is_success() => hold_while_streaming(response, slot),
        _ => response,
    };
    with_headers(response, &decision)
}

async fn keyed(state: &AppState, mut req: Request, next: Next) -> Response {
    let now = Instant::now();
    let limits = &state.limits;
    let key = match bearer_key(req.headers()) {
        Ok(key) => key,
        Err(e) => return failed_auth(state, &req, e),
    };
    let hash = key.hash();
    let buckets = limits.keys(key.mode());
    // A key that made a request in the last seconds has a bucket: charge it before the lookup.
    let mut taken = None;
    if buckets.contains(&hash) {
        let decision = buckets.take(hash, now);
        if !decision.allowed {
            return refused(&decision, limited(Over::Key, decision.retry_after));
        }
        taken = Some(decision);
    } else {
        let decision = limits.clients.peek(&client(state, &req), now);
        if !decision.allowed {
            return refused(&decision, limited(Over::Address, decision.retry_after));
        }
    }
    let looked_up = tokio::time::timeout(AUTH_TIMEOUT, authenticate(state, &key))
        .await
        .unwrap_or_else(|_| Err(ApiError::request_timeout()));
    let auth = match looked_up {
        Ok(auth) => auth,
        Err(e) if e.status == StatusCode::UNAUTHORIZED => {
            buckets.forget(&hash);
            return failed_auth(state, &req, e);
        }
        Err(e) => {
            let decision = match taken {
                Some(d) => d,
                None => limits.clients.peek(&client(state, &req), Instant::now()),
            };
            return with_headers(e.into_response(), &decision);
        }
    };
    let decision = match taken {
        Some(d) => d,
        None => {
            let d = buckets.take(hash, Instant::now());
            if !d.allowed {
                return refused(&d, limited(Over::Key, d.retry_after));
            }
            d
        }
    };
    req.extensions_mut().insert(auth);
    with_headers(next.run(req).await, &decision)
}

/// A 401 costs the client address a token; past its limit, the answer is 429 instead.
fn failed_auth(state: &AppState, req: &Request, error: ApiError) -> Response {
    let decision = state
        .limits
        .clients
        .take(client(state, req), Instant::now());
    if !decision.allowed {
        return refused(&decision, limited(Over::Address, decision.retry_after));
    }
    with_headers(error.into_response(), &decision)
}

enum Over {
    Key,
    Address,
    Streams(u32),
}

fn limited(over: Over, retry_after: u64) -> ApiError {
    let mut e = ApiError::rate_limited(retry_after);
    e.message = match over {
        Over::Key => format!("too many requests with this API key; retry in {retry_after} s"),
        Over::Address => format!("too many requests from this address; retry in {retry_after} s"),
        Over::Streams(cap) => format!(
            "too many open live-status streams from this address (at most {cap}); \
             retry in {retry_after} s"
        ),
    };
    e
}

fn refused(decision: &Decision, error: ApiError) -> Response {
    with_headers(error.into_response(), decision)
}

fn with_headers(mut response: Response, d: &Decision) -> Response {
    let h = response.headers_mut();
    h.insert(LIMIT, HeaderValue::from(d.limit));
    h.insert(REMAINING, HeaderValue::from(d.remaining));
    h.insert(RESET, HeaderValue::from(d.reset));
    response
}

/// The stream slot lives as long as the response body: until the stream ends or the
/// connection goes away (hyper drops the body either way).
fn hold_while_streaming(response: Response, slot: StreamSlot) -> Response {
    let (parts, body) = response.into_parts();
    let stream = body.into_data_stream().map(move |chunk| {
        let _held = &slot;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_classified() {
        let hosted: Vec<_> = super::super::hosted::routes(super::super::Routes::new()).table;
        let health: Vec<_> = super::super::health::routes(super::super::Routes::new()).table;
        assert!(!hosted.is_empty() && !health.is_empty());
        for (_, path) in super::super::route_table() {
            let expected = if hosted.iter().any(|(_, p)| *p == path) {
                if path.ends_with("/events") {
                    Class::Stream
                } else {
                    Class::Public
                }
            } else if path == "/openapi.yaml" {
                Class::Public
            } else if health.iter().any(|(_, p)| *p == path) {
                Class::Exempt
            } else {
                Class::Keyed
            };
            assert_eq!(class(Some(path)), expected, "{path}");
        }
        assert_eq!(class(None), Class::Public);
    }
}
