//! What anyone on the internet can send: control characters in every string the spec
//! declares, duplicated keys and headers, stray query parameters, stalled and oversized
//! requests, and too many connections. Every answer is a 4xx in our error shape.

use crate::common::{seed_request, TestApp, TEST_CONFIG};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Checks an answer is a 4xx in our JSON error shape with a Request-Id.
async fn assert_shaped(res: reqwest::Response, what: &str) -> Value {
    let status = res.status();
    assert!(status.is_client_error(), "{what}: {status}");
    assert!(
        res.headers().contains_key("request-id"),
        "{what}: Request-Id"
    );
    let is_html = res
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("text/html"));
    if is_html {
        // The hosted page's own 404, in the page's language.
        assert_eq!(status, StatusCode::NOT_FOUND, "{what}");
        return Value::Null;
    }
    let body: Value = res
        .json()
        .await
        .unwrap_or_else(|e| panic!("{what}: not JSON: {e}"));
    for field in ["type", "code", "message"] {
        assert!(body["error"][field].is_string(), "{what}: {body}");
    }
    body
}

fn resolve<'a>(spec: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => r
            .trim_start_matches("#/")
            .split('/')
            .fold(spec, |node, part| &node[part]),
        None => v,
    }
}

/// A valid body for each operation that takes one; each string field is then spoiled in turn.
fn valid_body(operation: &str) -> Option<Value> {
    Some(match operation {
        "createCheckoutSession" => seed_request(),
        "createSubMerchant" => json!({"sub_merchant_code": "fresh", "display_name": "Shop",
                                      "logo_url": "https://shop.example/logo.png"}),
        "updateSubMerchant" => json!({"display_name": "Shop", "status": "active",
                                      "logo_url": "https://shop.example/logo.png"}),
        "simulatePayment" => json!({"amount": "1"}),
        "createWebhookEndpoint" => json!({"url": "https://93.184.215.14/hook",
                                          "events": ["session.completed"]}),
        _ => return None,
    })
}

#[tokio::test]
async fn control_characters_in_every_declared_string_get_a_4xx_in_our_shape() {
    let app = TestApp::spawn().await;
    let key = app.merchant.test_key.clone();
    let (_, session) = app.create_session(&key, seed_request()).await;
    let session_id = session["id"].as_str().unwrap().to_owned();
    app.pay(&session_id, "10.5").await;
    app.request(
        Method::POST,
        "/v1/sub-merchants",
        Some(&key),
        Some(json!({"sub_merchant_code": "shop", "display_name": "Shop"})),
    )
    .await;
    let (_, events) = app.get("/v1/events", &key).await;
    let event_id = events["data"][0]["id"].as_str().unwrap().to_owned();
    let (_, endpoint) = app
        .request(
            Method::POST,
            "/v1/webhook_endpoints",
            Some(&key),
            Some(json!({"url": "https://93.184.215.14/hook"})),
        )
        .await;
    let endpoint_id = endpoint["id"].as_str().unwrap().to_owned();
    let valid_path_value = |name: &str, path: &str| -> String {
        match name {
            "code" => "shop".into(),
            "id" if path.starts_with("/v1/events") => event_id.clone(),
            "id" if path.starts_with("/v1/webhook_endpoints") => endpoint_id.clone(),
            _ => session_id.clone(),
        }
    };

    let spec: Value =
        serde_yaml::from_str(include_str!("../../openapi.yaml")).expect("openapi.yaml parses");
    let sessions_before = app.count("checkout_sessions").await;
    let mut checked = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Ok(method) = Method::from_bytes(method.to_uppercase().as_bytes()) else {
                continue;
            };
            let operation = op["operationId"].as_str().unwrap_or_default();
            let params: Vec<&Value> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| resolve(&spec, p))
                .collect();
            let path_params: Vec<String> = params
                .iter()
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap().to_owned())
                .collect();
            let fill = |spoil: Option<(&str, &str)>| {
                let mut url = path.clone();
                for name in &path_params {
                    let value = match spoil {
                        Some((n, bad)) if n == name => bad.to_owned(),
                        _ => valid_path_value(name, path),
                    };
                    url = url.replace(&format!("{{{name}}}"), &value);
                }
                url
            };
            let body = valid_body(operation);
            for bad in ["a%00b", "a%01b"] {
                let raw = bad.replace("%00", "\u{0}").replace("%01", "\u{1}");
                let mut attempts: Vec<(String, String, Option<Value>)> = Vec::new();
                for name in &path_params {
                    attempts.push((
                        format!("path {name}"),
                        fill(Some((name, bad))),
                        body.clone(),
                    ));
                }
                for p in params.iter().filter(|p| p["in"] == "query") {
                    let name = p["name"].as_str().unwrap();
                    attempts.push((
                        format!("query {name}"),
                        format!("{}?{name}={bad}", fill(None)),
                        body.clone(),
                    ));
                }
                if let Some(valid) = &body {
                    for (field, value) in valid.as_object().unwrap() {
                        let mut spoiled = valid.clone();
                        spoiled[field] = match value {
                            Value::Array(_) => json!([raw.clone()]),
                            _ => json!(raw.clone()),
                        };
                        attempts.push((format!("body {field}"), fill(None), Some(spoiled)));
                    }
                }
                for (what, url, body) in attempts {
                    let what = format!("{method} {path} {what} {bad:?}");
                    let mut req = app
                        .client
                        .request(method.clone(), format!("{}{url}", app.base))
                        .bearer_auth(&key);
                    if let Some(body) = &body {
                        req = req.json(body);
                    }
                    let res = req.send().await.unwrap();
                    assert_shaped(res, &what).await;
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 40, "only {checked} inputs checked");
    assert_eq!(
        app.count("checkout_sessions").await,
        sessions_before,
        "nothing created"
    );
    let names: Vec<String> = sqlx::query_scalar("SELECT display_name FROM sub_merchants")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(names, ["Shop"], "nothing changed");
}

#[tokio::test]
async fn a_key_given_twice_is_refused_naming_it_and_nothing_is_created() {
    let app = TestApp::spawn().await;
    let body = r#"{"pricing_amount":"10.50","pricing_currency":"USDT","currency":"USDT","network":"TRON","network":"BSC","success_url":"https://a.example/","cancel_url":"https://a.example/"}"#;
    let res = app
        .client
        .post(format!("{}/v1/checkout/sessions", app.base))
        .bearer_auth(&app.merchant.test_key)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body = assert_shaped(res, "duplicate key").await;
    assert_eq!(body["error"]["code"], "parameter_duplicated");
    assert_eq!(body["error"]["param"], "network");
    // Inside a nested object too.
    let res = app
        .client
        .post(format!("{}/v1/webhook_endpoints", app.base))
        .bearer_auth(&app.merchant.test_key)
        .header("content-type", "application/json")
        .body(r#"{"url":"https://a.example/","url":"https://b.example/"}"#)
        .send()
        .await
        .unwrap();
    let body = assert_shaped(res, "duplicate url").await;
    assert_eq!(body["error"]["code"], "parameter_duplicated");
    assert_eq!(app.count("checkout_sessions").await, 0);
    assert_eq!(app.count("webhook_endpoints").await, 0);
}

#[tokio::test]
async fn idempotency_keys_given_twice_are_refused_and_null_equals_omitted() {
    let app = TestApp::spawn().await;
    let res = app
        .client
        .post(format!("{}/v1/checkout/sessions", app.base))
        .bearer_auth(&app.merchant.test_key)
        .header("idempotency-key", "one")
        .header("idempotency-key", "two")
        .json(&seed_request())
        .send()
        .await
        .unwrap();
    let body = assert_shaped(res, "two keys").await;
    assert_eq!(body["error"]["code"], "parameter_duplicated");
    assert_eq!(body["error"]["param"], "Idempotency-Key");
    assert_eq!(app.count("checkout_sessions").await, 0);

    let mut without = seed_request();
    without
        .as_object_mut()
        .unwrap()
        .remove("client_reference_id");
    let mut with_null = without.clone();
    with_null["client_reference_id"] = Value::Null;
    let send = |body: Value| {
        app.client
            .post(format!("{}/v1/checkout/sessions", app.base))
            .bearer_auth(&app.merchant.test_key)
            .header("idempotency-key", "null-vs-omitted")
            .json(&body)
            .send()
    };
    let first = send(without).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let again = send(with_null).await.unwrap();
    assert_eq!(again.status(), StatusCode::CREATED, "the same request");
    assert_eq!(again.headers()["idempotency-replayed"], "true");
    assert_eq!(app.count("checkout_sessions").await, 1);
}

#[tokio::test]
async fn patch_refuses_null_where_it_cannot_clear_and_clears_the_logo() {
    let app = TestApp::spawn().await;
    let key = &app.merchant.test_key;
    app.request(
        Method::POST,
        "/v1/sub-merchants",
        Some(key),
        Some(json!({"sub_merchant_code": "shop", "display_name": "Shop",
                    "logo_url": "https://shop.example/logo.png"})),
    )
    .await;
    for field in ["status", "display_name"] {
        let (status, body) = app
            .request(
                Method::PATCH,
                "/v1/sub-merchants/shop",
                Some(key),
                Some(json!({ field: null })),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"]["param"], field);
    }
    let (status, body) = app
        .request(
            Method::PATCH,
            "/v1/sub-merchants/shop",
            Some(key),
            Some(json!({"logo_url": null})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["logo_url"], Value::Null);
    assert_eq!(body["status"], "active");
}

#[tokio::test]
async fn unknown_query_parameters_are_refused_everywhere() {
    let app = TestApp::spawn().await;
    let key = &app.merchant.test_key;
    let (_, s) = app.create_session(key, seed_request()).await;
    let id = s["id"].as_str().unwrap();
    for path in [
        "/v1/webhook_endpoints?limit=5".to_owned(),
        format!("/v1/checkout/sessions/{id}?expand=all"),
        "/v1/checkout/sessions?colour=red".to_owned(),
        "/v1/events?x=1".to_owned(),
        "/v1/sub-merchants?x=1".to_owned(),
        format!("/v1/checkout/sessions/{id}/view?x=1"),
        "/healthz?x=1".to_owned(),
    ] {
        let res = app
            .client
            .get(format!("{}{path}", app.base))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{path}");
        let body = assert_shaped(res, &path).await;
        assert_eq!(body["error"]["code"], "parameter_invalid", "{path}");
    }
    let res = app
        .client
        .post(format!("{}/v1/checkout/sessions?debug=1", app.base))
        .bearer_auth(key)
        .json(&seed_request())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(app.count("checkout_sessions").await, 1);
}

const TIGHT: &str = r#"
[http]
header_read_timeout_ms = 500
request_timeout_ms = 700
max_connections_per_ip = 3
max_header_bytes = 8192
"#;

async fn tight_app() -> TestApp {
    TestApp::spawn_with(&format!("{TEST_CONFIG}{TIGHT}"), |_| {}).await
}

fn addr(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

/// Reads what the server sends until it closes the connection (or 3 s pass).
async fn read_all(stream: &mut tokio::net::TcpStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_request_head_that_never_finishes_is_dropped() {
    let app = tight_app().await;
    let mut slow = tokio::net::TcpStream::connect(addr(&app)).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buf))
        .await
        .expect("the server gives up on the head")
        .unwrap_or(0);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || answer.starts_with("HTTP/1.1 408"), "{answer}");
}

#[tokio::test]
async fn a_stalled_body_gets_a_shaped_408() {
    let app = tight_app().await;
    let mut s = tokio::net::TcpStream::connect(addr(&app)).await.unwrap();
    s.write_all(
        format!(
            "POST /v1/checkout/sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"pricing",
            app.merchant.test_key
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let answer = read_all(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let lower = answer.to_ascii_lowercase();
    assert!(lower.contains("request-id:"), "{answer}");
    assert!(answer.contains(r#""code":"request_timeout""#), "{answer}");
}

#[tokio::test]
async fn oversized_headers_get_a_shaped_431() {
    let app = tight_app().await;
    let res = app
        .client
        .get(format!("{}/healthz", app.base))
        .header("x-big", "a".repeat(10_000))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let body = assert_shaped(res, "431").await;
    assert_eq!(body["error"]["code"], "request_too_large");
}

/// A connection that sent one complete request, kept open (keep-alive) and so counted; the
/// start of its answer.
async fn kept_alive(app: &TestApp) -> (tokio::net::TcpStream, String) {
    let mut s = tokio::net::TcpStream::connect(addr(app)).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).await.unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    (s, answer)
}

/// The whole answer to a request on one more connection.
async fn one_more(app: &TestApp) -> String {
    let mut s = tokio::net::TcpStream::connect(addr(app)).await.unwrap();
    let _ = s
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    read_all(&mut s).await
}

#[tokio::test]
async fn connections_per_address_are_capped_and_the_refusal_is_shaped() {
    let app = tight_app().await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let (s, answer) = kept_alive(&app).await;
        assert!(answer.starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    let answer = one_more(&app).await;
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("request-id:"),
        "{answer}"
    );
    assert!(answer.contains(r#""code":"rate_limited""#), "{answer}");
    // A connection closes: its slot is free again.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let res = reqwest::Client::new()
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn shutdown_ends_open_live_streams_instead_of_waiting_for_them() {
    let app = TestApp::spawn().await;
    let (_, s) = app
        .create_session(&app.merchant.test_key, seed_request())
        .await;
    let id = s["id"].as_str().unwrap();
    // A second server on the same state, whose shutdown the test controls.
    let server = checkout_server::startup::Application::bind(
        app.state.clone(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let base = format!("http://{}", server.local_addr());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(server.run(shutdown.clone()));
    let mut stream = reqwest::Client::new()
        .get(format!("{base}/v1/checkout/sessions/{id}/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    assert!(stream.chunk().await.unwrap().is_some(), "the first view");
    let started = std::time::Instant::now();
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("the server stops while a stream is open")
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_trusted_proxy_is_exempt_from_the_per_address_cap_but_not_from_the_total() {
    let app = TestApp::spawn_with(
        &format!(
            "{TEST_CONFIG}\n[http]\nmax_connections_per_ip = 2\nmax_connections = 4\n\
             [rate_limits]\nclient_ip_header = \"X-Forwarded-For\"\ntrusted_proxies = [\"127.0.0.1/32\"]\n"
        ),
        |_| {},
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let (s, answer) = kept_alive(&app).await;
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "the proxy's connections are not capped per address"
        );
        held.push(s);
    }
    let answer = one_more(&app).await.to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 429"), "{answer}");
    assert!(answer.contains("ratelimit-remaining: 0"), "{answer}");
}
