//! Test harness: the real server in-process on port 0, a fresh Postgres database per test.

use checkout_server::config::{Config, RateLimit, RateLimitConfig};
use checkout_server::service::merchants::{self, MerchantSpec};
use checkout_server::startup::Application;
use checkout_server::state::AppState;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::PgPool;
use std::str::FromStr;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const TEST_CONFIG: &str = r#"
[rates]
source = "static"
static = { CNY = "7.10", EUR = "0.92", JPY = "150" }

[networks.TRON.test]
simulated = true

[networks.BSC.test]
simulated = true

[networks.TRON.live]
rpc_urls = ["http://127.0.0.1:9/jsonrpc"]

[networks.BSC.live]
rpc_urls = ["http://127.0.0.1:9"]
"#;

pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh, migrated database; returns its URL.
pub async fn fresh_database() -> String {
    let admin = admin_url();
    let name = format!("cstest_{}", Uuid::new_v4().simple());
    let mut url = url::Url::parse(&admin).expect("TEST_DATABASE_URL is a URL");
    url.set_path(&name);
    checkout_server::db::prepare(url.as_str())
        .await
        .expect("test database");
    url.to_string()
}

/// An account-level xpub from a random seed (not one of the public test keys).
pub fn random_xpub(path: &str) -> String {
    let seed: [u8; 32] = rand::random();
    let path = bip32::DerivationPath::from_str(path).unwrap();
    let xprv = bip32::XPrv::derive_from_path(seed, &path).unwrap();
    xprv.public_key().to_string(bip32::Prefix::XPUB)
}

/// The same key as `xpub` (public key and chain code) under other metadata: another parent
/// fingerprint and child number, re-encoded with a valid checksum.
pub fn reencoded_xpub(xpub: &str) -> String {
    let mut payload = bs58::decode(xpub).with_check(None).into_vec().unwrap();
    assert_eq!(
        payload.len(),
        78,
        "version, depth, fingerprint, child, chain code, key"
    );
    payload[5..9].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    payload[9..13].copy_from_slice(&0x8000_0007u32.to_be_bytes());
    let text = bs58::encode(payload).with_check().into_string();
    assert_ne!(text, xpub);
    text
}

/// Limits no test reaches.
pub fn generous_limits() -> RateLimitConfig {
    let huge = RateLimit {
        per_second: 1_000_000,
        burst: 1_000_000,
    };
    RateLimitConfig {
        live: huge,
        test: huge,
        ip: huge,
        ip_streams: 1_000_000,
        ..RateLimitConfig::default()
    }
}

pub struct Merchant {
    pub test_key: String,
    pub live_key: String,
}

pub struct TestApp {
    pub base: String,
    pub db: PgPool,
    pub client: reqwest::Client,
    pub merchant: Merchant,
    pub faults: std::sync::Arc<checkout_server::faults::Faults>,
    pub state: AppState,
    shutdown: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(TEST_CONFIG, |_| {}).await
    }

    /// For tests that do not read a chain: live networks' watchers are recorded as healthy
    /// (as if another replica ran them), so creates there are not refused as stale.
    pub async fn spawn_with(toml: &str, adjust: impl FnOnce(&mut Config)) -> Self {
        let app = Self::spawn_unwatched(toml, adjust).await;
        for net in app.state.config.enabled_networks() {
            if net.watched() {
                sqlx::query(
                    "INSERT INTO chain_cursors (network, livemode, lease_owner, lease_expires_at,
                            block_number, block_hash, block_time, head_number, last_success_at)
                     VALUES ($1, $2, gen_random_uuid(), now() + interval '1 day', 1, '0x01',
                             now() + interval '1 day', 1, now() + interval '1 day')",
                )
                .bind(net.network.as_str())
                .bind(net.mode.livemode())
                .execute(&app.db)
                .await
                .unwrap();
            }
        }
        app
    }

    /// The server with no watcher running and none recorded: chain tests run their own.
    pub async fn spawn_unwatched(toml: &str, adjust: impl FnOnce(&mut Config)) -> Self {
        // `TEST_LOG=1 cargo test …` shows the server's logs (RUST_LOG filters them).
        if std::env::var_os("TEST_LOG").is_some() {
            checkout_server::telemetry::init();
        }
        let db_url = fresh_database().await;
        let mut config = Config::from_toml(toml).expect("test config");
        if !toml.contains("[rate_limits]") {
            // Tests make many quick requests from one address with one key; only the rate
            // limit tests (which configure their own) meet the limits.
            config.rate_limits = generous_limits();
        }
        config.database_url = db_url.clone();
        config.base_url = "https://checkout.example.com".into();
        adjust(&mut config);
        let db = checkout_server::db::connect(&db_url).await.unwrap();
        let state = AppState::new(db.clone(), config);
        let faults = state.faults.clone();
        let app = Application::bind(state.clone(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let base = format!("http://{}", app.local_addr());
        let shutdown = CancellationToken::new();
        tokio::spawn(app.run(shutdown.clone()));
        let merchant = create_merchant(&db, "Acme Store", true).await;
        Self {
            base,
            db,
            client: reqwest::Client::new(),
            merchant,
            faults,
            state,
            shutdown,
        }
    }

    pub async fn new_merchant(&self, name: &str) -> Merchant {
        create_merchant(&self.db, name, true).await
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.unwrap();
        read(res).await
    }

    pub async fn create_session(&self, key: &str, body: Value) -> (StatusCode, Value) {
        self.request(Method::POST, "/v1/checkout/sessions", Some(key), Some(body))
            .await
    }

    /// Creates a session with extra headers; also says whether the answer was a replay.
    pub async fn create_session_with(
        &self,
        key: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value, bool) {
        let res = send_create(&self.client, &self.base, key, body, headers).await;
        let replayed = res
            .headers()
            .get("idempotency-replayed")
            .is_some_and(|v| v == "true");
        let (status, value) = read(res).await;
        (status, value, replayed)
    }

    /// Sends `n` creates at once, each with the same headers and the body `body(i)`.
    pub async fn concurrent_creates(
        &self,
        n: usize,
        headers: &[(&str, &str)],
        body: impl Fn(usize) -> Value,
    ) -> Vec<(StatusCode, Value)> {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let (client, base, key, headers, body) = (
                    self.client.clone(),
                    self.base.clone(),
                    self.merchant.test_key.clone(),
                    headers.clone(),
                    body(i),
                );
                tokio::spawn(async move {
                    let headers: Vec<(&str, &str)> = headers
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect();
                    read(send_create(&client, &base, &key, &body, &headers).await).await
                })
            })
            .collect();
        let mut out = Vec::with_capacity(n);
        for task in tasks {
            out.push(task.await.unwrap());
        }
        out
    }

    /// Test mode: pays `amount` to session `id` through simulate_payment.
    pub async fn simulate_payment(&self, key: &str, id: &str, amount: &str) -> (StatusCode, Value) {
        self.request(
            Method::POST,
            &format!("/v1/test_helpers/checkout/sessions/{id}/simulate_payment"),
            Some(key),
            Some(json!({ "amount": amount })),
        )
        .await
    }

    /// `simulate_payment` with the test key, which must be accepted.
    pub async fn pay(&self, id: &str, amount: &str) {
        let (status, body) = self
            .simulate_payment(&self.merchant.test_key, id, amount)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    pub async fn get(&self, path: &str, key: &str) -> (StatusCode, Value) {
        self.request(Method::GET, path, Some(key), None).await
    }

    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&self.db)
            .await
            .unwrap()
    }
}

pub async fn create_merchant(db: &PgPool, name: &str, own_xpubs: bool) -> Merchant {
    let spec = MerchantSpec {
        name: name.into(),
        logo_url: Some("https://example.com/logo.png".into()),
        tron_xpub: own_xpubs.then(|| random_xpub("m/44'/195'/0'")),
        evm_xpub: own_xpubs.then(|| random_xpub("m/44'/60'/0'")),
        fee_rate: None,
    };
    let created = merchants::create(db, &spec).await.unwrap();
    Merchant {
        test_key: created.test_key.expose_secret().to_owned(),
        live_key: created.live_key.unwrap().expose_secret().to_owned(),
    }
}

/// A merchant on the given xpubs (none given: no wallet of that family).
pub async fn create_merchant_with_xpubs(
    db: &PgPool,
    name: &str,
    tron_xpub: Option<&str>,
    evm_xpub: Option<&str>,
) -> Merchant {
    let spec = MerchantSpec {
        name: name.into(),
        logo_url: None,
        tron_xpub: tron_xpub.map(str::to_owned),
        evm_xpub: evm_xpub.map(str::to_owned),
        fee_rate: None,
    };
    let created = merchants::create(db, &spec).await.unwrap();
    Merchant {
        test_key: created.test_key.expose_secret().to_owned(),
        live_key: created.live_key.unwrap().expose_secret().to_owned(),
    }
}

/// Header values go out as raw bytes, so tests can send non-ASCII ones.
async fn send_create(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = client
        .post(format!("{base}/v1/checkout/sessions"))
        .bearer_auth(key)
        .json(body);
    for (name, value) in headers {
        req = req.header(
            *name,
            reqwest::header::HeaderValue::from_bytes(value.as_bytes()).unwrap(),
        );
    }
    req.send().await.unwrap()
}

pub async fn read(res: reqwest::Response) -> (StatusCode, Value) {
    let status = res.status();
    let text = res.text().await.unwrap();
    let value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
    (status, value)
}

/// The seed's own request.
pub fn seed_request() -> Value {
    json!({
        "cancel_url": "https://example.com/cancel",
        "client_reference_id": "order_20260211_001",
        "currency": "USDT",
        "network": "TRON",
        "pricing_amount": "10.50",
        "pricing_currency": "USD",
        "success_url": "https://example.com/success"
    })
}

/// Asserts our error shape and returns the error object.
pub fn assert_error(status: StatusCode, body: &Value, want_status: u16, want_code: &str) -> Value {
    assert_eq!(status.as_u16(), want_status, "{body}");
    let error = body
        .get("error")
        .unwrap_or_else(|| panic!("no error object: {body}"));
    assert_eq!(error["code"], want_code, "{body}");
    assert!(
        error["type"].is_string() && error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    error.clone()
}

/// Serves `app` on a free local port; its base URL, `http://127.0.0.1:PORT`.
pub async fn serve_local(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}
