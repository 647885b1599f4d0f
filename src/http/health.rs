use super::error::ApiError;
use super::Routes;
use crate::state::AppState;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
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

/// Ready: the database answers within two seconds and every chain watcher keeps up.
async fn readyz(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let report = crate::service::chain_health::report(&state);
    match tokio::time::timeout(Duration::from_secs(2), report).await {
        Ok(Ok((all_ok, watchers))) => {
            let status = if all_ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let mut body = json!({
                "status": if all_ok { "ready" } else { "unready" },
                "checks": { "database": "ok", "watchers": watchers },
            });
            let tanks = state.gas_tanks.readings();
            if !tanks.is_empty() {
                let sweeps: serde_json::Map<String, serde_json::Value> = tanks
                    .into_iter()
                    .map(|(name, r)| {
                        let low = r.balance < r.low_gas_balance;
                        let entry = json!({
                            "status": if low { "low" } else { "ok" },
                            "gas_tank": r.address,
                            "balance": crate::domain::money::format_amount(r.balance),
                            "low_gas_balance": crate::domain::money::format_amount(r.low_gas_balance),
                        });
                        (name, entry)
                    })
                    .collect();
                body["checks"]["sweeps"] = serde_json::Value::Object(sweeps);
            }
            Ok((status, Json(body)))
        }
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
