//! Money-safety rules on the crediting path, through test-mode simulated payments (the same
//! path a chain transfer takes): lateness by block time, dust, the late-payment event limit,
//! the size of events, and what each listed transaction says about its credit.

use crate::common::{seed_request, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn new_session(app: &TestApp) -> String {
    let (status, s) = app
        .create_session(&app.merchant.test_key, seed_request())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{s}");
    s["id"].as_str().unwrap().to_owned()
}

async fn session(app: &TestApp, id: &str) -> Value {
    let (status, body) = app
        .get(
            &format!("/v1/checkout/sessions/{id}"),
            &app.merchant.test_key,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// The session's events, newest first.
async fn events(app: &TestApp, id: &str) -> Vec<Value> {
    let (status, body) = app
        .get(
            &format!("/v1/events?session_id={id}&page_size=100"),
            &app.merchant.test_key,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"].as_array().unwrap().clone()
}

fn types(events: &[Value]) -> Vec<String> {
    let mut t: Vec<String> = events
        .iter()
        .map(|e| e["event_type"].as_str().unwrap().to_owned())
        .collect();
    t.sort();
    t
}

#[tokio::test]
async fn a_payment_after_expires_at_on_a_session_still_open_is_late_and_expires_it() {
    let app = TestApp::spawn().await;
    let id = new_session(&app).await;
    // expires_at has passed; the expiry worker has not run yet.
    sqlx::query(
        "UPDATE checkout_sessions SET expires_at = now() - interval '1 second',
                created_at = now() - interval '31 minutes' WHERE id = $1",
    )
    .bind(&id)
    .execute(&app.db)
    .await
    .unwrap();
    app.pay(&id, "10.5").await;
    let s = session(&app, &id).await;
    assert_eq!(s["status"], "Expired");
    assert_eq!(s["amount_received"], "0");
    assert_eq!(s["transactions"][0]["credited"], false);
    assert_eq!(s["transactions"][0]["not_credited_reason"], "late");
    assert_eq!(
        types(&events(&app, &id).await),
        ["session.expired", "session.late_payment"]
    );
}

#[tokio::test]
async fn listed_transactions_say_whether_they_were_credited_and_add_up() {
    let app = TestApp::spawn().await;
    let id = new_session(&app).await;
    app.pay(&id, "4").await;
    app.pay(&id, "6.5").await;
    app.pay(&id, "1").await; // after Paid: late
    let s = session(&app, &id).await;
    assert_eq!(s["status"], "Paid");
    let txs = s["transactions"].as_array().unwrap();
    let flags: Vec<(Value, Value)> = txs
        .iter()
        .map(|t| (t["credited"].clone(), t["not_credited_reason"].clone()))
        .collect();
    assert_eq!(
        flags,
        [
            (json!(true), Value::Null),
            (json!(true), Value::Null),
            (json!(false), json!("late")),
        ]
    );
    let credited: rust_decimal::Decimal = txs
        .iter()
        .filter(|t| t["credited"] == true)
        .map(|t| {
            t["amount"]
                .as_str()
                .unwrap()
                .parse::<rust_decimal::Decimal>()
                .unwrap()
        })
        .sum();
    assert_eq!(credited.to_string(), s["amount_received"].as_str().unwrap());
    assert_eq!(s["anomalies"], json!({"dust": 0, "unexpected": 0}));
}

#[tokio::test]
async fn a_payment_below_the_minimum_is_dust_counted_and_nothing_else() {
    let app = TestApp::spawn().await;
    let id = new_session(&app).await;
    app.pay(&id, "0.009").await;
    let s = session(&app, &id).await;
    assert_eq!(s["status"], "Pending");
    assert_eq!(s["transactions"], json!([]));
    assert_eq!(s["anomalies"], json!({"dust": 1, "unexpected": 0}));
    assert!(events(&app, &id).await.is_empty());
    app.pay(&id, "0.01").await;
    let s = session(&app, &id).await;
    assert_eq!(s["status"], "Underpaid", "0.01 is the default minimum");
}

#[tokio::test]
async fn late_payment_events_are_at_most_one_a_minute_and_the_next_covers_the_rest() {
    let app = TestApp::spawn().await;
    let id = new_session(&app).await;
    let (status, _) = app
        .request(
            Method::POST,
            &format!("/v1/checkout/sessions/{id}/expire"),
            Some(&app.merchant.test_key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for amount in ["1", "2", "3"] {
        app.pay(&id, amount).await;
    }
    let late: Vec<Value> = events(&app, &id)
        .await
        .into_iter()
        .filter(|e| e["event_type"] == "session.late_payment")
        .collect();
    assert_eq!(late.len(), 1, "one event in the first minute");
    assert_eq!(late[0]["data"]["transactions"].as_array().unwrap().len(), 1);
    assert!(checkout_server::workers::late_events_tick(&app.state)
        .await
        .unwrap()
        .is_empty());

    // The minute passes: the held-back event covers the two later transfers.
    sqlx::query("UPDATE checkout_sessions SET late_event_due_at = now() - interval '1 second' WHERE id = $1")
        .bind(&id)
        .execute(&app.db)
        .await
        .unwrap();
    assert_eq!(
        checkout_server::workers::late_events_tick(&app.state)
            .await
            .unwrap(),
        vec![id.clone()]
    );
    let late: Vec<Value> = events(&app, &id)
        .await
        .into_iter()
        .filter(|e| e["event_type"] == "session.late_payment")
        .collect();
    assert_eq!(late.len(), 2);
    let newest = late[0]["data"]["transactions"].as_array().unwrap();
    assert_eq!(newest.len(), 3);
    assert!(newest.iter().all(|t| t["not_credited_reason"] == "late"));
    assert!(checkout_server::workers::late_events_tick(&app.state)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn an_event_lists_at_most_100_transactions() {
    let app = TestApp::spawn().await;
    let id = new_session(&app).await;
    for _ in 0..101 {
        app.pay(&id, "0.01").await;
    }
    let s = session(&app, &id).await;
    let all = s["transactions"].as_array().unwrap();
    assert_eq!(all.len(), 101, "the API lists them all");
    assert!(s.get("transactions_truncated").is_none());
    let newest = &events(&app, &id).await[0];
    let listed = newest["data"]["transactions"].as_array().unwrap();
    assert_eq!(listed.len(), 100);
    assert_eq!(newest["data"]["transactions_truncated"], true);
    assert_eq!(
        listed[99]["tx_hash"], all[100]["tx_hash"],
        "the newest are kept"
    );
    assert_eq!(listed[0]["tx_hash"], all[1]["tx_hash"]);
    // Below the cap, no marker.
    let first = events(&app, &id).await.into_iter().last().unwrap();
    assert!(first["data"].get("transactions_truncated").is_none());
}
