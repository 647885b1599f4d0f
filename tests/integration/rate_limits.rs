//! Rate limits: per API key, per client address on the public routes, open live-status
//! streams per client address, the proxy header, and the RateLimit-* headers on every answer.
//! Each test configures small limits of its own (the harness's are out of reach otherwise).

use crate::common::*;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::time::Duration;

/// The test configuration plus a `[rate_limits]` section.
fn config(limits: &str) -> String {
    format!("{TEST_CONFIG}\n[rate_limits]\n{limits}\n")
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<u64> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().parse().unwrap())
    }

    /// (RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset)
    fn limits(&self) -> (u64, u64, u64) {
        let get = |name| {
            self.header(name)
                .unwrap_or_else(|| panic!("no {name} on a {} answer", self.status))
        };
        (
            get("ratelimit-limit"),
            get("ratelimit-remaining"),
            get("ratelimit-reset"),
        )
    }

    /// A 429 `rate_limited` in our error shape with a `Retry-After` of at least a second and
    /// the RateLimit headers.
    fn assert_refused(&self) -> u64 {
        assert_eq!(self.status, 429, "{}", self.body);
        assert_eq!(self.body["error"]["code"], "rate_limited", "{}", self.body);
        assert_eq!(self.body["error"]["type"], "invalid_request_error");
        assert!(self.headers.contains_key("request-id"));
        self.limits();
        let retry_after = self.header("retry-after").expect("Retry-After");
        assert!(retry_after >= 1);
        retry_after
    }

    /// Refused because the bucket is empty.
    fn assert_rate_limited(&self) -> u64 {
        assert_eq!(self.limits().1, 0, "nothing remains: {}", self.body);
        self.assert_refused()
    }
}

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    key: Option<&str>,
    headers: &[(&str, &str)],
) -> Answer {
    let mut req = app.client.request(method, format!("{}{path}", app.base));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let res = req.send().await.unwrap();
    let (status, headers) = (res.status(), res.headers().clone());
    let text = res.text().await.unwrap();
    Answer {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
    }
}

async fn list(app: &TestApp, key: &str) -> Answer {
    send(app, Method::GET, "/v1/checkout/sessions", Some(key), &[]).await
}

async fn new_session(app: &TestApp) -> String {
    let (status, body) = app
        .create_session(&app.merchant.test_key, seed_request())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_key_gets_its_burst_then_429_and_other_keys_are_unaffected() {
    let app = TestApp::spawn_with(
        &config("test_per_second = 1\ntest_burst = 3\nlive_per_second = 1\nlive_burst = 5"),
        |_| {},
    )
    .await;
    let key = app.merchant.test_key.clone();
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let a = list(&app, &key).await;
        assert_eq!(a.status, 200, "{}", a.body);
        let (limit, left, reset) = a.limits();
        assert_eq!(limit, 3);
        assert!((1..=3).contains(&reset), "{reset}");
        remaining.push(left);
    }
    assert_eq!(remaining, [2, 1, 0]);
    let refused = list(&app, &key).await;
    assert_eq!(refused.assert_rate_limited(), 1, "one token a second");
    assert_eq!(refused.limits().0, 3);
    // Every route of the key shares the bucket.
    send(&app, Method::GET, "/v1/events", Some(&key), &[])
        .await
        .assert_rate_limited();

    // Another merchant's key, and this merchant's live key (with the live limits), are not
    // touched by it.
    let other = app.new_merchant("Other Store").await;
    let a = list(&app, &other.test_key).await;
    assert_eq!((a.status.as_u16(), a.limits().0, a.limits().1), (200, 3, 2));
    let live = app.merchant.live_key.clone();
    for left in (0..5).rev() {
        let a = list(&app, &live).await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.limits().0, 5);
        assert_eq!(a.limits().1, left);
    }
    list(&app, &live).await.assert_rate_limited();
}

#[tokio::test]
async fn the_default_limits_differ_for_test_keys_live_keys_and_addresses() {
    // An empty section: the built-in defaults.
    let app = TestApp::spawn_with(&config(""), |_| {}).await;
    let a = list(&app, &app.merchant.test_key).await;
    assert_eq!((a.limits().0, a.limits().1), (50, 49));
    let a = list(&app, &app.merchant.live_key).await;
    assert_eq!((a.limits().0, a.limits().1), (200, 199));
    let a = send(&app, Method::GET, "/assets/checkout.css", None, &[]).await;
    assert_eq!(a.status, 200);
    assert_eq!((a.limits().0, a.limits().1), (40, 39));
    // Health checks are never limited.
    let a = send(&app, Method::GET, "/healthz", None, &[]).await;
    assert_eq!(a.status, 200);
    assert!(a.header("ratelimit-limit").is_none());
}

#[tokio::test]
async fn buckets_refill_over_time() {
    let app = TestApp::spawn_with(&config("test_per_second = 2\ntest_burst = 1"), |_| {}).await;
    let key = app.merchant.test_key.clone();
    let first = list(&app, &key).await;
    assert_eq!(first.status, 200);
    assert_eq!(
        first.limits(),
        (1, 0, 1),
        "empty, full again within a second"
    );
    list(&app, &key).await.assert_rate_limited();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let again = list(&app, &key).await;
    assert_eq!(again.status, 200, "{}", again.body);
    list(&app, &key).await.assert_rate_limited();
}

#[tokio::test]
async fn a_refused_post_does_not_claim_its_idempotency_key() {
    let app = TestApp::spawn_with(&config("test_per_second = 1\ntest_burst = 1"), |_| {}).await;
    let key = app.merchant.test_key.clone();
    let (status, _, _) = app
        .create_session_with(&key, &seed_request(), &[("Idempotency-Key", "a")])
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body, _) = app
        .create_session_with(&key, &seed_request(), &[("Idempotency-Key", "b")])
        .await;
    assert_error(status, &body, 429, "rate_limited");
    assert_eq!(app.count("idempotency_keys").await, 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body, replayed) = app
        .create_session_with(&key, &seed_request(), &[("Idempotency-Key", "b")])
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(!replayed);
}

#[tokio::test]
async fn public_routes_are_limited_per_client_address() {
    let app = TestApp::spawn_with(&config("ip_per_second = 1\nip_burst = 4"), |_| {}).await;
    let id = new_session(&app).await;
    let mut remaining = Vec::new();
    for path in [
        format!("/{id}"),
        "/assets/checkout.js".to_owned(),
        format!("/v1/checkout/sessions/{id}/view"),
        "/no/such/path".to_owned(),
    ] {
        let a = send(&app, Method::GET, &path, None, &[]).await;
        assert!(a.status == 200 || a.status == 404, "{path}: {}", a.status);
        assert_eq!(a.limits().0, 4);
        remaining.push(a.limits().1);
    }
    assert_eq!(remaining, [3, 2, 1, 0]);
    // The hosted page itself, over the limit: our JSON error.
    let refused = send(&app, Method::GET, &format!("/{id}"), None, &[]).await;
    refused.assert_rate_limited();
    assert!(refused.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    // The API is limited per key, not per address.
    let a = list(&app, &app.merchant.test_key).await;
    assert_eq!(a.status, 200);
    assert!(a.limits().0 > 4);
}

#[tokio::test]
async fn failed_authentications_count_against_the_client_address() {
    let app = TestApp::spawn_with(
        &config("ip_per_second = 1\nip_burst = 2\ntest_per_second = 100\ntest_burst = 100"),
        |_| {},
    )
    .await;
    let good = app.merchant.test_key.clone();
    assert_eq!(list(&app, &good).await.status, 200);
    let unknown = format!("sk_test_{}", "1".repeat(44));
    let a = list(&app, "not-a-key").await;
    assert_error(a.status, &a.body, 401, "authentication_failed");
    assert_eq!(a.limits(), (2, 1, 1));
    let a = list(&app, &unknown).await;
    assert_error(a.status, &a.body, 401, "authentication_failed");
    assert_eq!(a.limits().1, 0);
    // Out of tokens: no more lookups for unknown keys, and the public routes are closed too.
    list(&app, &unknown).await.assert_rate_limited();
    send(&app, Method::GET, "/v1/checkout/sessions", None, &[])
        .await
        .assert_rate_limited();
    send(&app, Method::GET, "/assets/checkout.css", None, &[])
        .await
        .assert_rate_limited();
    // A key in use goes on under its own limit.
    let a = list(&app, &good).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.limits().0, 100);
}

/// Opens the live-status stream of session `id`.
async fn open_stream(app: &TestApp, id: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = app
        .client
        .get(format!("{}/v1/checkout/sessions/{id}/events", app.base));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.send().await.unwrap()
}

async fn refused_body(res: reqwest::Response) -> Answer {
    let (status, headers) = (res.status(), res.headers().clone());
    let body = res.json().await.unwrap();
    Answer {
        status,
        headers,
        body,
    }
}

#[tokio::test]
async fn open_live_status_streams_are_capped_per_client_address() {
    // The default cap (20); requests themselves are plentiful.
    let app = TestApp::spawn_with(&config("ip_per_second = 1000\nip_burst = 1000"), |_| {}).await;
    let id = new_session(&app).await;
    let mut open = Vec::new();
    for _ in 0..20 {
        let res = open_stream(&app, &id, &[]).await;
        assert_eq!(res.status(), 200);
        assert!(res.headers().contains_key("ratelimit-remaining"));
        open.push(res);
    }
    // Refused for the streams, not for the requests: the request bucket is far from empty.
    let refused = refused_body(open_stream(&app, &id, &[]).await).await;
    refused.assert_refused();
    assert!(refused.limits().1 > 900);
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("streams"),
        "{}",
        refused.body
    );
    // Other routes are not held by the streams.
    let a = send(
        &app,
        Method::GET,
        &format!("/v1/checkout/sessions/{id}/view"),
        None,
        &[],
    )
    .await;
    assert_eq!(a.status, 200);

    // The client goes away from one stream: its slot comes back.
    drop(open.pop());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let res = open_stream(&app, &id, &[]).await;
        if res.status() == 200 {
            open.push(res);
            break;
        }
        assert_eq!(res.status(), 429);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed stream's slot was not freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(open_stream(&app, &id, &[]).await.status(), 429);
    drop(open);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.state.limits.streams.clients() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "slots left open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_stream_that_ends_frees_its_slot() {
    let app = TestApp::spawn_with(&config("ip_streams = 1"), |_| {}).await;
    let id = new_session(&app).await;
    let mut stream = open_stream(&app, &id, &[]).await;
    assert_eq!(stream.status(), 200);
    let first = tokio::time::timeout(Duration::from_secs(5), stream.chunk())
        .await
        .unwrap()
        .unwrap();
    assert!(first.is_some());
    refused_body(open_stream(&app, &id, &[]).await)
        .await
        .assert_refused();
    // Paid is terminal: the stream sends it and ends.
    app.pay(&id, "10.5").await;
    let rest = tokio::time::timeout(Duration::from_secs(10), stream.text())
        .await
        .expect("the stream ends after Paid")
        .unwrap();
    assert!(rest.contains("\"status\":\"Paid\""), "{rest}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let res = open_stream(&app, &id, &[]).await;
        if res.status() == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "slot not freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_proxy_header_is_believed_from_trusted_proxies() {
    let app = TestApp::spawn_with(
        &config(
            "ip_per_second = 1\nip_burst = 2\nclient_ip_header = \"X-Forwarded-For\"\n\
             trusted_proxies = [\"127.0.0.0/8\"]",
        ),
        |_| {},
    )
    .await;
    let id = new_session(&app).await;
    let path = format!("/v1/checkout/sessions/{id}/view");
    let from = |xff: &'static str| {
        let app = &app;
        let path = path.clone();
        async move { send(app, Method::GET, &path, None, &[("X-Forwarded-For", xff)]).await }
    };
    assert_eq!(from("203.0.113.1").await.limits().1, 1);
    assert_eq!(from("203.0.113.1").await.limits().1, 0);
    from("203.0.113.1").await.assert_rate_limited();
    // Another client behind the same proxy has its own bucket.
    let a = from("203.0.113.2").await;
    assert_eq!((a.status.as_u16(), a.limits().1), (200, 1));
    // A forged entry on the left changes nothing: the rightmost untrusted hop is the client.
    from("198.51.100.9, 203.0.113.1")
        .await
        .assert_rate_limited();
    from("203.0.113.1, 127.0.0.1").await.assert_rate_limited();
    // Garbage from the client stops at the proxy, which is then the client.
    let a = from("garbage, 127.0.0.1").await;
    assert_eq!((a.status.as_u16(), a.limits().1), (200, 1));
}

#[tokio::test]
async fn the_proxy_header_is_ignored_from_other_peers() {
    let app = TestApp::spawn_with(
        &config(
            "ip_per_second = 1\nip_burst = 2\nclient_ip_header = \"X-Forwarded-For\"\n\
             trusted_proxies = [\"10.0.0.0/8\"]",
        ),
        |_| {},
    )
    .await;
    let id = new_session(&app).await;
    let path = format!("/v1/checkout/sessions/{id}/view");
    // We connect from 127.0.0.1, not a trusted proxy: each claimed address is ours.
    for (xff, left) in [("203.0.113.1", 1), ("203.0.113.2", 0)] {
        let a = send(&app, Method::GET, &path, None, &[("X-Forwarded-For", xff)]).await;
        assert_eq!((a.status.as_u16(), a.limits().1), (200, left));
    }
    send(
        &app,
        Method::GET,
        &path,
        None,
        &[("X-Forwarded-For", "203.0.113.3")],
    )
    .await
    .assert_rate_limited();
}
