//! `ApiError`: the one JSON error shape every failure is answered with; what a service's
//! `Error` becomes on the wire; and the layer that logs internal failures once.

use crate::service::{self, ConflictKind};
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    InvalidRequest,
    Api,
    Idempotency,
}

impl ErrorType {
    fn as_str(self) -> &'static str {
        match self {
            ErrorType::InvalidRequest => "invalid_request_error",
            ErrorType::Api => "api_error",
            ErrorType::Idempotency => "idempotency_error",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: ErrorType,
    pub code: &'static str,
    pub message: String,
    pub param: Option<String>,
    pub retry_after: Option<u64>,
    /// Logged by `log_internal_errors`, never sent (boxed: errors travel in every `Result`).
    cause: Option<Box<InternalCause>>,
}

/// Why a request failed on our side, carried from the error to `log_internal_errors` as a
/// response extension.
#[derive(Debug, Clone)]
pub struct InternalCause {
    pub summary: &'static str,
    pub cause: String,
}

impl ApiError {
    fn new(
        status: StatusCode,
        kind: ErrorType,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            code,
            message: message.into(),
            param: None,
            retry_after: None,
            cause: None,
        }
    }

    /// 400 `parameter_invalid` naming the field or header at fault.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::BAD_REQUEST,
            ErrorType::InvalidRequest,
            "parameter_invalid",
            message,
        );
        e.param = Some(param.into());
        e
    }

    /// 400 `parameter_duplicated`: a JSON key or a header given twice.
    pub fn duplicated(param: impl Into<String>, message: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::BAD_REQUEST,
            ErrorType::InvalidRequest,
            "parameter_duplicated",
            message,
        );
        e.param = Some(param.into());
        e
    }

    /// 400 `parameter_invalid` about the request as a whole.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ErrorType::InvalidRequest,
            "parameter_invalid",
            message,
        )
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorType::InvalidRequest,
            "authentication_failed",
            message,
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            ErrorType::InvalidRequest,
            "permission_denied",
            message,
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorType::InvalidRequest,
            "resource_missing",
            message,
        )
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            ErrorType::InvalidRequest,
            code,
            message,
        )
    }

    pub fn idempotency(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, ErrorType::Idempotency, code, message)
    }

    pub fn gone(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::GONE, ErrorType::InvalidRequest, code, message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorType::InvalidRequest,
            "request_too_large",
            message,
        )
    }

    pub fn headers_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorType::InvalidRequest,
            "request_too_large",
            format!("the request line and headers are larger than {limit} bytes"),
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorType::InvalidRequest,
            "method_not_allowed",
            "this method is not allowed on this path",
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorType::Api,
            "service_unavailable",
            message,
        )
    }

    pub fn rate_limited(retry_after: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorType::InvalidRequest,
            "rate_limited",
            "too many requests",
        );
        e.retry_after = Some(retry_after);
        e
    }

    pub fn request_timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            ErrorType::Api,
            "request_timeout",
            "the request took too long",
        )
    }

    /// 500 with a generic message; the cause is logged once, by `log_internal_errors`, and
    /// never sent.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorType::Api,
            "api_error",
            "an internal error occurred; please retry later",
        )
        .caused_by("internal error", cause)
    }

    fn caused_by(mut self, summary: &'static str, cause: impl std::fmt::Display) -> Self {
        self.cause = Some(Box::new(InternalCause {
            summary,
            cause: cause.to_string(),
        }));
        self
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn body(&self) -> serde_json::Value {
        let mut error = json!({
            "type": self.kind.as_str(),
            "code": self.code,
            "message": self.message,
        });
        if let Some(param) = &self.param {
            error["param"] = json!(param);
        }
        json!({ "error": error })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(secs));
        }
        if let Some(cause) = self.cause {
            response.extensions_mut().insert(*cause);
        }
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                ApiError::unavailable("the database is unavailable; please retry")
                    .caused_by("database unavailable", e)
            }
            _ => ApiError::internal(e),
        }
    }
}

/// The API's answer to each refusal or failure of a service.
impl From<service::Error> for ApiError {
    fn from(e: service::Error) -> Self {
        match e {
            service::Error::Invalid { field, reason } => ApiError::invalid(field.name(), reason),
            service::Error::NotFound(message) => ApiError::not_found(message),
            service::Error::Conflict { kind, reason } => match kind {
                ConflictKind::SessionExpired => ApiError::gone("session_expired", reason),
                ConflictKind::SessionBlocked => ApiError::conflict("session_blocked", reason),
                ConflictKind::SessionCompleted => ApiError::conflict("session_completed", reason),
                ConflictKind::AlreadyExists(field) => {
                    ApiError::conflict("resource_already_exists", reason).with_param(field.name())
                }
                ConflictKind::RequestInProgress => {
                    ApiError::idempotency("request_in_progress", reason)
                }
            },
            service::Error::RateLimited {
                retry_after,
                reason,
            } => {
                let mut e = ApiError::rate_limited(retry_after);
                e.message = reason;
                e
            }
            service::Error::Unavailable(message) => ApiError::unavailable(message),
            service::Error::Db(e) => e.into(),
            service::Error::Internal(cause) => ApiError::internal(cause),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Logs the cause a response carries (a 500, a database outage) once, with the request it
/// answers, and keeps it off the response.
pub async fn log_internal_errors(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let request_id = req
        .headers()
        .get(super::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut response = next.run(req).await;
    if let Some(InternalCause { summary, cause }) = response.extensions_mut().remove() {
        tracing::error!(
            %method,
            path,
            request_id,
            status = response.status().as_u16(),
            error = %cause,
            "{summary}"
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{to_bytes, Body};
    use axum::routing::get;
    use axum::Router;
    use std::sync::{Arc, Mutex};
    use tower::ServiceExt;

    /// Collects what is logged on this thread while the guard lives.
    fn capture_logs() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
        #[derive(Clone)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = Sink(logs.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn text(logs: &Mutex<Vec<u8>>) -> String {
        String::from_utf8(logs.lock().unwrap().clone()).unwrap()
    }

    #[tokio::test]
    async fn an_internal_error_is_logged_once_with_its_request_and_never_sent() {
        let (logs, _guard) = capture_logs();
        let app = Router::new()
            .route(
                "/boom",
                get(|| async { ApiError::internal("the disk is on fire") }),
            )
            .layer(axum::middleware::from_fn(log_internal_errors));
        let request = Request::get("/boom?x=1")
            .header(super::super::REQUEST_ID, "req-42")
            .body(Body::empty())
            .unwrap();
        let response = app.oneshot(request).await.unwrap();

        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(response.extensions().get::<InternalCause>().is_none());
        let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(body.contains("an internal error occurred"), "{body}");
        assert!(!body.contains("disk"), "{body}");

        let logged = text(&logs);
        assert_eq!(logged.matches("the disk is on fire").count(), 1, "{logged}");
        let line = logged.lines().find(|l| l.contains("disk")).unwrap();
        for part in ["ERROR", "internal error", "GET", "/boom", "req-42", "500"] {
            assert!(line.contains(part), "{part} missing from: {line}");
        }
    }

    #[tokio::test]
    async fn other_errors_are_not_logged() {
        let (logs, _guard) = capture_logs();
        let app = Router::new()
            .route(
                "/gone",
                get(|| async { ApiError::not_found("nothing here") }),
            )
            .layer(axum::middleware::from_fn(log_internal_errors));
        let response = app
            .oneshot(Request::get("/gone").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(text(&logs), "");
    }

    /// Through every layer of the real router: a database outage met by the rate limiter's
    /// key lookup answers 503 and is logged exactly once.
    #[tokio::test]
    async fn the_router_logs_a_database_outage_once() {
        let (logs, _guard) = capture_logs();
        let db = sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(std::time::Duration::from_millis(500))
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .unwrap();
        let state = crate::state::AppState::new(db, crate::config::Config::defaults());
        let key = format!("sk_test_{}", "a".repeat(32));
        let request = Request::get("/v1/checkout/sessions")
            .header("authorization", format!("Bearer {key}"))
            .body(Body::empty())
            .unwrap();
        let response = super::super::router(state).oneshot(request).await.unwrap();

        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.extensions().get::<InternalCause>().is_none());
        let logged = text(&logs);
        assert_eq!(
            logged.matches("database unavailable").count(),
            1,
            "{logged}"
        );
        assert!(!logged.contains(&key), "{logged}");
    }

    #[test]
    fn service_errors_keep_their_wire_shape() {
        use crate::service::{Error, Field};
        let e = ApiError::from(Error::invalid(Field::PricingAmount, "is too large"));
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.body()["error"]["param"], "pricing_amount");
        let e = ApiError::from(Error::conflict(
            ConflictKind::AlreadyExists(Field::SubMerchantCode),
            "exists",
        ));
        assert_eq!(
            (e.status, e.code, e.param.as_deref()),
            (
                StatusCode::CONFLICT,
                "resource_already_exists",
                Some("sub_merchant_code")
            )
        );
        let e = ApiError::from(Error::conflict(ConflictKind::SessionExpired, "expired"));
        assert_eq!((e.status, e.code), (StatusCode::GONE, "session_expired"));
        let e = ApiError::from(Error::conflict(ConflictKind::RequestInProgress, "busy"));
        assert_eq!(e.body()["error"]["type"], "idempotency_error");
        let e = ApiError::from(Error::RateLimited {
            retry_after: 7,
            reason: "slow down".into(),
        });
        let response = e.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()["retry-after"], "7");
        assert!(response.extensions().get::<InternalCause>().is_none());
        let response = ApiError::from(Error::internal("bug")).into_response();
        assert_eq!(
            response
                .extensions()
                .get::<InternalCause>()
                .map(|c| c.cause.as_str()),
            Some("bug")
        );
    }
}
