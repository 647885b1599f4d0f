//! Idempotency-Key: replay, conflict, in-progress, validation not stored, scoping, takeover, races.

use crate::common::*;
use checkout_server::faults::FaultPoint;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn post_with_key(
    app: &TestApp,
    key: &str,
    idem: &str,
    body: &Value,
    sub: Option<&str>,
) -> (StatusCode, Value, bool) {
    let mut headers = vec![("Idempotency-Key", idem)];
    headers.extend(sub.map(|sub| ("X-Sub-Merchant-Code", sub)));
    app.create_session_with(key, body, &headers).await
}

/// The 201 bodies of racing requests; every other answer must be `request_in_progress`.
fn created_bodies(results: Vec<(StatusCode, Value)>) -> Vec<Value> {
    let mut created = Vec::new();
    for (status, body) in results {
        match status.as_u16() {
            201 => created.push(body),
            409 => assert_eq!(body["error"]["code"], "request_in_progress", "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    created
}

/// Claims go stale after 1 s.
async fn app_with_one_second_lock_timeout() -> TestApp {
    TestApp::spawn_with(TEST_CONFIG, |c| {
        c.idempotency.lock_timeout = std::time::Duration::from_secs(1)
    })
    .await
}

/// Waits until the running claim on `idem` is stale, then races `racers` retries: exactly one
/// takes over and creates the session, the rest wait or replay it. Returns its body.
async fn stale_claim_is_taken_over_once(app: &TestApp, idem: &str, racers: usize) -> Value {
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let bodies = created_bodies(
        app.concurrent_creates(racers, &[("Idempotency-Key", idem)], |_| seed_request())
            .await,
    );
    assert!(!bodies.is_empty());
    assert!(bodies.iter().all(|b| b == &bodies[0]));
    bodies[0].clone()
}

#[tokio::test]
async fn same_key_same_request_replays_the_first_response() {
    let app = TestApp::spawn().await;
    let key = &app.merchant.test_key;
    let (s1, b1, r1) = post_with_key(&app, key, "order-1", &seed_request(), None).await;
    assert_eq!(s1, 201, "{b1}");
    assert!(!r1);
    // Same parameters in another order: still the same request.
    let reordered: Value = serde_json::from_str(&seed_request().to_string()).unwrap();
    let (s2, b2, r2) = post_with_key(&app, key, "order-1", &reordered, None).await;
    assert_eq!(s2, 201);
    assert!(r2, "replayed header");
    assert_eq!(b1, b2);
    assert_eq!(app.count("checkout_sessions").await, 1);
    // The replay is the first response even after the session changed.
    sqlx::query("UPDATE checkout_sessions SET status = 'Expired'")
        .execute(&app.db)
        .await
        .unwrap();
    let (_, b3, _) = post_with_key(&app, key, "order-1", &seed_request(), None).await;
    assert_eq!(b3["status"], "Pending");
}

#[tokio::test]
async fn same_key_different_request_conflicts() {
    let app = TestApp::spawn().await;
    let key = &app.merchant.test_key;
    post_with_key(&app, key, "k", &seed_request(), None).await;
    let mut other = seed_request();
    other["pricing_amount"] = json!("11.00");
    let (status, body, _) = post_with_key(&app, key, "k", &other, None).await;
    let e = assert_error(status, &body, 409, "idempotency_conflict");
    assert_eq!(e["type"], "idempotency_error");
    // Another path with the same key.
    let (_, s) = app.get("/v1/checkout/sessions", key).await;
    let id = s["data"][0]["id"].as_str().unwrap().to_owned();
    let res = app
        .client
        .post(format!("{}/v1/checkout/sessions/{id}/expire", app.base))
        .bearer_auth(key)
        .header("Idempotency-Key", "k")
        .send()
        .await
        .unwrap();
    let (status, body) = read(res).await;
    assert_error(status, &body, 409, "idempotency_conflict");
    // Another sub-merchant header with the same key.
    app.request(
        reqwest::Method::POST,
        "/v1/sub-merchants",
        Some(key),
        Some(json!({"sub_merchant_code": "s1", "display_name": "S"})),
    )
    .await;
    let (status, body, _) = post_with_key(&app, key, "k", &seed_request(), Some("s1")).await;
    assert_error(status, &body, 409, "idempotency_conflict");
    assert_eq!(app.count("checkout_sessions").await, 1);
}

#[tokio::test]
async fn validation_failures_are_not_stored() {
    let app = TestApp::spawn().await;
    let key = &app.merchant.test_key;
    let mut bad = seed_request();
    bad["pricing_amount"] = json!("0");
    let (status, body, _) = post_with_key(&app, key, "retry-me", &bad, None).await;
    assert_error(status, &body, 400, "parameter_invalid");
    let (status, body, replayed) =
        post_with_key(&app, key, "retry-me", &seed_request(), None).await;
    assert_eq!(status, 201, "{body}");
    assert!(!replayed);
    for bad_key in ["", &"k".repeat(256), "tab\there"] {
        let (status, body, _) = post_with_key(&app, key, bad_key, &seed_request(), None).await;
        let e = assert_error(status, &body, 400, "parameter_invalid");
        assert_eq!(e["param"], "Idempotency-Key");
    }
    assert_eq!(app.count("checkout_sessions").await, 1);
}

#[tokio::test]
async fn keys_are_scoped_to_merchant_and_mode() {
    let app = TestApp::spawn().await;
    let other = app.new_merchant("Other").await;
    let (s1, a, _) = post_with_key(
        &app,
        &app.merchant.test_key,
        "shared",
        &seed_request(),
        None,
    )
    .await;
    let (s2, b, r2) = post_with_key(
        &app,
        &app.merchant.live_key,
        "shared",
        &seed_request(),
        None,
    )
    .await;
    let (s3, c, r3) = post_with_key(&app, &other.test_key, "shared", &seed_request(), None).await;
    assert_eq!((s1.as_u16(), s2.as_u16(), s3.as_u16()), (201, 201, 201));
    assert!(!r2 && !r3);
    assert_ne!(a["id"], b["id"]);
    assert_ne!(a["id"], c["id"]);
    assert_eq!(b["livemode"], true);
    assert_eq!(app.count("checkout_sessions").await, 3);
}

#[tokio::test]
async fn a_running_claim_is_in_progress_until_it_goes_stale_then_taken_over_once() {
    let app = app_with_one_second_lock_timeout().await;
    let key = &app.merchant.test_key;
    // A process claimed the key and died before writing anything: simulate its claim row.
    let (status, first, _) = post_with_key(&app, key, "probe", &seed_request(), None).await;
    assert_eq!(status, 201, "{first}");
    let hash: Vec<u8> =
        sqlx::query_scalar("SELECT request_hash FROM idempotency_keys WHERE key = 'probe'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    sqlx::query(
        "INSERT INTO idempotency_keys (merchant_id, livemode, key, request_hash, state, owner, locked_at)
         SELECT merchant_id, livemode, 'dead', request_hash, 'running', gen_random_uuid(), now()
         FROM idempotency_keys WHERE key = 'probe'",
    )
    .execute(&app.db)
    .await
    .unwrap();
    assert_eq!(hash.len(), 32);
    let (status, body, _) = post_with_key(&app, key, "dead", &seed_request(), None).await;
    assert_error(status, &body, 409, "request_in_progress");
    stale_claim_is_taken_over_once(&app, "dead", 10).await;
    assert_eq!(app.count("checkout_sessions").await, 2);
}

/// The process dies after the session's transaction committed, before any response or
/// middleware bookkeeping: the retry must return that session, never create a second one.
#[tokio::test]
async fn a_crash_after_the_session_commits_replays_that_session_on_retry() {
    let app = TestApp::spawn().await;
    let key = &app.merchant.test_key;
    app.faults.arm(FaultPoint::SessionCommitted);
    let (status, _, _) = post_with_key(&app, key, "crash-1", &seed_request(), None).await;
    assert_eq!(status, 500, "the injected crash");
    assert_eq!(
        app.count("checkout_sessions").await,
        1,
        "the session was written"
    );
    let id: String = sqlx::query_scalar("SELECT id FROM checkout_sessions")
        .fetch_one(&app.db)
        .await
        .unwrap();

    let (status, body, replayed) = post_with_key(&app, key, "crash-1", &seed_request(), None).await;
    assert_eq!(status, 201, "{body}");
    assert!(replayed);
    assert_eq!(body["id"], id.as_str(), "the session that exists");
    assert_eq!(app.count("checkout_sessions").await, 1);
}

/// The process dies after writing the session but before its commit: nothing of the session
/// survives, the claim is left running, and once it goes stale one retry creates the session.
#[tokio::test]
async fn a_crash_before_the_commit_leaves_no_session_and_the_retry_creates_exactly_one() {
    let app = app_with_one_second_lock_timeout().await;
    let key = &app.merchant.test_key;
    app.faults.arm(FaultPoint::IndexTaken);
    let (status, _, _) = post_with_key(&app, key, "crash-2", &seed_request(), None).await;
    assert_eq!(status, 500, "the injected crash");
    assert_eq!(app.count("checkout_sessions").await, 0, "rolled back");
    let (status, body, _) = post_with_key(&app, key, "crash-2", &seed_request(), None).await;
    assert_error(status, &body, 409, "request_in_progress");

    let created = stale_claim_is_taken_over_once(&app, "crash-2", 5).await;
    assert_eq!(app.count("checkout_sessions").await, 1);
    let (status, again, replayed) =
        post_with_key(&app, key, "crash-2", &seed_request(), None).await;
    assert_eq!((status.as_u16(), replayed), (201, true));
    assert_eq!(again, created);
}

#[tokio::test]
async fn fifty_simultaneous_requests_make_exactly_one_session() {
    let app = TestApp::spawn().await;
    let ok = created_bodies(
        app.concurrent_creates(50, &[("Idempotency-Key", "race")], |_| seed_request())
            .await,
    );
    assert!(!ok.is_empty());
    assert!(ok.iter().all(|b| b == &ok[0]), "every 2xx body identical");
    assert_eq!(app.count("checkout_sessions").await, 1);
}

#[tokio::test]
async fn other_posts_are_replayed_too() {
    let app = TestApp::spawn().await;
    let key = &app.merchant.test_key;
    let (_, s) = app.create_session(key, seed_request()).await;
    let url = format!(
        "{}/v1/checkout/sessions/{}/expire",
        app.base,
        s["id"].as_str().unwrap()
    );
    let send = || {
        app.client
            .post(&url)
            .bearer_auth(key)
            .header("Idempotency-Key", "exp-1")
            .send()
    };
    let first = send().await.unwrap();
    assert!(first.headers().get("idempotency-replayed").is_none());
    let (s1, b1) = read(first).await;
    let second = send().await.unwrap();
    assert_eq!(second.headers()["idempotency-replayed"], "true");
    let (s2, b2) = read(second).await;
    assert_eq!(
        (s1.as_u16(), s2.as_u16()),
        (200, 200),
        "the replay is the first 200, not a 410"
    );
    assert_eq!(b1, b2);
}

#[tokio::test]
async fn cleanup_deletes_only_keys_past_retention() {
    let app = TestApp::spawn().await;
    let key = &app.merchant.test_key;
    post_with_key(&app, key, "old", &seed_request(), None).await;
    post_with_key(&app, key, "new", &seed_request(), None).await;
    sqlx::query(
        "UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'old'",
    )
    .execute(&app.db)
    .await
    .unwrap();
    sqlx::query("UPDATE checkout_sessions SET created_at = now() - interval '25 hours' WHERE idempotency_key = 'old'")
        .execute(&app.db)
        .await
        .unwrap();
    let state = checkout_server::state::AppState::new(
        app.db.clone(),
        checkout_server::config::Config::from_toml(TEST_CONFIG).unwrap(),
    );
    assert_eq!(
        checkout_server::workers::idempotency_cleanup_tick(&state)
            .await
            .unwrap(),
        1
    );
    let left: Vec<String> = sqlx::query_scalar("SELECT key FROM idempotency_keys")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(left, ["new"]);
    // The old key is free again: a new request with it makes a new session.
    let (status, _, replayed) = post_with_key(&app, key, "old", &seed_request(), None).await;
    assert_eq!(status, 201);
    assert!(!replayed);
    let (_, _, replayed) = post_with_key(&app, key, "new", &seed_request(), None).await;
    assert!(replayed);
    assert_eq!(app.count("checkout_sessions").await, 3);
}

/// A claim commits without waiting for the disk; that setting must end with its statement, not
/// stay on the pooled connection for the sessions and payments written after it.
#[tokio::test]
async fn a_claims_asynchronous_commit_does_not_outlive_it() {
    use checkout_server::db::{idempotency, Scope};
    let app = TestApp::spawn().await;
    let one = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&app.state.config.database_url)
        .await
        .unwrap();
    let merchant_id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM merchants LIMIT 1")
        .fetch_one(&app.db)
        .await
        .unwrap();
    let scope = Scope {
        merchant_id,
        livemode: false,
    };
    let claimed = idempotency::claim(
        &one,
        scope,
        "k",
        &[0; 32],
        std::time::Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert!(matches!(claimed, idempotency::ClaimOutcome::Claimed(_)));
    let setting: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&one)
        .await
        .unwrap();
    assert_eq!(setting, "on");
}
