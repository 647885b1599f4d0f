//! Prometheus metrics. Counters and histograms are recorded where things happen, with the
//! `metrics` macros; `GET /metrics` on `METRICS_ADDR` (not the public port) renders them with
//! `metrics-exporter-prometheus`, together with gauges read at scrape time from Postgres and
//! the pools (so they agree across replicas).

use crate::domain::network::Network;
use crate::state::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Instant;

pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9090";

const REQUEST_SECONDS: &str = "checkout_http_request_duration_seconds";

/// The process's recorder, installed on first use.
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(REQUEST_SECONDS.into()),
                    &[
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
                    ],
                )
                .expect("the buckets are not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may be installed already (a test harness): ours still renders.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// The heap's size as the allocator sees it: bytes the program holds, and bytes of memory the
/// allocator keeps resident for them (the difference is fragmentation and caches).
#[derive(Debug, Clone, Copy)]
pub struct HeapStats {
    pub allocated: u64,
    pub resident: u64,
}

static HEAP_STATS: OnceLock<fn() -> Option<HeapStats>> = OnceLock::new();

/// Set by the binary, which chooses the allocator; without it the heap gauges are absent.
pub fn report_heap_with(read: fn() -> Option<HeapStats>) {
    let _ = HEAP_STATS.set(read);
}

/// Folds the recorded latencies into their histograms every few seconds. The recorder keeps
/// each sample until then (16 bytes a request): without this, a server nobody scrapes would
/// hold every request's sample forever.
pub async fn run_upkeep(shutdown: tokio_util::sync::CancellationToken) {
    let handle = handle();
    let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = every.tick() => handle.run_upkeep(),
            _ = shutdown.cancelled() => return,
        }
    }
}

/// The metrics port's router: `GET /metrics` and nothing else.
pub fn router(state: AppState) -> Router {
    handle();
    Router::new()
        .route("/metrics", get(render))
        .with_state(state)
}

async fn render(State(state): State<AppState>) -> Response {
    if let Err(e) = scrape_gauges(&state).await {
        tracing::warn!(error = %e, "metrics: database gauges not read");
        counter!("checkout_metrics_scrape_errors_total").increment(1);
    }
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        handle().render(),
    )
        .into_response()
}

/// Gauges that are read, not counted: from Postgres (shared by every replica) and this
/// process's pools and streams.
async fn scrape_gauges(state: &AppState) -> sqlx::Result<()> {
    for (name, pool) in [("api", &state.db), ("workers", &state.workers_db)] {
        let size = f64::from(pool.size());
        let idle = pool.num_idle() as f64;
        gauge!("checkout_db_pool_connections", "pool" => name, "state" => "in_use")
            .set(size - idle);
        gauge!("checkout_db_pool_connections", "pool" => name, "state" => "idle").set(idle);
        let max = f64::from(pool.options().get_max_connections());
        gauge!("checkout_db_pool_max_connections", "pool" => name).set(max);
    }
    gauge!("checkout_live_streams").set(state.live.open_streams() as f64);
    if let Some(heap) = HEAP_STATS.get().and_then(|read| read()) {
        gauge!("checkout_heap_allocated_bytes").set(heap.allocated as f64);
        gauge!("checkout_heap_resident_bytes").set(heap.resident as f64);
    }
    for cursor in crate::db::chain::cursor_lags(&state.db).await? {
        let labels = [
            ("network", cursor.network.as_str().to_owned()),
            ("mode", mode_label(cursor.livemode).to_owned()),
        ];
        if let Some(blocks) = cursor.lag_blocks {
            gauge!("checkout_watcher_head_lag_blocks", &labels).set(blocks as f64);
        }
        if let Some(seconds) = cursor.lag_seconds {
            gauge!("checkout_watcher_head_lag_seconds", &labels).set(seconds);
        }
        if let Some(seconds) = cursor.since_success_seconds {
            gauge!("checkout_watcher_seconds_since_success", &labels).set(seconds);
        }
        gauge!("checkout_oldest_unconfirmed_transfer_seconds", &labels)
            .set(cursor.oldest_unconfirmed_seconds.unwrap_or(0.0));
    }
    let due = crate::db::webhooks::due_count(&state.db).await?;
    gauge!("checkout_webhook_deliveries_due").set(due as f64);
    Ok(())
}

pub fn mode_label(livemode: bool) -> &'static str {
    if livemode {
        "live"
    } else {
        "test"
    }
}

/// Counts every request by route template, method and status, with its latency.
pub async fn record_request(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched".to_owned(), |p| p.as_str().to_owned());
    // A client may send any method name: only the standard ones become labels.
    let method = match request.method().as_str() {
        m @ ("GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS") => m,
        _ => "other",
    }
    .to_owned();
    let response = next.run(request).await;
    let labels = [
        ("route", route),
        ("method", method),
        ("status", response.status().as_u16().to_string()),
    ];
    counter!("checkout_http_requests_total", &labels).increment(1);
    histogram!(REQUEST_SECONDS, &labels).record(started.elapsed().as_secs_f64());
    response
}

pub fn session_created(network: Network, livemode: bool) {
    counter!("checkout_sessions_created_total",
        "network" => network.as_str(), "mode" => mode_label(livemode))
    .increment(1);
}

/// A session reached Paid or Overpaid (counted after its transaction committed).
pub fn session_completed(network: Network, livemode: bool) {
    counter!("checkout_sessions_completed_total",
        "network" => network.as_str(), "mode" => mode_label(livemode))
    .increment(1);
}

/// One JSON-RPC call sent to `host` (a batch counts each of its calls).
pub fn rpc_call(host: &str, method: &str) {
    counter!("checkout_rpc_calls_total", "host" => host.to_owned(), "method" => method.to_owned())
        .increment(1);
}

/// A request to `host` that failed: `kind` is rate_limited, http, transport, too_large, …
pub fn rpc_error(host: &str, kind: &'static str) {
    counter!("checkout_rpc_errors_total", "host" => host.to_owned(), "kind" => kind).increment(1);
}

pub fn webhook_attempt(outcome: &'static str) {
    counter!("checkout_webhook_attempts_total", "outcome" => outcome).increment(1);
}

/// The sweeper's gas tank balance, in the native coin (read each sweep tick).
pub fn gas_tank_balance(
    network: Network,
    mode: crate::domain::api_key::Mode,
    balance: rust_decimal::Decimal,
) {
    use rust_decimal::prelude::ToPrimitive;
    gauge!("checkout_sweep_gas_tank_balance",
        "network" => network.as_str(), "mode" => mode.as_str())
    .set(balance.to_f64().unwrap_or(f64::MAX));
}
