//! The CoinGecko-compatible rate source against a local HTTP stub of its documented JSON.

use crate::common::*;
use axum::routing::get;
use axum::Router;
use checkout_server::config::RateSourceConfig;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Serves `/api/v3/simple/price`: the first `good` calls succeed, later ones fail with 500.
async fn stub(good: usize) -> (String, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let router = Router::new().route(
        "/api/v3/simple/price",
        get(move |q: axum::extract::Query<std::collections::HashMap<String, String>>| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                assert_eq!(q.0.get("ids").map(String::as_str), Some("tether,usd-coin"));
                assert!(q.0.get("vs_currencies").is_some_and(|v| v.contains("eur")));
                if n < good {
                    (
                        axum::http::StatusCode::OK,
                        axum::Json(json!({"tether": {"eur": 0.9215, "jpy": 151.3}, "usd-coin": {"eur": 0.92}})),
                    )
                } else {
                    (axum::http::StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({"error": "down"})))
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (format!("http://{addr}/api/v3"), calls)
}

#[tokio::test]
async fn coingecko_rates_are_fetched_cached_and_refused_when_stale() {
    let (base_url, calls) = stub(1).await;
    let app = TestApp::spawn_with(TEST_CONFIG, |c| {
        c.rates.source = RateSourceConfig::CoinGecko {
            base_url,
            api_key: None,
            api_key_header: "x-cg-demo-api-key".into(),
        };
        c.rates.refresh_interval = Duration::from_millis(300);
        c.rates.max_age = Duration::from_millis(1200);
    })
    .await;
    let key = &app.merchant.test_key;
    let mut req = seed_request();
    req["pricing_currency"] = json!("EUR");
    req["pricing_amount"] = json!("92.15");
    let (status, s) = app.create_session(key, req.clone()).await;
    assert_eq!(status, 201, "{s}");
    assert_eq!(s["pricing"]["exchange_rate"], "0.92150000");
    assert_eq!(s["amount"], "100");

    // Within the refresh interval: served from cache.
    let (status, _) = app.create_session(key, req.clone()).await;
    assert_eq!(status, 201);
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // Source down, cached rate still young enough: used.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (status, s) = app.create_session(key, req.clone()).await;
    assert_eq!(status, 201, "{s}");
    assert!(calls.load(Ordering::SeqCst) >= 2);

    // Older than the maximum age: refused, nothing written.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let before = app.count("checkout_sessions").await;
    let (status, body) = app.create_session(key, req).await;
    assert_error(status, &body, 503, "service_unavailable");
    assert_eq!(app.count("checkout_sessions").await, before);

    // USD needs no rate source.
    let (status, _) = app.create_session(key, seed_request()).await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn a_source_that_never_answers_gives_503() {
    let app = TestApp::spawn_with(TEST_CONFIG, |c| {
        c.rates.source = RateSourceConfig::CoinGecko {
            base_url: "http://127.0.0.1:9/api/v3".into(),
            api_key: None,
            api_key_header: "x-cg-demo-api-key".into(),
        };
    })
    .await;
    let mut req = seed_request();
    req["pricing_currency"] = json!("EUR");
    let (status, body) = app.create_session(&app.merchant.test_key, req).await;
    assert_error(status, &body, 503, "service_unavailable");
    assert_eq!(app.count("checkout_sessions").await, 0);
}
