//! Events, webhook endpoints and deliveries against a real HTTP receiver on loopback, and
//! payments simulated in test mode.

use crate::common::{assert_error, seed_request, TestApp, TEST_CONFIG};
use base64::Engine;
use checkout_server::faults::FaultPoint;
use checkout_server::webhooks::dispatcher::Dispatcher;
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Received = (axum::http::HeaderMap, Vec<u8>);

/// A webhook receiver: records each request; answers with the queued statuses (then 200),
/// or hangs for `hang` on a queued 0.
#[derive(Clone, Default)]
struct Receiver {
    requests: Arc<Mutex<Vec<Received>>>,
    answers: Arc<Mutex<VecDeque<u16>>>,
}

impl Receiver {
    async fn start(answers: &[u16]) -> (Self, String) {
        let r = Receiver::default();
        r.answers.lock().unwrap().extend(answers);
        let state = r.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let state = state.clone();
                    async move {
                        state
                            .requests
                            .lock()
                            .unwrap()
                            .push((headers, body.to_vec()));
                        let next = state.answers.lock().unwrap().pop_front().unwrap_or(200);
                        if next == 0 {
                            tokio::time::sleep(Duration::from_secs(5)).await;
                            return StatusCode::OK;
                        }
                        StatusCode::from_u16(next).unwrap()
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (r, url)
    }

    fn received(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
    }
}

const WEBHOOK_CONFIG: &str = r#"
[webhooks]
timeout_ms = 300
retry_schedule_seconds = [0, 0, 0, 0]
allow_private_targets = true
"#;

/// The same, with the default guard: no private or internal targets, in either mode.
const GUARDED_WEBHOOK_CONFIG: &str = r#"
[webhooks]
timeout_ms = 300
retry_schedule_seconds = [0, 0, 0, 0]
"#;

async fn app() -> TestApp {
    TestApp::spawn_with(&format!("{TEST_CONFIG}{WEBHOOK_CONFIG}"), |_| {}).await
}

fn dispatcher(app: &TestApp) -> Dispatcher {
    Dispatcher::new(app.db.clone(), &app.state.config.webhooks).unwrap()
}

async fn register(app: &TestApp, key: &str, body: Value) -> (StatusCode, Value) {
    app.request(Method::POST, "/v1/webhook_endpoints", Some(key), Some(body))
        .await
}

async fn new_session(app: &TestApp) -> String {
    let (status, s) = app
        .create_session(&app.merchant.test_key, seed_request())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{s}");
    s["id"].as_str().unwrap().to_owned()
}

fn header<'a>(h: &'a axum::http::HeaderMap, name: &str) -> &'a str {
    h.get(name).unwrap().to_str().unwrap()
}

/// The IronixPay signature `secret` gives the request: hex HMAC-SHA256 of
/// `"{X-Timestamp}.{body}"`, keyed with the whole secret string.
fn ironixpay_signature(secret: &str, headers: &axum::http::HeaderMap, body: &[u8]) -> String {
    let ts = header(headers, "x-timestamp");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{ts}.").as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The Standard Webhooks signature `secret` gives the request (`v1,` + base64).
fn standard_signature(secret: &str, headers: &axum::http::HeaderMap, body: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let id = header(headers, "webhook-id");
    let wts = header(headers, "webhook-timestamp");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{wts}.").as_bytes());
    mac.update(body);
    format!("v1,{}", b64.encode(mac.finalize().into_bytes()))
}

/// Checks both signature schemes from scratch, as a merchant's receiver would.
fn verify(secret: &str, headers: &axum::http::HeaderMap, body: &[u8]) {
    let ts = header(headers, "x-timestamp");
    let now = chrono::Utc::now().timestamp();
    assert!((now - ts.parse::<i64>().unwrap()).abs() < 300);
    assert_eq!(
        header(headers, "x-signature"),
        ironixpay_signature(secret, headers, body)
    );
    let expected = standard_signature(secret, headers, body);
    assert!(
        header(headers, "webhook-signature")
            .split(' ')
            .any(|s| s == expected),
        "webhook-signature"
    );
}

#[tokio::test]
async fn a_simulated_payment_sends_one_signed_session_completed() {
    let app = app().await;
    let (receiver, url) = Receiver::start(&[]).await;
    let (status, endpoint) = register(&app, &app.merchant.test_key, json!({ "url": url })).await;
    assert_eq!(status, StatusCode::CREATED, "{endpoint}");
    let secret = endpoint["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    let (_, listed) = app
        .get("/v1/webhook_endpoints", &app.merchant.test_key)
        .await;
    assert!(listed["data"][0].get("secret").is_none(), "shown once");

    let id = new_session(&app).await;
    let (status, paid) = app
        .simulate_payment(&app.merchant.test_key, &id, "10.5")
        .await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    assert_eq!(paid["status"], "Paid");
    assert_eq!(paid["amount_received"], "10.5");
    assert_eq!(paid["transactions"][0]["status"], "Confirmed");

    let d = dispatcher(&app);
    assert_eq!(d.tick().await.unwrap().succeeded, 1);
    assert_eq!(d.tick().await.unwrap().attempted, 0, "nothing left");
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    let (headers, body) = &got[0];
    verify(&secret, headers, body);
    let event: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(event["event_type"], "session.completed");
    assert_eq!(event["livemode"], false);
    assert_eq!(event["data"]["id"], json!(id));
    assert_eq!(event["data"]["status"], "Paid");
    assert!(event["id"].as_str().unwrap().starts_with("evt_"));
    assert_eq!(header(headers, "webhook-id"), event["id"].as_str().unwrap());

    let (status, e) = app
        .get(
            &format!("/v1/events/{}", event["id"].as_str().unwrap()),
            &app.merchant.test_key,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(e["deliveries"][0]["status"], "succeeded");
    assert_eq!(e["deliveries"][0]["attempt_log"][0]["status_code"], 200);
}

#[tokio::test]
async fn every_payment_outcome_has_its_event() {
    let app = app().await;
    let key = app.merchant.test_key.clone();
    let under = new_session(&app).await;
    let (_, s) = app.simulate_payment(&key, &under, "4").await;
    assert_eq!(s["status"], "Underpaid");
    let (_, s) = app.simulate_payment(&key, &under, "7").await;
    assert_eq!(s["status"], "Overpaid");
    assert_eq!(s["amount_received"], "11");
    let (_, s) = app.simulate_payment(&key, &under, "1").await;
    assert_eq!(
        s["status"], "Overpaid",
        "terminal: a late payment changes nothing"
    );
    assert_eq!(s["amount_received"], "11");
    let expired = new_session(&app).await;
    app.request(
        Method::POST,
        &format!("/v1/checkout/sessions/{expired}/expire"),
        Some(&key),
        None,
    )
    .await;

    let (status, page) = app.get("/v1/events?page_size=2", &key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["meta"]["total"], 4);
    assert_eq!(page["meta"]["total_pages"], 2);
    assert_eq!(
        page["data"][0]["event_type"], "session.expired",
        "newest first"
    );
    let (_, all) = app
        .get(&format!("/v1/events?session_id={under}"), &key)
        .await;
    let types: Vec<&str> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "session.underpaid",
            "session.completed",
            "session.late_payment"
        ]
    );
    let (_, only) = app.get("/v1/events?type=session.completed", &key).await;
    assert_eq!(only["meta"]["total"], 1);
    assert_eq!(only["data"][0]["data"]["status"], "Overpaid");
    let (status, body) = app.get("/v1/events?type=session.paid", &key).await;
    assert_error(status, &body, 400, "parameter_invalid");
    // Other merchants and modes see none of it.
    let (_, live) = app.get("/v1/events", &app.merchant.live_key).await;
    assert_eq!(live["meta"]["total"], 0);
}

#[tokio::test]
async fn simulation_is_for_test_keys_and_checks_its_input() {
    let app = app().await;
    let id = new_session(&app).await;
    let (status, body) = app
        .simulate_payment(&app.merchant.live_key, &id, "10")
        .await;
    assert_error(status, &body, 403, "permission_denied");
    for bad in ["0", "-1", "abc", "1.1234567"] {
        let (status, body) = app.simulate_payment(&app.merchant.test_key, &id, bad).await;
        assert_error(status, &body, 400, "parameter_invalid");
    }
    let (status, body) = app
        .simulate_payment(
            &app.merchant.test_key,
            "cs_00000000000000000000000000000000",
            "1",
        )
        .await;
    assert_error(status, &body, 404, "resource_missing");
    assert_eq!(app.count("transactions").await, 0);
    assert_eq!(app.count("events").await, 0);
}

#[tokio::test]
async fn a_failure_after_the_status_change_leaves_neither_change_nor_event() {
    let app = app().await;
    let id = new_session(&app).await;
    app.faults.arm(FaultPoint::StatusChanged);
    let (status, _) = app
        .simulate_payment(&app.merchant.test_key, &id, "10.5")
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let (_, s) = app
        .get(
            &format!("/v1/checkout/sessions/{id}"),
            &app.merchant.test_key,
        )
        .await;
    assert_eq!(s["status"], "Pending");
    assert_eq!(s["amount_received"], "0");
    assert_eq!(app.count("transactions").await, 0);
    assert_eq!(app.count("events").await, 0);
    // The retry goes through whole.
    let (status, s) = app
        .simulate_payment(&app.merchant.test_key, &id, "10.5")
        .await;
    assert_eq!(
        (status, s["status"].as_str()),
        (StatusCode::OK, Some("Paid"))
    );
    assert_eq!(app.count("events").await, 1);
}

#[tokio::test]
async fn failing_and_hanging_receivers_are_retried_until_delivered_once() {
    let app = app().await;
    // 500, 503, a hang past the timeout, then 200.
    let (receiver, url) = Receiver::start(&[500, 503, 0]).await;
    register(&app, &app.merchant.test_key, json!({ "url": url })).await;
    let id = new_session(&app).await;
    app.simulate_payment(&app.merchant.test_key, &id, "10.5")
        .await;
    let d = dispatcher(&app);
    let mut succeeded = 0;
    for _ in 0..4 {
        succeeded += d.tick().await.unwrap().succeeded;
    }
    assert_eq!(succeeded, 1);
    assert_eq!(d.tick().await.unwrap().attempted, 0);
    let (_, events) = app.get("/v1/events", &app.merchant.test_key).await;
    let event_id = events["data"][0]["id"].as_str().unwrap();
    let (_, e) = app
        .get(&format!("/v1/events/{event_id}"), &app.merchant.test_key)
        .await;
    let log = e["deliveries"][0]["attempt_log"].as_array().unwrap();
    assert_eq!(log.len(), 4, "{e}");
    let outcomes: Vec<(Value, Value)> = log
        .iter()
        .map(|a| (a["outcome"].clone(), a["status_code"].clone()))
        .collect();
    assert_eq!(
        outcomes,
        [
            (json!("http_error"), json!(500)),
            (json!("http_error"), json!(503)),
            (json!("timeout"), Value::Null),
            (json!("delivered"), json!(200)),
        ]
    );
    assert!(
        log.iter().all(|a| a.get("error").is_none()),
        "no transport detail"
    );
    assert_eq!(e["deliveries"][0]["status"], "succeeded");
    assert_eq!(receiver.received().len(), 4);

    // Resend: once more, now.
    let (status, _) = app
        .request(
            Method::POST,
            &format!("/v1/events/{event_id}/resend"),
            Some(&app.merchant.test_key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(d.tick().await.unwrap().succeeded, 1);
    assert_eq!(receiver.received().len(), 5);
}

#[tokio::test]
async fn a_receiver_that_never_recovers_ends_failed_and_visible() {
    let app = app().await;
    let (_, url) = Receiver::start(&[500, 500, 500, 500, 500, 500]).await;
    register(&app, &app.merchant.test_key, json!({ "url": url })).await;
    let id = new_session(&app).await;
    app.simulate_payment(&app.merchant.test_key, &id, "10.5")
        .await;
    let d = dispatcher(&app);
    for _ in 0..6 {
        d.tick().await.unwrap();
    }
    let status: String = sqlx::query_scalar("SELECT status FROM webhook_deliveries")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(status, "failed", "1 try + 4 retries, then given up");
    let attempts: i64 = app.count("webhook_attempts").await;
    assert_eq!(attempts, 5);
}

#[tokio::test]
async fn two_dispatchers_and_a_restart_deliver_each_event_once() {
    let app = app().await;
    let (receiver, url) = Receiver::start(&[]).await;
    register(&app, &app.merchant.test_key, json!({ "url": url })).await;
    for _ in 0..20 {
        let id = new_session(&app).await;
        app.simulate_payment(&app.merchant.test_key, &id, "10.5")
            .await;
    }
    // A dispatcher that claimed a delivery and died: its claim lapses, then it is sent.
    sqlx::query(
        "UPDATE webhook_deliveries SET locked_until = now() + interval '1 second'
          WHERE id = (SELECT min(id) FROM webhook_deliveries)",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let (a, b) = (dispatcher(&app), dispatcher(&app));
    let (ra, rb) = tokio::join!(a.tick(), b.tick());
    let sent = ra.unwrap().succeeded + rb.unwrap().succeeded;
    assert_eq!(sent, 19, "the held one waits");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(a.tick().await.unwrap().succeeded, 1);
    let got = receiver.received();
    let mut ids: Vec<String> = got
        .iter()
        .map(|(h, _)| header(h, "webhook-id").to_owned())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!((got.len(), ids.len()), (20, 20), "each event exactly once");
}

#[tokio::test]
async fn endpoints_filter_types_and_rotate_secrets() {
    let app = app().await;
    let (receiver, url) = Receiver::start(&[]).await;
    for bad in [
        json!({ "url": "ftp://127.0.0.1/" }),
        json!({ "url": url, "events": ["session.paid"] }),
        json!({ "url": url, "events": [] }),
        json!({ "url": url, "events": "session.expired" }),
        json!({ "url": url, "extra": 1 }),
    ] {
        let (status, body) = register(&app, &app.merchant.test_key, bad.clone()).await;
        assert_error(status, &body, 400, "parameter_invalid");
    }
    assert_eq!(app.count("webhook_endpoints").await, 0);

    let (_, only_expired) = register(
        &app,
        &app.merchant.test_key,
        json!({ "url": url, "events": ["session.expired"] }),
    )
    .await;
    let old_secret = only_expired["secret"].as_str().unwrap().to_owned();
    let id = new_session(&app).await;
    app.simulate_payment(&app.merchant.test_key, &id, "10.5")
        .await;
    let d = dispatcher(&app);
    assert_eq!(d.tick().await.unwrap().attempted, 0, "not subscribed");
    let expire = |id: String| {
        let app = &app;
        async move {
            let (status, body) = app
                .request(
                    Method::POST,
                    &format!("/v1/checkout/sessions/{id}/expire"),
                    Some(&app.merchant.test_key),
                    None,
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    };
    // No rotation: one signature per scheme, no X-Signature-Previous.
    expire(new_session(&app).await).await;
    assert_eq!(d.tick().await.unwrap().succeeded, 1);
    let (headers, body) = receiver.received().pop().unwrap();
    verify(&old_secret, &headers, &body);
    assert!(headers.get("x-signature-previous").is_none());
    assert_eq!(header(&headers, "webhook-signature").split(' ').count(), 1);

    let ep = only_expired["id"].as_str().unwrap();
    let (status, rotated) = app
        .request(
            Method::POST,
            &format!("/v1/webhook_endpoints/{ep}/rotate_secret"),
            Some(&app.merchant.test_key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, old_secret);
    let other = new_session(&app).await;
    app.request(
        Method::POST,
        &format!("/v1/checkout/sessions/{other}/expire"),
        Some(&app.merchant.test_key),
        None,
    )
    .await;
    assert_eq!(d.tick().await.unwrap().succeeded, 1);
    let (headers, body) = receiver.received().pop().unwrap();
    verify(&new_secret, &headers, &body);
    // During the overlap the old secret verifies too: a second Standard Webhooks signature,
    // and the IronixPay one in X-Signature-Previous.
    let sigs = header(&headers, "webhook-signature");
    assert_eq!(sigs.split(' ').count(), 2);
    assert_eq!(
        sigs.split(' ').nth(1),
        Some(standard_signature(&old_secret, &headers, &body).as_str())
    );
    assert_eq!(
        headers
            .get("x-signature-previous")
            .map(|v| v.to_str().unwrap()),
        Some(ironixpay_signature(&old_secret, &headers, &body).as_str()),
        "X-Signature-Previous: the old secret's IronixPay signature"
    );
    assert_ne!(
        header(&headers, "x-signature"),
        header(&headers, "x-signature-previous")
    );

    // Once the overlap is over, the old secret signs nothing.
    sqlx::query("UPDATE webhook_endpoints SET previous_secret_until = now() - interval '1 second'")
        .execute(&app.db)
        .await
        .unwrap();
    expire(new_session(&app).await).await;
    assert_eq!(d.tick().await.unwrap().succeeded, 1);
    let (headers, body) = receiver.received().pop().unwrap();
    verify(&new_secret, &headers, &body);
    assert!(headers.get("x-signature-previous").is_none());
    assert_eq!(header(&headers, "webhook-signature").split(' ').count(), 1);

    let (status, _) = app
        .request(
            Method::DELETE,
            &format!("/v1/webhook_endpoints/{ep}"),
            Some(&app.merchant.test_key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let third = new_session(&app).await;
    app.request(
        Method::POST,
        &format!("/v1/checkout/sessions/{third}/expire"),
        Some(&app.merchant.test_key),
        None,
    )
    .await;
    assert_eq!(d.tick().await.unwrap().attempted, 0, "deleted");
}

#[tokio::test]
async fn internal_targets_are_refused_in_both_modes_unless_the_operator_allows_them() {
    let app = TestApp::spawn_with(&format!("{TEST_CONFIG}{GUARDED_WEBHOOK_CONFIG}"), |_| {}).await;
    for key in [&app.merchant.test_key, &app.merchant.live_key] {
        for url in [
            "http://169.254.169.254/latest/meta-data/",
            "http://10.0.0.1/x",
            "http://127.0.0.1:5432/",
            "http://[::1]:9/x",
            "http://[::ffff:127.0.0.1]/x",
            "http://localhost:9/x",
        ] {
            let (status, body) = register(&app, key, json!({ "url": url })).await;
            let err = assert_error(status, &body, 400, "parameter_invalid");
            assert_eq!(err["param"], "url", "{url}");
        }
    }
    assert_eq!(app.count("webhook_endpoints").await, 0);
}

#[tokio::test]
async fn a_delivery_to_an_internal_address_is_refused_at_send_time_and_logged_coarsely() {
    let app = TestApp::spawn_with(&format!("{TEST_CONFIG}{GUARDED_WEBHOOK_CONFIG}"), |_| {}).await;
    let (receiver, url) = Receiver::start(&[]).await;
    // As if the host had resolved to a public address at registration and to 127.0.0.1 now.
    for (id, livemode) in [
        ("we_".to_owned() + &"a".repeat(32), false),
        ("we_".to_owned() + &"b".repeat(32), true),
    ] {
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, merchant_id, livemode, url, secret)
             SELECT $1, merchant_id, $2, $3, 'whsec_AAAA' FROM api_keys LIMIT 1",
        )
        .bind(id)
        .bind(livemode)
        .bind(&url)
        .execute(&app.db)
        .await
        .unwrap();
    }
    for (key, network) in [
        (&app.merchant.test_key, "TRON"),
        (&app.merchant.live_key, "BSC"),
    ] {
        let (status, s) = app
            .create_session(key, {
                let mut r = seed_request();
                r["network"] = json!(network);
                r
            })
            .await;
        assert_eq!(status, StatusCode::CREATED, "{s}");
        let id = s["id"].as_str().unwrap();
        app.request(
            Method::POST,
            &format!("/v1/checkout/sessions/{id}/expire"),
            Some(key),
            None,
        )
        .await;
    }
    let report = dispatcher(&app).tick().await.unwrap();
    assert_eq!((report.attempted, report.succeeded), (2, 0));
    assert!(
        receiver.received().is_empty(),
        "nothing reached the internal address"
    );
    let (_, events) = app.get("/v1/events", &app.merchant.test_key).await;
    let event_id = events["data"][0]["id"].as_str().unwrap();
    let (_, e) = app
        .get(&format!("/v1/events/{event_id}"), &app.merchant.test_key)
        .await;
    let attempt = &e["deliveries"][0]["attempt_log"][0];
    assert_eq!(attempt["outcome"], "connection_failed", "{e}");
    assert_eq!(attempt["status_code"], Value::Null);
    assert!(attempt.get("error").is_none());
    assert!(
        !e.to_string().contains("internal"),
        "no detail about the target: {e}"
    );
}

/// A registered receiver and a paid session: the id of its `session.completed`.
async fn paid_event(app: &TestApp) -> String {
    let (_, url) = Receiver::start(&[]).await;
    register(app, &app.merchant.test_key, json!({ "url": url })).await;
    let id = new_session(app).await;
    app.pay(&id, "10.5").await;
    let (_, events) = app.get("/v1/events", &app.merchant.test_key).await;
    events["data"][0]["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn resend_is_limited_to_ten_an_hour_per_event() {
    let app = app().await;
    let event_id = paid_event(&app).await;
    let resend_path = format!("/v1/events/{event_id}/resend");
    let resend = || {
        app.request(
            Method::POST,
            &resend_path,
            Some(&app.merchant.test_key),
            None,
        )
    };
    for _ in 0..10 {
        let (status, body) = resend().await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // A refusal is not stored under the Idempotency-Key: a retry with the same key is refused
    // afresh, with its Retry-After, and goes through once the window has moved on.
    let limited_resend = || async {
        app.client
            .post(format!("{}/v1/events/{event_id}/resend", app.base))
            .bearer_auth(&app.merchant.test_key)
            .header("Idempotency-Key", "resend-after-limit")
            .send()
            .await
            .unwrap()
    };
    for _ in 0..2 {
        let res = limited_resend().await;
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(res.headers().get("idempotency-replayed").is_none());
        let wait: u64 = res.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((3590..=3600).contains(&wait), "{wait}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "rate_limited");
    }
    // An hour later the window has moved on.
    sqlx::query("UPDATE event_resends SET resent_at = resent_at - interval '61 minutes'")
        .execute(&app.db)
        .await
        .unwrap();
    assert_eq!(limited_resend().await.status(), StatusCode::OK);
    let (status, _) = resend().await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn simultaneous_simulations_on_one_session_both_count() {
    let app = app().await;
    let id = new_session(&app).await;
    let key = app.merchant.test_key.clone();
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let (client, base, key, id) = (
                app.client.clone(),
                app.base.clone(),
                key.clone(),
                id.clone(),
            );
            tokio::spawn(async move {
                client
                    .post(format!(
                        "{base}/v1/test_helpers/checkout/sessions/{id}/simulate_payment"
                    ))
                    .bearer_auth(key)
                    .json(&json!({ "amount": "1" }))
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), StatusCode::OK, "no deadlock, no 500");
    }
    let (_, s) = app.get(&format!("/v1/checkout/sessions/{id}"), &key).await;
    assert_eq!(s["amount_received"], "8");
    assert_eq!(s["status"], "Underpaid");
    assert_eq!(s["transactions"].as_array().unwrap().len(), 8);
}

/// Queues `n` events of `session` through the real insert (one delivery per endpoint), in
/// one transaction.
async fn queue_events(app: &TestApp, session: &str, n: usize) {
    let merchant: uuid::Uuid =
        sqlx::query_scalar("SELECT merchant_id FROM checkout_sessions WHERE id = $1")
            .bind(session)
            .fetch_one(&app.db)
            .await
            .unwrap();
    let mut tx = app.db.begin().await.unwrap();
    for _ in 0..n {
        checkout_server::db::events::insert(
            &mut tx,
            &format!("evt_{}", uuid::Uuid::new_v4().simple()),
            merchant,
            false,
            checkout_server::domain::event::EventType::LatePayment,
            checkout_server::db::events::Subject::Session(session),
            &json!({ "id": session }),
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn a_noisy_session_holds_up_neither_other_sessions_nor_other_merchants() {
    let app = app().await;
    let (receiver, url) = Receiver::start(&[]).await;
    register(&app, &app.merchant.test_key, json!({ "url": url })).await;
    let other = app.new_merchant("Quiet Shop").await;
    register(&app, &other.test_key, json!({ "url": url })).await;
    let noisy = new_session(&app).await;
    let quiet = new_session(&app).await;
    let (status, s) = app.create_session(&other.test_key, seed_request()).await;
    assert_eq!(status, StatusCode::CREATED, "{s}");
    let other_merchants = s["id"].as_str().unwrap().to_owned();
    // 200 events of one session first, then one of another session of the same merchant and
    // endpoint, and one of another merchant's.
    queue_events(&app, &noisy, 200).await;
    queue_events(&app, &quiet, 1).await;
    queue_events(&app, &other_merchants, 1).await;

    let d = dispatcher(&app);
    assert_eq!(d.tick().await.unwrap().attempted, 32, "one batch");
    let sent: Vec<String> = receiver
        .received()
        .iter()
        .map(|(_, body)| {
            let event: Value = serde_json::from_slice(body).unwrap();
            event["data"]["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(
        sent.contains(&quiet),
        "the other session waited behind the noisy one"
    );
    assert!(
        sent.contains(&other_merchants),
        "the other merchant waited behind the noisy session"
    );
    assert_eq!(sent.iter().filter(|s| **s == noisy).count(), 30);

    // The rest drains, each event once.
    let mut sent = 32;
    while sent < 202 {
        let report = d.tick().await.unwrap();
        assert!(report.attempted > 0, "stalled after {sent}");
        sent += report.succeeded;
    }
    assert_eq!(d.tick().await.unwrap().attempted, 0);
    let mut ids: Vec<String> = receiver
        .received()
        .iter()
        .map(|(h, _)| header(h, "webhook-id").to_owned())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 202);
}

#[tokio::test]
async fn a_noisy_endpoint_does_not_hold_up_other_merchants() {
    let app = app().await;
    let (receiver, url) = Receiver::start(&[]).await;
    register(&app, &app.merchant.test_key, json!({ "url": url })).await;
    let other = app.new_merchant("Quiet Shop").await;
    register(&app, &other.test_key, json!({ "url": url })).await;
    // 200 events over 50 sessions of one merchant, then one of another merchant's.
    for _ in 0..50 {
        let id = new_session(&app).await;
        queue_events(&app, &id, 4).await;
    }
    let (status, s) = app.create_session(&other.test_key, seed_request()).await;
    assert_eq!(status, StatusCode::CREATED, "{s}");
    let quiet = s["id"].as_str().unwrap().to_owned();
    queue_events(&app, &quiet, 1).await;

    let d = dispatcher(&app);
    assert_eq!(d.tick().await.unwrap().attempted, 32);
    let sent: Vec<String> = receiver
        .received()
        .iter()
        .map(|(_, body)| {
            let event: Value = serde_json::from_slice(body).unwrap();
            event["data"]["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(
        sent.contains(&quiet),
        "the other merchant waited behind the noisy endpoint"
    );
    // The noisy endpoint's turn went to 31 of its sessions' first events, oldest first.
    let mut sessions = sent.clone();
    sessions.sort();
    sessions.dedup();
    assert_eq!(sessions.len(), 32);
}

#[tokio::test]
async fn simultaneous_resends_never_exceed_the_limit() {
    let app = app().await;
    let event_id = paid_event(&app).await;
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let (client, url, key) = (
                app.client.clone(),
                format!("{}/v1/events/{event_id}/resend", app.base),
                app.merchant.test_key.clone(),
            );
            tokio::spawn(async move {
                client
                    .post(url)
                    .bearer_auth(key)
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    let mut ok = 0;
    for call in calls {
        match call.await.unwrap() {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("{other}"),
        }
    }
    assert_eq!(ok, 10);
    assert_eq!(app.count("event_resends").await, 10);
}

#[tokio::test]
async fn a_2048_character_url_is_taken_though_its_normalized_form_is_longer() {
    let app = app().await;
    // 2,048 characters as sent; the stored form gains a trailing `/` for the empty path.
    let host: String = std::iter::repeat_n("a".repeat(63), 40)
        .collect::<Vec<_>>()
        .join(".");
    let url = format!("https://{}", &host[..2048 - "https://".len()]);
    assert_eq!(url.len(), 2048);
    let (status, body) = register(&app, &app.merchant.test_key, json!({ "url": url })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["url"], format!("{url}/"));
    let (status, body) = register(
        &app,
        &app.merchant.test_key,
        json!({ "url": format!("{url}a") }),
    )
    .await;
    let error = assert_error(status, &body, 400, "parameter_invalid");
    assert_eq!(error["param"], "url", "{body}");
}
