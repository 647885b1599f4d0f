//! The hosted payment page: every state in both languages, escaping, the public view, the
//! live stream, headers, the 404 page.

use crate::common::{seed_request, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

async fn page(
    app: &TestApp,
    path: &str,
    lang: Option<&str>,
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let mut req = app.client.get(format!("{}{path}", app.base));
    if let Some(lang) = lang {
        req = req.header("accept-language", lang);
    }
    let res = req.send().await.unwrap();
    let (status, headers) = (res.status(), res.headers().clone());
    (status, headers, res.text().await.unwrap())
}

async fn session(app: &TestApp, body: Value) -> Value {
    let (status, s) = app.create_session(&app.merchant.test_key, body).await;
    assert_eq!(status, StatusCode::CREATED, "{s}");
    s
}

/// The one state panel that is not hidden.
fn visible_state(html: &str) -> String {
    let shown: Vec<&str> = html
        .split("data-state=\"")
        .skip(1)
        .filter(|chunk| {
            let tag_end = chunk.find('>').unwrap();
            !chunk[..tag_end].contains(" hidden")
        })
        .map(|chunk| &chunk[..chunk.find('"').unwrap()])
        .collect();
    assert_eq!(shown.len(), 1, "exactly one state is shown: {shown:?}");
    shown[0].to_owned()
}

fn pay_section_open(html: &str) -> bool {
    let start = html.find("data-open").unwrap();
    !html[start..start + 40].contains("hidden")
}

#[tokio::test]
async fn the_page_shows_every_payment_fact_and_needs_nothing_external() {
    let app = TestApp::spawn().await;
    let s = session(&app, seed_request()).await;
    let id = s["id"].as_str().unwrap();
    assert_eq!(s["url"], format!("https://checkout.example.com/{id}"));
    let (status, headers, html) = page(&app, &format!("/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
    assert!(csp.contains("frame-ancestors 'none'"));
    assert_eq!(headers["x-frame-options"], "DENY");
    assert!(html.contains("Acme Store"));
    assert!(html.contains(">10.5</span> USDT"), "the exact amount");
    assert!(html.contains("USDT · TRON (TRC20)"));
    assert!(html.contains(&format!(">{}</code>", s["pay_address"].as_str().unwrap())));
    assert!(html.contains("<svg viewBox="), "QR as inline SVG");
    assert!(html.contains("role=\"img\" aria-label=\"QR code of the payment: T"));
    assert!(html.contains("Send only this token on this network"));
    assert!(
        html.contains("https://example.com/cancel"),
        "cancel link while unpaid"
    );
    assert!(html.contains("Test mode"));
    assert_eq!(visible_state(&html), "Pending");
    assert!(pay_section_open(&html));
    // Nothing loaded from elsewhere: even the merchant's logo comes through this server.
    assert!(html.contains(&format!("src=\"/v1/checkout/sessions/{id}/logo\"")));
    assert!(!html.contains("example.com/logo.png"));
    assert!(!csp.contains("https:"), "{csp}");
    for attr in ["src=\"http", "href=\"//", "src=\"//", "@import", "fonts."] {
        assert!(!html.contains(attr), "external reference {attr}");
    }
    let (_, _, css) = page(&app, "/assets/checkout.css", None).await;
    let (_, _, js) = page(&app, "/assets/checkout.js", None).await;
    assert!(!css.contains("url(") && !js.contains("http"));
    let total = html.len() + css.len() + js.len();
    assert!(total < 100 * 1024, "page and assets are {total} bytes");
}

#[tokio::test]
async fn evm_pages_carry_the_amount_in_an_eip681_link() {
    let app = TestApp::spawn_with(
        &format!("{}\n[networks.BSC.test.tokens.USDT]\ncontract = \"0x55d398326f99059fF775485246999027B3197955\"\ndecimals = 18\n", crate::common::TEST_CONFIG),
        |c| {
            let bsc = c.network_mut(
                checkout_server::domain::network::Network::Bsc,
                checkout_server::domain::api_key::Mode::Test,
            );
            // Read from a chain (BSC testnet), not simulated.
            bsc.chain_id = Some(97);
            bsc.simulated = false;
            bsc.rpc_urls = vec!["http://127.0.0.1:9".into()];
        },
    )
    .await;
    let mut req = seed_request();
    req["network"] = json!("BSC");
    let s = session(&app, req).await;
    let id = s["id"].as_str().unwrap();
    let (_, _, html) = page(&app, &format!("/{id}"), None).await;
    let expected = format!(
        "ethereum:0x55d398326f99059fF775485246999027B3197955@97/transfer?address={}&#38;uint256=10500000000000000000",
        s["pay_address"].as_str().unwrap()
    );
    assert!(
        html.contains(&expected),
        "EIP-681 link with 18-decimal base units"
    );
    assert!(html.contains("USDT · BNB Smart Chain (BEP20)"));
    assert!(html.contains("The QR code and wallet link include the amount."));

    // A simulated network has no chain: its link must never carry an amount.
    let app = TestApp::spawn().await;
    let mut req = seed_request();
    req["network"] = json!("BSC");
    let s = session(&app, req).await;
    let (_, _, html) = page(&app, &format!("/{}", s["id"].as_str().unwrap()), None).await;
    assert!(!html.contains("ethereum:"));
    assert!(html.contains("enter the amount in your wallet"));
}

#[tokio::test]
async fn every_state_renders_in_english_and_chinese() {
    let app = TestApp::spawn().await;
    let pending = session(&app, seed_request()).await;
    let confirming = session(&app, seed_request()).await;
    sqlx::query(
        "INSERT INTO transactions (session_id, network, livemode, tx_hash, log_index, block_number,
                block_hash, to_address, amount)
         VALUES ($1, 'TRON', false, 'ab', 0, 10, '0x01', 'T', 10.5)",
    )
    .bind(confirming["id"].as_str().unwrap())
    .execute(&app.db)
    .await
    .unwrap();
    let under = session(&app, seed_request()).await;
    app.pay(under["id"].as_str().unwrap(), "4").await;
    let paid = session(&app, seed_request()).await;
    app.pay(paid["id"].as_str().unwrap(), "10.5").await;
    let over = session(&app, seed_request()).await;
    app.pay(over["id"].as_str().unwrap(), "12").await;
    let expired = session(&app, seed_request()).await;
    app.request(
        Method::POST,
        &format!(
            "/v1/checkout/sessions/{}/expire",
            expired["id"].as_str().unwrap()
        ),
        Some(&app.merchant.test_key),
        None,
    )
    .await;
    let blocked = session(&app, seed_request()).await;
    sqlx::query("UPDATE checkout_sessions SET status = 'Blocked' WHERE id = $1")
        .bind(blocked["id"].as_str().unwrap())
        .execute(&app.db)
        .await
        .unwrap();
    // Past expires_at while still open (the chain is being read up to that moment): the
    // address is gone, the customer is told not to pay; a payment seen in time keeps
    // confirming, without the address either.
    let time_up = session(&app, seed_request()).await;
    let confirming_late = session(&app, seed_request()).await;
    sqlx::query(
        "INSERT INTO transactions (session_id, network, livemode, tx_hash, log_index, block_number,
                block_hash, to_address, amount)
         VALUES ($1, 'TRON', false, 'cd', 0, 10, '0x01', 'T', 10.5)",
    )
    .bind(confirming_late["id"].as_str().unwrap())
    .execute(&app.db)
    .await
    .unwrap();
    for s in [&time_up, &confirming_late] {
        sqlx::query(
            "UPDATE checkout_sessions SET expires_at = now() - interval '1 second',
                    created_at = now() - interval '31 minutes' WHERE id = $1",
        )
        .bind(s["id"].as_str().unwrap())
        .execute(&app.db)
        .await
        .unwrap();
    }

    let cases = [
        (
            &pending,
            "Pending",
            true,
            "Waiting for your payment",
            "等待付款",
        ),
        (
            &confirming,
            "Confirming",
            true,
            "Payment seen, confirming",
            "已收到付款，确认中",
        ),
        (&under, "Underpaid", true, "Still missing", "仍需支付"),
        (&paid, "Paid", false, "Paid. Thank you!", "付款成功，谢谢！"),
        (
            &over,
            "Overpaid",
            false,
            "You sent more than the amount due",
            "超出应付金额",
        ),
        (
            &expired,
            "Expired",
            false,
            "This payment request has expired",
            "此付款请求已过期",
        ),
        (
            &blocked,
            "Blocked",
            false,
            "could not be accepted",
            "无法被接受",
        ),
        (
            &time_up,
            "TimeUp",
            false,
            "Checking the chain for payments made in time",
            "正在链上核对过期前完成的付款",
        ),
        (
            &confirming_late,
            "Confirming",
            false,
            "Payment seen, confirming",
            "已收到付款，确认中",
        ),
    ];
    for (s, state, open, en, zh) in cases {
        let id = s["id"].as_str().unwrap();
        let (_, _, html) = page(&app, &format!("/{id}"), Some("en-US,en;q=0.9")).await;
        assert_eq!(visible_state(&html), state);
        assert_eq!(
            pay_section_open(&html),
            open,
            "{state}: pay details shown only while open"
        );
        assert!(html.contains(en), "{state} in English");
        assert!(html.contains("lang=\"en\""));
        let (_, _, html) = page(&app, &format!("/{id}"), Some("zh-CN,zh;q=0.9")).await;
        assert!(html.contains(zh), "{state} in Chinese");
        assert!(html.contains("lang=\"zh-CN\""));
        let (_, _, html) = page(&app, &format!("/{id}?lang=en"), Some("zh-CN")).await;
        assert!(html.contains(en), "?lang= wins");
    }
    // Underpaid shows what is missing.
    let (_, _, html) = page(&app, &format!("/{}", under["id"].as_str().unwrap()), None).await;
    assert!(html.contains(">6.5</span> USDT"));
    // The time-up page says not to pay, and the view tells the script.
    let id = time_up["id"].as_str().unwrap();
    let (_, _, html) = page(&app, &format!("/{id}"), None).await;
    assert!(html.contains("Do not send funds to this address"));
    let (_, view) = app
        .get(&format!("/v1/checkout/sessions/{id}/view"), "")
        .await;
    assert_eq!(
        (&view["status"], &view["time_up"]),
        (&json!("Pending"), &json!(true))
    );
    let (_, view) = app
        .get(
            &format!(
                "/v1/checkout/sessions/{}/view",
                pending["id"].as_str().unwrap()
            ),
            "",
        )
        .await;
    assert_eq!(view["time_up"], false);
}

#[tokio::test]
async fn hostile_names_urls_and_references_are_escaped() {
    let app = TestApp::spawn().await;
    let (status, body) = app
        .request(
            Method::POST,
            "/v1/sub-merchants",
            Some(&app.merchant.test_key),
            Some(json!({
                "sub_merchant_code": "evil",
                "display_name": "<script>alert(1)</script>\"'&",
                "logo_url": "https://x.example/a.png?\"><script>alert(2)</script>",
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let mut req = seed_request();
    req["client_reference_id"] = json!("</footer><img src=x onerror=alert(3)>");
    let (status, s, _) = app
        .create_session_with(
            &app.merchant.test_key,
            &req,
            &[("X-Sub-Merchant-Code", "evil")],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{s}");
    let (_, _, html) = page(&app, &format!("/{}", s["id"].as_str().unwrap()), None).await;
    assert!(!html.contains("<script>alert"), "{html}");
    assert!(!html.contains("<img src=x"));
    assert!(html.contains("&#60;script&#62;alert(1)&#60;/script&#62;&#34;&#39;&#38;"));
    assert!(html.contains("&#60;/footer&#62;&#60;img src=x onerror=alert(3)&#62;"));
    assert!(
        !html.contains("x.example"),
        "the logo URL never reaches the page"
    );
    let scripts = html.matches("<script").count();
    assert_eq!(scripts, 1, "only our own script tag");
}

#[tokio::test]
async fn the_public_view_holds_only_what_the_page_needs() {
    let app = TestApp::spawn().await;
    let s = session(&app, seed_request()).await;
    let id = s["id"].as_str().unwrap();
    let res = app
        .client
        .get(format!("{}/v1/checkout/sessions/{id}/view", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK, "no key needed");
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["status"], "Pending");
    assert_eq!(v["amount_due"], "10.5");
    assert_eq!(v["network_label"], "TRON (TRC20)");
    assert!(v["server_time"].as_str().unwrap().ends_with('Z'));
    // Names are checked as keys: a random id or address may spell "fee" in hex.
    fn keys(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => map.iter().for_each(|(k, v)| {
                out.push(k.clone());
                keys(v, out);
            }),
            Value::Array(items) => items.iter().for_each(|v| keys(v, out)),
            _ => {}
        }
    }
    let mut names = Vec::new();
    keys(&v, &mut names);
    for secret in ["merchant_id", "fee", "net_amount", "xpub", "exchange_rate"] {
        assert!(
            !names.iter().any(|k| k.contains(secret)),
            "{secret} must not be public: {names:?}"
        );
    }
    let merchant_id: uuid::Uuid =
        sqlx::query_scalar("SELECT merchant_id FROM checkout_sessions WHERE id = $1")
            .bind(id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    let text = v.to_string();
    for secret in ["xpub6", "tpub", "sk_test", &merchant_id.to_string()] {
        assert!(!text.contains(secret), "{secret} must not be public");
    }
    let (status, _) = app
        .get(
            "/v1/checkout/sessions/cs_00000000000000000000000000000000/view",
            "",
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, html) = page(&app, "/cs_00000000000000000000000000000000", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(html.contains("Payment not found"));
    let (status, _, html) = page(&app, "/not-a-session", Some("zh-CN")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(html.contains("未找到付款"));
}

#[tokio::test]
async fn the_live_stream_sends_the_change_to_paid() {
    let app = TestApp::spawn().await;
    let s = session(&app, seed_request()).await;
    let id = s["id"].as_str().unwrap().to_owned();
    let mut res = app
        .client
        .get(format!("{}/v1/checkout/sessions/{id}/events", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut seen = String::new();
    let first = tokio::time::timeout(Duration::from_secs(5), res.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    seen.push_str(&String::from_utf8_lossy(&first));
    assert!(
        seen.contains("event: session") && seen.contains("\"status\":\"Pending\""),
        "{seen}"
    );
    app.pay(&id, "10.5").await;
    assert!(
        stream_says(&mut res, "Paid", Duration::from_secs(10)).await,
        "Paid within 10 s"
    );
}

#[tokio::test]
async fn embedding_is_allowed_only_for_configured_origins() {
    let app = TestApp::spawn_with(
        &format!(
            "{}\n[hosted]\nframe_ancestors = [\"https://shop.example\"]\n",
            crate::common::TEST_CONFIG
        ),
        |_| {},
    )
    .await;
    let s = session(&app, seed_request()).await;
    let (_, headers, html) = page(
        &app,
        &format!("/{}?embed=1", s["id"].as_str().unwrap()),
        None,
    )
    .await;
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.ends_with("frame-ancestors https://shop.example"),
        "{csp}"
    );
    assert!(headers.get("x-frame-options").is_none());
    assert!(html.contains("class=\"embed\""));
    assert!(!html.contains("<header"), "no page chrome when embedded");
    assert!(
        html.contains("href=\"https://example.com/cancel\" target=\"_top\""),
        "links leave the frame"
    );
}

/// Serves a PNG and an SVG on loopback.
async fn image_server() -> String {
    let png: &'static [u8] = b"\x89PNG\r\n\x1a\nfake-but-typed";
    let app = axum::Router::new()
        .route(
            "/logo.png",
            axum::routing::get(move || async move { ([("content-type", "image/png")], png) }),
        )
        .route(
            "/logo.svg",
            axum::routing::get(|| async {
                (
                    [("content-type", "image/svg+xml")],
                    "<svg onload=alert(1)></svg>",
                )
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

#[tokio::test]
async fn logos_are_served_from_this_origin_raster_only_and_public_only_unless_allowed() {
    // The operator allows private targets (a local setup): the loopback image server is used.
    let open = TestApp::spawn_with(
        &format!(
            "{}\n[webhooks]\nallow_private_targets = true\n",
            crate::common::TEST_CONFIG
        ),
        |_| {},
    )
    .await;
    // The default: nothing internal is ever fetched, in test mode or live.
    let guarded = TestApp::spawn().await;
    let images = image_server().await;
    let mut ids = Vec::new();
    for (app, code, file, live) in [
        (&open, "png", "logo.png", false),
        (&open, "svg", "logo.svg", false),
        (&guarded, "testpng", "logo.png", false),
        (&guarded, "livepng", "logo.png", true),
    ] {
        let key = if live {
            app.merchant.live_key.clone()
        } else {
            app.merchant.test_key.clone()
        };
        let (status, body) = app
            .request(
                Method::POST,
                "/v1/sub-merchants",
                Some(&key),
                Some(json!({ "sub_merchant_code": code, "display_name": "Shop",
                             "logo_url": format!("{images}/{file}") })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let mut req = seed_request();
        if live {
            req["network"] = json!("BSC");
        }
        let (status, s, _) = app
            .create_session_with(&key, &req, &[("X-Sub-Merchant-Code", code)])
            .await;
        assert_eq!(status, StatusCode::CREATED, "{s}");
        ids.push((app.base.clone(), s["id"].as_str().unwrap().to_owned()));
    }
    let get = |(base, id): &(String, String)| {
        let url = format!("{base}/v1/checkout/sessions/{id}/logo");
        let client = open.client.clone();
        async move { client.get(url).send().await.unwrap() }
    };
    let res = get(&ids[0]).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "image/png");
    assert!(res.bytes().await.unwrap().starts_with(b"\x89PNG"));
    assert_eq!(
        get(&ids[1]).await.status(),
        StatusCode::NOT_FOUND,
        "SVG is refused"
    );
    for (i, mode) in [(2, "test"), (3, "live")] {
        let res = get(&ids[i]).await;
        assert_eq!(
            res.status(),
            StatusCode::NOT_FOUND,
            "a {mode} logo on a loopback address is never fetched"
        );
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "resource_missing");
    }
}

/// Reads a live-status stream until it says `status`; false if it does not within `within`.
async fn stream_says(res: &mut reqwest::Response, status: &str, within: Duration) -> bool {
    let want = format!("\"status\":\"{status}\"");
    let deadline = tokio::time::Instant::now() + within;
    let mut seen = String::new();
    while !seen.contains(&want) {
        match tokio::time::timeout_at(deadline, res.chunk()).await {
            Ok(Ok(Some(chunk))) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            _ => return false,
        }
    }
    true
}

async fn open_stream(app: &TestApp, id: &str) -> reqwest::Response {
    let mut res = app
        .client
        .get(format!("{}/v1/checkout/sessions/{id}/events", app.base))
        .send()
        .await
        .unwrap();
    assert!(stream_says(&mut res, "Pending", Duration::from_secs(5)).await);
    res
}

/// Connections to the test database (other than this query's) that ran a statement within
/// `window`; the listening connection does not count.
async fn connections_busy_within(app: &TestApp, window: Duration) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
          WHERE datname = current_database() AND pid <> pg_backend_pid()
            AND query NOT LIKE 'LISTEN%' AND state_change > now() - make_interval(secs => $1)",
    )
    .bind(window.as_secs_f64())
    .fetch_one(&app.db)
    .await
    .unwrap()
}

#[tokio::test]
async fn idle_live_streams_run_no_queries_and_changes_reach_them_by_notification() {
    let app = TestApp::spawn().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !app.state.live.listening() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the listener connects"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut ids = Vec::new();
    let mut streams = Vec::new();
    for _ in 0..5 {
        let id = session(&app, seed_request()).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        for _ in 0..10 {
            streams.push((id.clone(), open_stream(&app, &id).await));
        }
        ids.push(id);
    }

    // Idle: no stream queries (polling, each would read its session every second).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let busy = connections_busy_within(&app, Duration::from_millis(2500)).await;
    assert_eq!(
        busy, 0,
        "connections ran statements while 50 streams were idle"
    );

    // A change made by any process (here bare SQL, as another replica's watcher would) is
    // announced by Postgres and reaches this process's streams at once.
    sqlx::query("UPDATE checkout_sessions SET status = 'Expired' WHERE id = $1")
        .bind(&ids[0])
        .execute(&app.db)
        .await
        .unwrap();
    for (id, res) in streams.iter_mut().filter(|(id, _)| *id == ids[0]) {
        assert!(
            stream_says(res, "Expired", Duration::from_secs(1)).await,
            "{id}: the change arrives within a second"
        );
    }

    // The listening connection is cut: streams still see changes (the listener reconnects
    // and wakes them; meanwhile they poll).
    let cut: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
          WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(cut, 1, "one listening connection per process");
    app.pay(&ids[1], "10.5").await;
    for (id, res) in streams.iter_mut().filter(|(id, _)| *id == ids[1]) {
        assert!(
            stream_says(res, "Paid", Duration::from_secs(5)).await,
            "{id}: Paid after the listener was cut"
        );
    }
}

#[tokio::test]
async fn a_new_chain_head_updates_the_confirmations_of_a_waiting_transfer() {
    let app = TestApp::spawn().await;
    let id = session(&app, seed_request()).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A transfer seen in block 100, as a watcher (in any process) records it.
    sqlx::query(
        "INSERT INTO chain_cursors (network, livemode, head_number) VALUES ('TRON', false, 100)",
    )
    .execute(&app.db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO transactions (session_id, network, livemode, tx_hash, log_index,
                block_number, block_hash, to_address, amount)
         SELECT id, 'TRON', false, 'aa', 0, 100, '0x01', pay_address, 10.5
           FROM checkout_sessions WHERE id = $1",
    )
    .bind(&id)
    .execute(&app.db)
    .await
    .unwrap();
    let mut res = app
        .client
        .get(format!("{}/v1/checkout/sessions/{id}/events", app.base))
        .send()
        .await
        .unwrap();
    let confirmations = |n: u64| format!("\"confirmations\":{n}");
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while !seen.contains(&confirmations(1)) {
        let chunk = tokio::time::timeout_at(deadline, res.chunk()).await;
        seen.push_str(&String::from_utf8_lossy(&chunk.unwrap().unwrap().unwrap()));
    }
    sqlx::query("UPDATE chain_cursors SET head_number = 104 WHERE network = 'TRON'")
        .execute(&app.db)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while !seen.contains(&confirmations(5)) {
        let chunk = tokio::time::timeout_at(deadline, res.chunk())
            .await
            .expect("the new head's count within a second");
        seen.push_str(&String::from_utf8_lossy(&chunk.unwrap().unwrap()));
    }
}
