//! The HTTP surface: one `routes()` per resource, and the layers every request passes.

pub mod client_ip;
pub mod error;
pub mod events;
pub mod extract;
pub mod health;
pub mod hosted;
pub mod i18n;
pub mod idempotency;
pub mod rate_limit;
pub mod sessions;
pub mod sub_merchants;
pub mod sweeps;
pub mod webhook_endpoints;

use crate::http::error::ApiError;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderName, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::{Instrument, Level};

/// The router under construction, with the table of (method, path) it serves.
pub struct Routes {
    router: Router<AppState>,
    table: Vec<(&'static str, &'static str)>,
}

impl Routes {
    fn new() -> Self {
        Self {
            router: Router::new(),
            table: Vec::new(),
        }
    }

    pub fn add(
        mut self,
        method: &'static str,
        path: &'static str,
        handler: MethodRouter<AppState>,
    ) -> Self {
        self.router = self.router.route(path, handler);
        self.table.push((method, path));
        self
    }
}

fn all_routes() -> Routes {
    let r = Routes::new();
    let r = health::routes(r);
    let r = sessions::routes(r);
    let r = events::routes(r);
    let r = webhook_endpoints::routes(r);
    let r = hosted::routes(r);
    let r = sub_merchants::routes(r);
    sweeps::routes(r)
}

/// Every (method, path) the server answers; the OpenAPI test checks each has a spec entry.
pub fn route_table() -> Vec<(&'static str, &'static str)> {
    all_routes().table
}

pub const REQUEST_ID: HeaderName = HeaderName::from_static("request-id");

/// Runs the request in a task of its own, so that neither a client that goes away nor the
/// request timeout can stop it between two statements: a future dropped there could hand its
/// pooled connection back inside an open transaction.
async fn run_to_completion(req: Request, next: Next) -> Response {
    let run = next.run(req).instrument(tracing::Span::current());
    match tokio::spawn(run).await {
        Ok(response) => response,
        Err(_) => ApiError::internal("a request handler panicked").into_response(),
    }
}

pub fn router(state: AppState) -> Router {
    let limits = state.config.http.clone();
    all_routes()
        .router
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            idempotency::layer,
        ))
        .route_layer(axum::middleware::from_fn(no_stray_query))
        .route_layer(axum::middleware::from_fn(run_to_completion))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state.clone())
        .layer(DefaultBodyLimit::max(extract::BODY_LIMIT))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
        .layer(axum::middleware::map_response(json_errors))
        .layer(axum::middleware::from_fn(move |req: Request, next| {
            head_within(limits.max_header_bytes, req, next)
        }))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal("a request handler panicked").into_response()
        }))
        // Outside the timeout and panic layers so their answers carry the RateLimit headers
        // too; inside tracing and request ids so a 429 has both.
        .layer(axum::middleware::from_fn_with_state(
            state,
            rate_limit::layer,
        ))
        // Inside the trace span and after the request id is set; around everything that can
        // answer with an internal error (the panic layer, the rate limiter's key lookup).
        .layer(axum::middleware::from_fn(error::log_internal_errors))
        .layer(axum::middleware::from_fn(crate::metrics::record_request))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<Body>| {
                    let request_id = req
                        .headers()
                        .get(REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    let route = req
                        .extensions()
                        .get::<MatchedPath>()
                        .map(MatchedPath::as_str)
                        .unwrap_or("unmatched");
                    tracing::info_span!(
                        "request",
                        request_id,
                        method = %req.method(),
                        route,
                        merchant.id = tracing::field::Empty,
                    )
                })
                .on_request(())
                .on_response(
                    DefaultOnResponse::new()
                        .level(Level::INFO)
                        .latency_unit(tower_http::LatencyUnit::Micros),
                ),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// 431 in our shape when the request line and headers exceed `limit` bytes.
async fn head_within(limit: usize, req: Request, next: axum::middleware::Next) -> Response {
    let line = req.method().as_str().len() + req.uri().to_string().len() + 12;
    let headers: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if line + headers > limit {
        return ApiError::headers_too_large(limit).into_response();
    }
    next.run(req).await
}

/// Routes that read their own query parameters (and refuse unknown ones themselves).
const OWN_QUERY: [&str; 5] = [
    "/v1/checkout/sessions",
    "/v1/events",
    "/v1/sub-merchants",
    "/v1/sweeps",
    "/{id}",
];

/// Every other route takes no query parameters: any is refused as unknown (400).
async fn no_stray_query(req: Request, next: axum::middleware::Next) -> Response {
    let own = req.method() == axum::http::Method::GET
        && req
            .extensions()
            .get::<MatchedPath>()
            .is_some_and(|p| OWN_QUERY.contains(&p.as_str()));
    if !own {
        if let Err(e) = extract::QueryParams::parse(req.uri().query()).and_then(|q| q.finish()) {
            return e.into_response();
        }
    }
    next.run(req).await
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!(
        "no such endpoint: {} {}",
        req.method(),
        req.uri().path()
    ))
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

/// Any error response that is not already our JSON (a framework rejection, a timeout) gets
/// our error shape with the same status.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    // Our own JSON errors and the hosted page's HTML 404 pass; anything else gets our shape.
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let error = match status {
        StatusCode::NOT_FOUND => ApiError::not_found("not found"),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::method_not_allowed(),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::too_large("the request body is too large"),
        StatusCode::REQUEST_TIMEOUT => ApiError::request_timeout(),
        s if s.is_server_error() => ApiError::internal(format!("unshaped {s} response")),
        _ => {
            let mut e = ApiError::bad_request("the request could not be understood");
            e.status = status;
            e
        }
    };
    let mut shaped = error.into_response();
    for (name, value) in response.headers() {
        if name != CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            shaped.headers_mut().insert(name, value.clone());
        }
    }
    shaped
}
