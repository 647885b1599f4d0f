//! `GET /metrics` on its own port, in Prometheus's text format.

use crate::common::{seed_request, serve_local, TestApp};
use reqwest::StatusCode;
use std::time::Duration;

/// The value of the first sample of `metric` whose labels include every one of `labels`.
fn sample(text: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(metric) && l[metric.len()..].starts_with(['{', ' ']))
        .find(|l| labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_count_requests_sessions_and_read_the_pools_streams_and_queues() {
    let app = TestApp::spawn().await;
    let metrics = serve_local(checkout_server::metrics::router(app.state.clone())).await;
    let (status, s) = app
        .create_session(&app.merchant.test_key, seed_request())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{s}");
    let id = s["id"].as_str().unwrap();
    let (status, _) = app
        .get(
            &format!("/v1/checkout/sessions/{id}"),
            &app.merchant.test_key,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    app.pay(id, "10.5").await;
    let _stream = app
        .client
        .get(format!("{}/v1/checkout/sessions/{id}/events", app.base))
        .send()
        .await
        .unwrap();

    // Any method name reaches the server; only the standard ones become labels.
    let brew = reqwest::Method::from_bytes(b"BREW").unwrap();
    let res = app
        .client
        .request(brew, format!("{}/v1/checkout/sessions", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    let res = app
        .client
        .get(format!("{metrics}/metrics"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = res.text().await.unwrap();
    let at_least_one = |metric: &str, labels: &[&str]| {
        let value = sample(&text, metric, labels);
        assert!(
            value.is_some_and(|v| v >= 1.0),
            "{metric} {labels:?}: {value:?}\n{text}"
        );
    };
    // Requests by route template (never the session id), method and status, with latencies.
    let create = [
        "route=\"/v1/checkout/sessions\"",
        "method=\"POST\"",
        "status=\"201\"",
    ];
    at_least_one("checkout_http_requests_total", &create);
    at_least_one(
        "checkout_http_requests_total",
        &["route=\"/v1/checkout/sessions/{id}\"", "status=\"200\""],
    );
    at_least_one("checkout_http_request_duration_seconds_count", &create);
    assert!(!text.contains(id), "no session id in a label");
    assert!(!text.contains("BREW"), "no client-chosen method in a label");
    at_least_one(
        "checkout_http_requests_total",
        &["method=\"other\"", "status=\"401\""],
    );
    at_least_one(
        "checkout_sessions_created_total",
        &["network=\"TRON\"", "mode=\"test\""],
    );
    at_least_one(
        "checkout_sessions_completed_total",
        &["network=\"TRON\"", "mode=\"test\""],
    );
    // Read at scrape time.
    assert!(sample(&text, "checkout_db_pool_max_connections", &["pool=\"api\""]).is_some());
    assert!(sample(
        &text,
        "checkout_db_pool_connections",
        &["pool=\"workers\"", "state=\"idle\""]
    )
    .is_some());
    assert!(sample(&text, "checkout_webhook_deliveries_due", &[]).is_some());
    assert!(sample(&text, "checkout_live_streams", &[]).is_some());
    // A live network's watcher (recorded as caught up by the test harness).
    assert!(
        sample(
            &text,
            "checkout_watcher_head_lag_blocks",
            &["network=\"TRON\"", "mode=\"live\""]
        )
        .is_some(),
        "{text}"
    );

    // Not on the public port.
    let public = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn rpc_calls_and_errors_are_counted_by_host_and_method() {
    use checkout_server::chain::rpc::{EndpointSpec, RetryPolicy, RpcClient};
    use serde_json::{json, Value};
    // A node that answers eth_blockNumber, and one that limits every request.
    let node = serve_local(axum::Router::new().route(
        "/",
        axum::routing::post(|axum::Json(call): axum::Json<Value>| async move {
            axum::Json(json!({ "jsonrpc": "2.0", "id": call["id"], "result": "0x10" }))
        }),
    ))
    .await;
    let limited = serve_local(axum::Router::new().route(
        "/",
        axum::routing::post(|| async { StatusCode::TOO_MANY_REQUESTS }),
    ))
    .await;
    let policy = RetryPolicy {
        timeout: Duration::from_secs(5),
        attempts: 1,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(5),
    };
    let spec = |url: &str| EndpointSpec {
        url: format!("{}/", url.replace("127.0.0.1", "localhost")),
        ..EndpointSpec::default()
    };
    let handle = checkout_server::metrics::handle();
    let ok = RpcClient::new(&[spec(&node)], policy.clone(), 100).unwrap();
    assert_eq!(ok.block_number().await.unwrap(), 16);
    let refused = RpcClient::new(&[spec(&limited)], policy, 100).unwrap();
    assert!(refused.block_number().await.is_err());
    let text = handle.render();
    let calls = ["host=\"localhost\"", "method=\"eth_blockNumber\""];
    assert!(
        sample(&text, "checkout_rpc_calls_total", &calls).is_some_and(|v| v >= 2.0),
        "{text}"
    );
    let limits = ["host=\"localhost\"", "kind=\"rate_limited\""];
    assert!(
        sample(&text, "checkout_rpc_errors_total", &limits).is_some_and(|v| v >= 1.0),
        "{text}"
    );
}
