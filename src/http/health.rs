use super::Routes;
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Json;
use serde_json::json;
use std::time::Duration;

pub const OPENAPI_YAML: &str = include_str!("../../openapi.yaml");

pub fn routes(r: Routes) -> Routes {
    r.add("GET", "/healthz", get(healthz))
        .add("GET", "/readyz", get(readyz))
        .add("GET", "/openapi.yaml", get(openapi))
}

/// Alive: the process answers.
async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// Ready: the database answers within two seconds.
async fn readyz(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let ping = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&state.db);
    match tokio::time::timeout(Duration::from_secs(2), ping).await {
        Ok(Ok(_)) => Ok(Json(
            json!({ "status": "ready", "checks": { "database": "ok" } }),
        )),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: database error");
            Err(ApiError::unavailable("the database is unreachable"))
        }
        Err(_) => Err(ApiError::unavailable(
            "the database did not answer within 2 s",
        )),
    }
}

async fn openapi() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/yaml")], OPENAPI_YAML)
}
