//! Every bad request gets a 4xx in our error shape and writes nothing.

use crate::common::*;
use serde_json::{json, Value};

fn with(field: &str, value: Value) -> Value {
    let mut req = seed_request();
    req[field] = value;
    req
}

fn without(field: &str) -> Value {
    let mut req = seed_request();
    req.as_object_mut().unwrap().remove(field);
    req
}

/// (what, body, expected param)
fn bad_bodies() -> Vec<(&'static str, Value, &'static str)> {
    vec![
        (
            "amount as number",
            with("pricing_amount", json!(10.5)),
            "pricing_amount",
        ),
        (
            "amount as bool",
            with("pricing_amount", json!(true)),
            "pricing_amount",
        ),
        (
            "amount as array",
            with("pricing_amount", json!(["10"])),
            "pricing_amount",
        ),
        (
            "amount missing",
            without("pricing_amount"),
            "pricing_amount",
        ),
        (
            "amount null",
            with("pricing_amount", Value::Null),
            "pricing_amount",
        ),
        (
            "amount -1",
            with("pricing_amount", json!("-1")),
            "pricing_amount",
        ),
        (
            "amount 0",
            with("pricing_amount", json!("0")),
            "pricing_amount",
        ),
        (
            "amount 0.99",
            with("pricing_amount", json!("0.99")),
            "pricing_amount",
        ),
        (
            "amount 10000000.01",
            with("pricing_amount", json!("10000000.01")),
            "pricing_amount",
        ),
        (
            "amount 1.001",
            with("pricing_amount", json!("1.001")),
            "pricing_amount",
        ),
        (
            "amount 1e3",
            with("pricing_amount", json!("1e3")),
            "pricing_amount",
        ),
        (
            "amount leading space",
            with("pricing_amount", json!(" 10")),
            "pricing_amount",
        ),
        (
            "amount comma",
            with("pricing_amount", json!("10,5")),
            "pricing_amount",
        ),
        (
            "amount empty",
            with("pricing_amount", json!("")),
            "pricing_amount",
        ),
        (
            "amount huge",
            with("pricing_amount", json!("99999999999999999999999999999999")),
            "pricing_amount",
        ),
        (
            "amount NaN",
            with("pricing_amount", json!("NaN")),
            "pricing_amount",
        ),
        (
            "JPY with decimals",
            {
                let mut r = with("pricing_currency", json!("JPY"));
                r["pricing_amount"] = json!("1500.50");
                r
            },
            "pricing_amount",
        ),
        (
            "KRW with decimals",
            {
                let mut r = with("pricing_currency", json!("KRW"));
                r["pricing_amount"] = json!("15000.5");
                r
            },
            "pricing_amount",
        ),
        (
            "fiat converts below 1",
            {
                let mut r = with("pricing_currency", json!("CNY"));
                r["pricing_amount"] = json!("7.00");
                r
            },
            "pricing_amount",
        ),
        (
            "fiat without a rate",
            with("pricing_currency", json!("GBP")),
            "pricing_currency",
        ),
        (
            "unknown pricing currency",
            with("pricing_currency", json!("XYZ")),
            "pricing_currency",
        ),
        (
            "lowercase pricing currency",
            with("pricing_currency", json!("usd")),
            "pricing_currency",
        ),
        (
            "pricing currency missing",
            without("pricing_currency"),
            "pricing_currency",
        ),
        (
            "pricing USDC for USDT",
            with("pricing_currency", json!("USDC")),
            "pricing_currency",
        ),
        (
            "unknown currency",
            with("currency", json!("DAI")),
            "currency",
        ),
        ("currency as number", with("currency", json!(1)), "currency"),
        ("currency missing", without("currency"), "currency"),
        (
            "USDC on TRON",
            {
                let mut r = with("currency", json!("USDC"));
                r["pricing_currency"] = json!("USD");
                r
            },
            "currency",
        ),
        ("unknown network", with("network", json!("DOGE")), "network"),
        ("network missing", without("network"), "network"),
        (
            "network not enabled",
            with("network", json!("POLYGON")),
            "network",
        ),
        (
            "network SOLANA not enabled",
            with("network", json!("solana")),
            "network",
        ),
        (
            "javascript success_url",
            with("success_url", json!("javascript:alert(1)")),
            "success_url",
        ),
        (
            "data cancel_url",
            with("cancel_url", json!("data:text/html,hi")),
            "cancel_url",
        ),
        (
            "relative success_url",
            with("success_url", json!("/thanks")),
            "success_url",
        ),
        (
            "ftp cancel_url",
            with("cancel_url", json!("ftp://example.com/x")),
            "cancel_url",
        ),
        (
            "success_url too long",
            with(
                "success_url",
                json!(format!("https://example.com/{}", "a".repeat(2040))),
            ),
            "success_url",
        ),
        ("success_url missing", without("success_url"), "success_url"),
        (
            "cancel_url as object",
            with("cancel_url", json!({"url": "https://example.com"})),
            "cancel_url",
        ),
        (
            "reference id 201 chars",
            with("client_reference_id", json!("r".repeat(201))),
            "client_reference_id",
        ),
        (
            "reference id as number",
            with("client_reference_id", json!(42)),
            "client_reference_id",
        ),
        (
            "reference id with newline",
            with("client_reference_id", json!("a\nb")),
            "client_reference_id",
        ),
        (
            "unknown field",
            with("metadata_typo", json!("x")),
            "metadata_typo",
        ),
    ]
}

#[tokio::test]
async fn bad_bodies_are_refused_and_write_nothing() {
    let app = TestApp::spawn().await;
    let cases = bad_bodies();
    assert!(cases.len() >= 40);
    for (what, body, param) in cases {
        let (status, resp) = app.create_session(&app.merchant.test_key, body).await;
        let e = assert_error(status, &resp, 400, "parameter_invalid");
        assert_eq!(e["type"], "invalid_request_error", "{what}");
        assert_eq!(e["param"], param, "{what}: {e}");
        assert_eq!(
            app.count("checkout_sessions").await,
            0,
            "{what} wrote a session"
        );
        assert_eq!(
            app.count("address_allocators").await,
            0,
            "{what} allocated an address"
        );
    }
    // The boundaries themselves are accepted.
    for ok in ["1", "1.00", "10000000.00"] {
        let (status, body) = app
            .create_session(&app.merchant.test_key, with("pricing_amount", json!(ok)))
            .await;
        assert_eq!(status, 201, "{ok}: {body}");
    }
}

/// (what, content type, body, status, code)
type RawCase = (
    &'static str,
    Option<&'static str>,
    Vec<u8>,
    u16,
    &'static str,
);

async fn raw_post(
    app: &TestApp,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (reqwest::StatusCode, Value) {
    let mut req = app
        .client
        .post(format!("{}/v1/checkout/sessions", app.base))
        .bearer_auth(&app.merchant.test_key)
        .body(body);
    if let Some(ct) = content_type {
        req = req.header("Content-Type", ct);
    }
    let res = req.send().await.unwrap();
    assert_eq!(
        res.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json"),
        "errors are JSON"
    );
    read(res).await
}

#[tokio::test]
async fn malformed_bodies_are_refused_and_write_nothing() {
    let app = TestApp::spawn().await;
    let json_ct = Some("application/json");
    let cases: Vec<RawCase> = vec![
        ("empty body", json_ct, vec![], 400, "parameter_invalid"),
        (
            "whitespace body",
            json_ct,
            b"  \n".to_vec(),
            400,
            "parameter_invalid",
        ),
        (
            "not JSON",
            json_ct,
            b"pricing_amount=10".to_vec(),
            400,
            "parameter_invalid",
        ),
        (
            "truncated JSON",
            json_ct,
            b"{\"pricing_amount\": \"10".to_vec(),
            400,
            "parameter_invalid",
        ),
        (
            "JSON array",
            json_ct,
            b"[1, 2]".to_vec(),
            400,
            "parameter_invalid",
        ),
        (
            "JSON string",
            json_ct,
            b"\"hello\"".to_vec(),
            400,
            "parameter_invalid",
        ),
        (
            "JSON null",
            json_ct,
            b"null".to_vec(),
            400,
            "parameter_invalid",
        ),
        (
            "invalid UTF-8",
            json_ct,
            vec![b'{', 0xff, 0xfe, b'}'],
            400,
            "parameter_invalid",
        ),
        (
            "no content type",
            None,
            serde_json::to_vec(&seed_request()).unwrap(),
            400,
            "parameter_invalid",
        ),
        (
            "wrong content type",
            Some("text/plain"),
            serde_json::to_vec(&seed_request()).unwrap(),
            400,
            "parameter_invalid",
        ),
        (
            "form content type",
            Some("application/x-www-form-urlencoded"),
            b"a=b".to_vec(),
            400,
            "parameter_invalid",
        ),
        (
            "over 64 KiB",
            json_ct,
            {
                let mut req = seed_request();
                req["client_reference_id"] = json!("x".repeat(70 * 1024));
                serde_json::to_vec(&req).unwrap()
            },
            413,
            "request_too_large",
        ),
    ];
    for (what, ct, body, want_status, want_code) in cases {
        let (status, resp) = raw_post(&app, ct, body).await;
        assert_error(status, &resp, want_status, want_code);
        assert_eq!(
            app.count("checkout_sessions").await,
            0,
            "{what} wrote a session"
        );
    }
    // charset parameter on the content type is fine.
    let (status, body) = raw_post(
        &app,
        Some("application/json; charset=utf-8"),
        serde_json::to_vec(&seed_request()).unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn bad_headers_are_refused() {
    let app = TestApp::spawn().await;
    for code in ["", "_leading", "has space", &"x".repeat(101), "emoji✓"] {
        let (status, body, _) = app
            .create_session_with(
                &app.merchant.test_key,
                &seed_request(),
                &[("X-Sub-Merchant-Code", code)],
            )
            .await;
        let e = assert_error(status, &body, 400, "parameter_invalid");
        assert_eq!(e["param"], "X-Sub-Merchant-Code");
    }
    assert_eq!(app.count("checkout_sessions").await, 0);
}

#[tokio::test]
async fn bad_sub_merchant_bodies_write_nothing() {
    let app = TestApp::spawn().await;
    let key = &app.merchant.test_key;
    for (body, param) in [
        (json!({"display_name": "x"}), "sub_merchant_code"),
        (json!({"sub_merchant_code": "ok"}), "display_name"),
        (
            json!({"sub_merchant_code": "_x", "display_name": "x"}),
            "sub_merchant_code",
        ),
        (
            json!({"sub_merchant_code": "a b", "display_name": "x"}),
            "sub_merchant_code",
        ),
        (
            json!({"sub_merchant_code": "x".repeat(101), "display_name": "x"}),
            "sub_merchant_code",
        ),
        (
            json!({"sub_merchant_code": "ok", "display_name": ""}),
            "display_name",
        ),
        (
            json!({"sub_merchant_code": "ok", "display_name": "x", "logo_url": "javascript:x"}),
            "logo_url",
        ),
        (
            json!({"sub_merchant_code": 5, "display_name": "x"}),
            "sub_merchant_code",
        ),
    ] {
        let (status, resp) = app
            .request(
                reqwest::Method::POST,
                "/v1/sub-merchants",
                Some(key),
                Some(body),
            )
            .await;
        let e = assert_error(status, &resp, 400, "parameter_invalid");
        assert_eq!(e["param"], param);
    }
    assert_eq!(app.count("sub_merchants").await, 0);
}
