//! The hosted page in real headless Chromium, driven over the W3C WebDriver protocol
//! (chromedriver). Screenshots of each state at phone and desktop sizes go to
//! `target/screenshots/`.

use crate::common::{seed_request, TestApp};
use base64::Engine;
use reqwest::Method;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

struct Driver {
    child: Child,
    url: String,
    http: reqwest::Client,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Browser<'a> {
    driver: &'a Driver,
    session: String,
}

impl Driver {
    async fn start() -> Option<Self> {
        if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
            // CI installs both and sets REQUIRE_BROWSER: there a missing browser is a failure.
            assert!(
                std::env::var_os("REQUIRE_BROWSER").is_none(),
                "REQUIRE_BROWSER is set but chromium or chromedriver is missing"
            );
            eprintln!("skipped: needs chromium and chromium-driver (installed by .ci/run)");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        for _ in 0..100 {
            if driver
                .http
                .get(format!("{}/status", driver.url))
                .send()
                .await
                .is_ok()
            {
                return Some(driver);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not answer");
    }

    async fn browser(&self, width: u32, height: u32) -> Browser<'_> {
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", format!("--window-size={width},{height}")],
            }
        }}});
        let v: Value = self
            .http
            .post(format!("{}/session", self.url))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
            .to_owned();
        Browser {
            driver: self,
            session,
        }
    }
}

impl Browser<'_> {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.driver.url, self.session);
        let mut req = self.driver.http.request(method, url);
        req = req.json(&body.unwrap_or(json!({})));
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        if v["value"].get("error").is_some() {
            panic!("WebDriver {path}: {v}");
        }
        v["value"].clone()
    }

    async fn go(&self, url: &str) {
        self.call(Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    async fn script(&self, source: &str) -> Value {
        self.call(
            Method::POST,
            "/execute/sync",
            Some(json!({ "script": source, "args": [] })),
        )
        .await
    }

    async fn current_url(&self) -> String {
        self.call(Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn screenshot(&self, name: &str) {
        let png = self.call(Method::GET, "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), bytes).unwrap();
    }

    /// Waits until `condition` (a JS expression) is true.
    async fn wait_for(&self, condition: &str, what: &str) {
        for _ in 0..150 {
            if self.script(&format!("return !!({condition});")).await == json!(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("timed out waiting for {what}");
    }

    async fn close(self) {
        let url = format!("{}/session/{}", self.driver.url, self.session);
        let _ = self.driver.http.delete(url).send().await;
    }
}

/// A shop's success page, so the redirect lands somewhere real.
async fn shop() -> String {
    let app = axum::Router::new().route(
        "/success",
        axum::routing::get(|| async { axum::response::Html("<h1>Thanks from the shop</h1>") }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

#[tokio::test]
async fn a_customer_pays_and_the_page_turns_paid_without_reload_then_returns_to_the_shop() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    let app = TestApp::spawn().await;
    let shop = shop().await;
    let mut req = seed_request();
    req["success_url"] = json!(format!("{shop}/success"));
    let (_, s) = app.create_session(&app.merchant.test_key, req).await;
    let id = s["id"].as_str().unwrap().to_owned();

    let b = driver.browser(390, 844).await;
    b.go(&format!("{}/{id}", app.base)).await;
    let address = b
        .script("return document.getElementById('address').textContent;")
        .await;
    assert_eq!(address, s["pay_address"]);
    let amount = b
        .script("return document.getElementById('amount').textContent.trim();")
        .await;
    assert_eq!(amount, json!("10.5 USDT"));
    let countdown = b
        .script("return document.getElementById('countdown').textContent;")
        .await;
    assert!(
        countdown.as_str().unwrap().starts_with("29:") || countdown == json!("30:00"),
        "{countdown}"
    );
    b.screenshot("pending-390x844").await;
    // A marker that a reload would wipe.
    b.script("window.__stillHere = true; return null;").await;

    app.pay(&id, "10.5").await;
    b.wait_for(
        "document.body.dataset.status === 'Paid' && !document.querySelector('[data-state=Paid]').hidden",
        "the page to turn Paid",
    )
    .await;
    assert_eq!(
        b.script("return window.__stillHere === true;").await,
        json!(true),
        "no reload"
    );
    assert_eq!(
        b.script("return document.querySelector('[data-open]').hidden;")
            .await,
        json!(true),
        "the pay details are gone"
    );
    b.screenshot("paid-390x844").await;
    b.wait_for(
        "location.pathname === '/success'",
        "the redirect to success_url",
    )
    .await;
    assert_eq!(b.current_url().await, format!("{shop}/success"));
    b.close().await;
}

#[tokio::test]
async fn at_zero_the_address_disappears_and_the_page_says_not_to_pay() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    let app = TestApp::spawn().await;
    let (_, s) = app
        .create_session(&app.merchant.test_key, seed_request())
        .await;
    let id = s["id"].as_str().unwrap().to_owned();
    let b = driver.browser(390, 844).await;
    b.go(&format!("{}/{id}", app.base)).await;
    assert_eq!(
        b.script("return document.querySelector('[data-open]').hidden;")
            .await,
        json!(false)
    );
    b.script("window.__stillHere = true; return null;").await;
    // The deadline comes closer while the page is open (the live view carries it).
    sqlx::query(
        "UPDATE checkout_sessions SET expires_at = date_trunc('second', now()) + interval '3 seconds'
          WHERE id = $1",
    )
    .bind(&id)
    .execute(&app.db)
    .await
    .unwrap();
    // No expiry pass has run: the session is still Pending, but the time is up.
    b.wait_for(
        "!document.querySelector('[data-state=TimeUp]').hidden && document.querySelector('[data-open]').hidden",
        "the time-up state at 0:00",
    )
    .await;
    assert_eq!(
        b.script("return window.__stillHere === true;").await,
        json!(true)
    );
    let text = b
        .script("return document.querySelector('[data-state=TimeUp]').textContent;")
        .await;
    assert!(
        text.as_str().unwrap().contains("Do not send funds"),
        "{text}"
    );
    b.screenshot("time-up-390x844").await;
    // The expiry pass runs (the page may flip a moment before the database's clock gets
    // there): the page turns Expired.
    let mut expired = Vec::new();
    for _ in 0..30 {
        expired = checkout_server::workers::expiry_tick(&app.state)
            .await
            .unwrap();
        if !expired.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(expired, vec![id.clone()]);
    b.wait_for(
        "document.body.dataset.status === 'Expired' && !document.querySelector('[data-state=Expired]').hidden",
        "the page to turn Expired",
    )
    .await;
    b.close().await;
}

#[tokio::test]
async fn screenshots_of_each_state_at_phone_and_desktop_sizes() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    let app = TestApp::spawn().await;
    let new = |app: &TestApp| {
        let (client, base, key) = (
            app.client.clone(),
            app.base.clone(),
            app.merchant.test_key.clone(),
        );
        async move {
            let res = client
                .post(format!("{base}/v1/checkout/sessions"))
                .bearer_auth(key)
                .json(&seed_request())
                .send()
                .await
                .unwrap();
            let v: Value = res.json().await.unwrap();
            v["id"].as_str().unwrap().to_owned()
        }
    };
    let pending = new(&app).await;
    let underpaid = new(&app).await;
    app.pay(&underpaid, "4").await;
    let overpaid = new(&app).await;
    app.pay(&overpaid, "12").await;
    let expired = new(&app).await;
    app.request(
        Method::POST,
        &format!("/v1/checkout/sessions/{expired}/expire"),
        Some(&app.merchant.test_key),
        None,
    )
    .await;
    for (w, h) in [(390, 844), (1280, 800)] {
        let b = driver.browser(w, h).await;
        for (name, id, lang) in [
            ("pending", &pending, "en"),
            ("pending-zh", &pending, "zh"),
            ("underpaid", &underpaid, "en"),
            ("overpaid", &overpaid, "en"),
            ("expired", &expired, "en"),
        ] {
            b.go(&format!("{}/{id}?lang={lang}", app.base)).await;
            b.wait_for("document.readyState === 'complete'", "the page")
                .await;
            b.screenshot(&format!("{name}-{w}x{h}")).await;
        }
        b.close().await;
    }
}

#[tokio::test]
async fn embedded_in_an_allowed_origin_the_page_posts_its_events_to_the_parent() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    // The merchant's page, on another origin, frames the checkout and records its messages.
    let app_router = axum::Router::new().route(
        "/parent",
        axum::routing::get(
            |axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>| async move {
                axum::response::Html(format!(
                    r#"<!doctype html><script>window.__msgs = [];
                    addEventListener("message", function (e) {{ window.__msgs.push(e.data.type); }});</script>
                    <iframe src="{}" width="400" height="700"></iframe>"#,
                    q.get("src").cloned().unwrap_or_default()
                ))
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let parent = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app_router).await });

    let app = TestApp::spawn_with(
        &format!(
            "{}\n[hosted]\nframe_ancestors = [\"{parent}\"]\n",
            crate::common::TEST_CONFIG
        ),
        |_| {},
    )
    .await;
    let (_, s) = app
        .create_session(&app.merchant.test_key, seed_request())
        .await;
    let id = s["id"].as_str().unwrap().to_owned();
    let b = driver.browser(1280, 800).await;
    let src = format!("{}/{id}?embed=1", app.base);
    b.go(&format!("{parent}/parent?src={}", url_escape(&src)))
        .await;
    b.wait_for(
        "window.__msgs.indexOf('checkout.ready') >= 0 && window.__msgs.indexOf('checkout.resize') >= 0",
        "ready and resize from the frame",
    )
    .await;
    app.pay(&id, "10.5").await;
    b.wait_for(
        "window.__msgs.indexOf('checkout.paid') >= 0",
        "paid from the frame",
    )
    .await;
    b.screenshot("embedded-paid-1280x800").await;
    b.close().await;
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn a_page_whose_live_stream_is_refused_polls_instead() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    // One open stream per address; this test holds it, so the page's own stream gets 429.
    let app = TestApp::spawn_with(
        &format!(
            "{}\n[rate_limits]\nip_streams = 1\nip_per_second = 1000\nip_burst = 1000\n",
            crate::common::TEST_CONFIG
        ),
        |_| {},
    )
    .await;
    let (_, s) = app
        .create_session(&app.merchant.test_key, seed_request())
        .await;
    let id = s["id"].as_str().unwrap().to_owned();
    let held = app
        .client
        .get(format!("{}/v1/checkout/sessions/{id}/events", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(held.status(), 200);

    let b = driver.browser(390, 844).await;
    b.go(&format!("{}/{id}", app.base)).await;
    b.script("window.__stillHere = true; return null;").await;
    app.pay(&id, "10.5").await;
    b.wait_for(
        "document.body.dataset.status === 'Paid'",
        "the page to turn Paid by polling /view",
    )
    .await;
    assert_eq!(
        b.script("return window.__stillHere === true;").await,
        json!(true),
        "no reload"
    );
    drop(held);
    b.close().await;
}
