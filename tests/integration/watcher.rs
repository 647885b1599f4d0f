//! The chain watcher against a real EVM node (anvil): detection, confirmations, crediting,
//! reorgs, reverts, restarts, failing RPCs, expiry, late payments, denylist, anomalies, TRON.

use crate::chain_support::{hex20, units, Anvil};
use crate::common::{assert_error, TestApp};
use alloy_primitives::U256;
use checkout_server::chain::rpc::RetryPolicy;
use checkout_server::chain::watcher::{TickReport, Watcher};
use checkout_server::domain::address::{parse_evm_address, parse_tron_address, tron_base58};
use checkout_server::domain::api_key::Mode;
use checkout_server::domain::network::Network;
use checkout_server::workers::expiry_tick;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

const CONFIRMATIONS: u64 = 3;

struct Chain {
    anvil: Anvil,
    app: TestApp,
    /// BSC test USDT, 18 decimals.
    usdt18: [u8; 20],
    /// BSC test USDC, 6 decimals.
    usdc6: [u8; 20],
    /// The TRON test network's USDT (6 decimals), on the same node.
    tron_usdt: [u8; 20],
    payer: [u8; 20],
}

fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        timeout: Duration::from_secs(5),
        attempts: 4,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(50),
    }
}

impl Chain {
    async fn start() -> Self {
        Self::start_with("").await
    }

    /// A node with three tokens, and the server configured to watch it as BSC and TRON
    /// (test mode). `extra` is more TOML, placed before the network tables.
    async fn start_with(extra: &str) -> Self {
        let anvil = Anvil::start().await;
        let usdt18 = anvil.deploy_token(18).await;
        let usdc6 = anvil.deploy_token(6).await;
        let tron_usdt = anvil.deploy_token(6).await;
        let toml = format!(
            r#"
[watcher]
lease_seconds = 2
{extra}

[networks.BSC.test]
rpc_urls = ["{url}"]
chain_id = 31337
confirmations = {CONFIRMATIONS}
poll_interval_ms = 100
tokens.USDT = {{ contract = "{usdt}", decimals = 18 }}
tokens.USDC = {{ contract = "{usdc}", decimals = 6 }}

[networks.TRON.test]
rpc_urls = ["{url}"]
confirmations = {CONFIRMATIONS}
poll_interval_ms = 100
tokens.USDT = {{ contract = "{tron}", decimals = 6 }}
"#,
            url = anvil.url,
            usdt = hex20(&usdt18),
            usdc = hex20(&usdc6),
            tron = tron_base58(&tron_usdt),
        );
        let app = TestApp::spawn_unwatched(&toml, |_| {}).await;
        let payer = anvil.accounts[1];
        Chain {
            anvil,
            app,
            usdt18,
            usdc6,
            tron_usdt,
            payer,
        }
    }

    fn watcher(&self, network: Network) -> Watcher {
        let net = self.app.state.config.network(network, Mode::Test);
        self.watcher_for(net.clone())
    }

    fn watcher_for(&self, net: checkout_server::config::NetworkConfig) -> Watcher {
        Watcher::new(&self.app.state, &net, fast_retries()).unwrap()
    }

    async fn create(&self, network: &str, currency: &str, amount: &str) -> Value {
        let (status, body) = self
            .app
            .create_session(
                &self.app.merchant.test_key,
                json!({
                    "pricing_amount": amount,
                    "pricing_currency": currency,
                    "currency": currency,
                    "network": network,
                    "success_url": "https://shop.example/ok",
                    "cancel_url": "https://shop.example/cancel",
                }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    async fn session(&self, id: &str) -> Value {
        let (status, body) = self
            .app
            .get(
                &format!("/v1/checkout/sessions/{id}"),
                &self.app.merchant.test_key,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    fn address_of(session: &Value) -> [u8; 20] {
        let text = session["pay_address"].as_str().unwrap();
        match session["chain_family"].as_str().unwrap() {
            "tron" => parse_tron_address(text).unwrap(),
            _ => parse_evm_address(text).unwrap(),
        }
    }

    fn token_of(&self, session: &Value) -> ([u8; 20], u8) {
        match (
            session["network"].as_str().unwrap(),
            session["currency"].as_str().unwrap(),
        ) {
            ("BSC", "USDT") => (self.usdt18, 18),
            ("BSC", "USDC") => (self.usdc6, 6),
            ("TRON", "USDT") => (self.tron_usdt, 6),
            other => panic!("no token for {other:?}"),
        }
    }

    /// Pays `amount` tokens to the session's address from the payer; returns the tx hash.
    async fn pay(&self, session: &Value, amount: &str) -> String {
        let (token, decimals) = self.token_of(session);
        self.anvil
            .transfer(
                &token,
                &self.payer,
                &Self::address_of(session),
                units(amount, decimals),
            )
            .await
    }

    /// Mines the confirmations and runs the watcher until nothing is left to do.
    async fn confirm(&self, w: &Watcher) -> TickReport {
        self.anvil.mine(CONFIRMATIONS).await;
        tick(w).await
    }

    async fn db_value<T>(&self, sql: &str, id: &str) -> T
    where
        T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
    {
        sqlx::query_scalar(sql)
            .bind(id)
            .fetch_one(&self.app.db)
            .await
            .unwrap()
    }
}

async fn tick(w: &Watcher) -> TickReport {
    let report = w.tick().await.expect("watcher cycle");
    assert!(report.leader, "the only watcher holds the lease");
    report
}

fn id(session: &Value) -> String {
    session["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn exact_payment_is_detected_confirmed_and_credited_once() {
    let c = Chain::start().await;
    let w = c.watcher(Network::Bsc);
    let first = tick(&w).await;
    assert_eq!(first.scanned, None, "a fresh watcher starts at the head");
    let s = c.create("BSC", "USDT", "10.50").await;

    let tx = c.pay(&s, "10.5").await;
    let seen = tick(&w).await;
    assert_eq!(seen.recorded, 1, "{seen:?}");
    assert_eq!(seen.credited, 0, "not before its confirmations");
    let pending = c.session(&id(&s)).await;
    assert_eq!(pending["status"], "Pending");
    assert_eq!(pending["amount_received"], "0");
    assert_eq!(pending["transactions"][0]["status"], "Unconfirmed");
    assert_eq!(pending["transactions"][0]["tx_hash"], tx);

    let done = c.confirm(&w).await;
    assert_eq!(done.credited, 1, "{done:?}");
    let paid = c.session(&id(&s)).await;
    assert_eq!(paid["status"], "Paid");
    assert_eq!(paid["amount_received"], "10.5");
    assert_eq!(paid["fee_amount"], "0.1", "BSC floor on 10.5 x 0.5 %");
    assert_eq!(paid["net_amount"], "10.4");
    let txs = paid["transactions"].as_array().unwrap();
    assert_eq!(txs.len(), 1);
    assert_eq!(txs[0]["status"], "Confirmed");
    assert_eq!(txs[0]["amount"], "10.5");
    assert_eq!(txs[0]["network"], "BSC");

    // More cycles, a rescan of the same blocks, a second watcher: nothing is counted twice.
    c.anvil.mine(2).await;
    for _ in 0..3 {
        let again = tick(&w).await;
        assert_eq!((again.recorded, again.credited), (0, 0), "{again:?}");
    }
    let after = c.session(&id(&s)).await;
    assert_eq!(after["amount_received"], "10.5");
    assert_eq!(c.app.count("transactions").await, 1);
}

#[tokio::test]
async fn underpayment_extends_the_session_and_a_top_up_pays_it() {
    let c = Chain::start().await;
    let w = c.watcher(Network::Bsc);
    tick(&w).await;
    // USDC here has 6 decimals.
    let s = c.create("BSC", "USDC", "10.00").await;
    let created_expiry = s["expires_at"].as_str().unwrap().to_owned();

    c.pay(&s, "4").await;
    tick(&w).await;
    c.confirm(&w).await;
    let under = c.session(&id(&s)).await;
    assert_eq!(under["status"], "Underpaid");
    assert_eq!(under["amount_received"], "4");
    assert_eq!(under["fee_amount"], s["fee_amount"], "fee stays on amount");
    let extended =
        chrono::DateTime::parse_from_rfc3339(under["expires_at"].as_str().unwrap()).unwrap();
    let hours = (extended.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_minutes();
    assert!(
        (23 * 60..=24 * 60).contains(&hours),
        "expires_at {} (was {created_expiry}) is now + 24 h",
        under["expires_at"]
    );

    c.pay(&s, "5.995").await;
    tick(&w).await;
    c.confirm(&w).await;
    let paid = c.session(&id(&s)).await;
    assert_eq!(
        paid["status"], "Paid",
        "short by 0.005: within the tolerance"
    );
    assert_eq!(paid["amount_received"], "9.995");
    assert_eq!(paid["fee_amount"], "0.1");
    assert_eq!(paid["net_amount"], "9.895", "fixed on amount_received");
    assert_eq!(paid["transactions"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn overpayment_and_two_transfers_in_one_block() {
    let c = Chain::start().await;
    let w = c.watcher(Network::Bsc);
    tick(&w).await;
    let a = c.create("BSC", "USDT", "100.00").await;
    let b = c.create("BSC", "USDT", "20.00").await;

    c.anvil.set_automine(false).await;
    let ta = c.pay(&a, "150").await;
    let tb = c.pay(&b, "20").await;
    c.anvil.mine(1).await;
    c.anvil.set_automine(true).await;
    let ra = c.anvil.receipt(&ta).await;
    let rb = c.anvil.receipt(&tb).await;
    assert_eq!(ra["blockHash"], rb["blockHash"], "both in one block");

    let seen = tick(&w).await;
    assert_eq!(seen.recorded, 2, "{seen:?}");
    let done = c.confirm(&w).await;
    assert_eq!(done.credited, 2, "{done:?}");
    let over = c.session(&id(&a)).await;
    assert_eq!(over["status"], "Overpaid");
    assert_eq!(over["amount_received"], "150");
    assert_eq!(over["fee_amount"], "0.75", "0.5 % of what was received");
    assert_eq!(over["net_amount"], "149.25");
    assert_eq!(c.session(&id(&b)).await["status"], "Paid");
}

#[tokio::test]
async fn a_tron_network_works_end_to_end_with_base58_addresses() {
    let c = Chain::start().await;
    let w = c.watcher(Network::Tron);
    tick(&w).await;
    let s = c.create("TRON", "USDT", "25.00").await;
    assert!(s["pay_address"].as_str().unwrap().starts_with('T'));
    assert_eq!(s["currency_contract"], tron_base58(&c.tron_usdt));

    let tx = c.pay(&s, "25").await;
    tick(&w).await;
    c.confirm(&w).await;
    let paid = c.session(&id(&s)).await;
    assert_eq!(paid["status"], "Paid");
    assert_eq!(paid["fee_amount"], "1", "TRON floor");
    assert_eq!(
        paid["transactions"][0]["tx_hash"],
        tx.trim_start_matches("0x"),
        "TRON transaction ids have no 0x"
    );
    let from: String = c
        .db_value(
            "SELECT from_address FROM transactions WHERE session_id = $1",
            &id(&s),
        )
        .await;
    assert_eq!(from, tron_base58(&c.payer));
}

#[tokio::test]
async fn a_transfer_removed_by_a_reorg_is_never_credited() {
    let c = Chain::start().await;
    let w = c.watcher(Network::Bsc);
    tick(&w).await;
    let s = c.create("BSC", "USDT", "10.00").await;

    let snapshot = c.anvil.snapshot().await;
    c.pay(&s, "10").await;
    let seen = tick(&w).await;
    assert_eq!(seen.recorded, 1);
    c.anvil.revert(&snapshot).await;
    // The new chain grows past the old one without the transfer.
    c.anvil.mine(CONFIRMATIONS + 3).await;
    let report = tick(&w).await;
    assert_eq!(report.not_found, 1, "{report:?}");
    assert_eq!(report.credited, 0);
    let s2 = c.session(&id(&s)).await;
    assert_eq!(s2["status"], "Pending");
    assert_eq!(s2["amount_received"], "0");
    assert_eq!(s2["transactions"][0]["status"], "NotFound");

    // The customer pays again on the new chain: that one counts, the vanished one never.
    c.pay(&s, "10").await;
    tick(&w).await;
    c.confirm(&w).await;
    let paid = c.session(&id(&s)).await;
    assert_eq!(paid["status"], "Paid");
    assert_eq!(paid["amount_received"], "10");
}

#[tokio::test]
async fn a_reverted_transfer_is_never_credited() {
    let c = Chain::start().await;
    let w = c.watcher(Network::Bsc);
    tick(&w).await;
    let s = c.create("BSC", "USDT", "10.00").await;
    let to = Chain::address_of(&s);
    c.anvil.set_blocked(&c.usdt18, &to).await;
    let tx = c.pay(&s, "10").await;
    let receipt = c.anvil.receipt(&tx).await;
    assert_eq!(receipt["status"], "0x0", "the transfer reverted on chain");
    tick(&w).await;
    let report = c.confirm(&w).await;
    assert_eq!(report.credited, 0);
    let s2 = c.session(&id(&s)).await;
    assert_eq!(s2["status"], "Pending");
    assert_eq!(s2["amount_received"], "0");
    assert!(s2["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["status"] != "Confirmed"));
}

#[tokio::test]
async fn a_watcher_killed_mid_way_resumes_from_its_cursor_and_counts_each_transfer_once() {
    let c = Chain::start().await;
    let first = c.watcher(Network::Bsc);
    tick(&first).await;
    let s = c.create("BSC", "USDT", "30.00").await;
    c.pay(&s, "10").await;
    tick(&first).await; // stored, not yet confirmed
    let cursor: i64 = c
        .db_value(
            "SELECT block_number FROM chain_cursors WHERE network = $1",
            "BSC",
        )
        .await;
    // The process dies here: no release, no more cycles.
    drop(first);

    c.pay(&s, "10").await;
    c.anvil.mine(50).await;
    c.pay(&s, "10").await;

    let second = c.watcher(Network::Bsc);
    let blocked = second.tick().await.unwrap();
    assert!(
        !blocked.leader,
        "the dead holder's lease has not lapsed yet"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let resumed = tick(&second).await;
    let (from, _) = resumed.scanned.expect("scanned");
    assert_eq!(from as i64, cursor + 1, "resumed right after the cursor");
    c.confirm(&second).await;
    let paid = c.session(&id(&s)).await;
    assert_eq!(paid["status"], "Paid", "{paid}");
    assert_eq!(paid["amount_received"], "30");
    assert_eq!(paid["transactions"].as_array().unwrap().len(), 3);
    let credited: i64 = c
        .db_value(
            "SELECT count(*) FROM transactions WHERE session_id = $1 AND credited",
            &id(&s),
        )
        .await;
    assert_eq!(credited, 3);
}

#[tokio::test]
async fn one_watcher_per_network_across_replicas_and_a_released_lease_moves_at_once() {
    let c = Chain::start().await;
    let a = c.watcher(Network::Bsc);
    let b = c.watcher(Network::Bsc);
    assert!(a.tick().await.unwrap().leader);
    for _ in 0..3 {
        assert!(
            !b.tick().await.unwrap().leader,
            "b never scans while a holds"
        );
    }
    a.release().await;
    assert!(b.tick().await.unwrap().leader, "b takes over at once");
    assert!(!a.tick().await.unwrap().leader);
}

type Hook = dyn Fn(u64, &Value, Value) -> Option<Value> + Send + Sync;

/// A JSON-RPC proxy in front of the node. `hook(call number, request, answer)` may rewrite
/// the node's answer, or return `None` to fail the call with HTTP 500.
async fn proxy(target: String, hook: std::sync::Arc<Hook>) -> String {
    use axum::response::IntoResponse;
    use std::sync::atomic::{AtomicU64, Ordering};
    let calls = std::sync::Arc::new(AtomicU64::new(0));
    let client = reqwest::Client::new();
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move |axum::Json(request): axum::Json<Value>| {
            let (calls, client, target, hook) =
                (calls.clone(), client.clone(), target.clone(), hook.clone());
            async move {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                let answer: Value = client
                    .post(&target)
                    .json(&request)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                match hook(n, &request, answer) {
                    Some(v) => axum::Json(v).into_response(),
                    None => (StatusCode::INTERNAL_SERVER_ERROR, "flaky").into_response(),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// Fails every other call.
async fn flaky_proxy(target: String) -> String {
    proxy(
        target,
        std::sync::Arc::new(|n, _, answer| (n % 2 == 1).then_some(answer)),
    )
    .await
}

/// The watcher over a proxy with `hook`, for a node that misbehaves.
async fn watcher_behind_proxy(c: &Chain, hook: std::sync::Arc<Hook>) -> Watcher {
    let mut net = c.app.state.config.network(Network::Bsc, Mode::Test).clone();
    net.rpc_urls = vec![proxy(c.anvil.url.clone(), hook).await];
    c.watcher_for(net)
}

#[tokio::test]
async fn a_logged_transfer_whose_receipt_failed_is_never_credited() {
    let c = Chain::start().await;
    // A node (as TRON's may) that lists the transfer's log but reports its receipt as failed.
    let w = watcher_behind_proxy(
        &c,
        std::sync::Arc::new(|_, request: &Value, mut answer: Value| {
            if request["method"] == "eth_getTransactionReceipt" && answer["result"].is_object() {
                answer["result"]["status"] = json!("0x0");
            }
            Some(answer)
        }),
    )
    .await;
    tick(&w).await;
    let s = c.create("BSC", "USDT", "10.00").await;
    c.pay(&s, "10").await;
    assert_eq!(tick(&w).await.recorded, 1);
    let report = c.confirm(&w).await;
    assert_eq!((report.failed, report.credited), (1, 0), "{report:?}");
    let after = c.session(&id(&s)).await;
    assert_eq!(after["status"], "Pending");
    assert_eq!(after["transactions"][0]["status"], "Failed");
    assert_eq!(after["amount_received"], "0");
}

#[tokio::test]
async fn repeated_and_malformed_logs_from_a_node_are_handled() {
    let c = Chain::start().await;
    // Every log twice, plus a log that is not a well-formed Transfer.
    let w = watcher_behind_proxy(
        &c,
        std::sync::Arc::new(|_, request: &Value, mut answer: Value| {
            if request["method"] == "eth_getLogs" {
                if let Some(logs) = answer["result"].as_array().cloned() {
                    let mut doubled = logs.clone();
                    doubled.extend(logs.iter().cloned());
                    if let Some(first) = logs.first() {
                        let mut odd = first.clone();
                        odd["topics"] = json!([odd["topics"][0]]);
                        doubled.push(odd);
                    }
                    answer["result"] = json!(doubled);
                }
            }
            Some(answer)
        }),
    )
    .await;
    tick(&w).await;
    let s = c.create("BSC", "USDT", "10.00").await;
    c.pay(&s, "10").await;
    let seen = tick(&w).await;
    assert_eq!(seen.recorded, 1, "{seen:?}");
    c.confirm(&w).await;
    let paid = c.session(&id(&s)).await;
    assert_eq!(paid["status"], "Paid");
    assert_eq!(paid["amount_received"], "10");
}

#[tokio::test]
async fn failing_rpc_calls_are_retried_and_a_second_url_takes_over() {
    let c = Chain::start().await;
    let base = c.app.state.config.network(Network::Bsc, Mode::Test).clone();

    let mut flaky = base.clone();
    flaky.rpc_urls = vec![flaky_proxy(c.anvil.url.clone()).await];
    let w = c.watcher_for(flaky);
    tick(&w).await;
    let s = c.create("BSC", "USDT", "10.00").await;
    c.pay(&s, "10").await;
    tick(&w).await;
    c.confirm(&w).await;
    assert_eq!(c.session(&id(&s)).await["status"], "Paid");
    drop(w);
    sqlx::query("UPDATE chain_cursors SET lease_owner = NULL")
        .execute(&c.app.db)
        .await
        .unwrap();

    // The first URL refuses connections; the second one serves.
    let mut failover = base;
    failover.rpc_urls = vec!["http://127.0.0.1:1/".into(), c.anvil.url.clone()];
    let w = c.watcher_for(failover);
    let s = c.create("BSC", "USDT", "12.00").await;
    c.pay(&s, "12").await;
    tick(&w).await;
    c.confirm(&w).await;
    assert_eq!(c.session(&id(&s)).await["status"], "Paid");
}

#[tokio::test]
async fn expiry_waits_for_the_watcher_to_scan_past_expires_at() {
    let c = Chain::start().await;
    let w = c.watcher(Network::Bsc);
    tick(&w).await;
    let paid = c.create("BSC", "USDT", "10.00").await;
    let unpaid = c.create("BSC", "USDT", "10.00").await;

    // The watcher is stopped; the customer pays before expires_at.
    let tx = c.pay(&paid, "10").await;
    let block = c.anvil.receipt(&tx).await["blockNumber"].clone();
    let block = c
        .anvil
        .rpc("eth_getBlockByNumber", json!([block, false]))
        .await;
    let paid_at =
        checkout_server::chain::rpc::parse_quantity(block["timestamp"].as_str().unwrap()).unwrap();
    for s in [&paid, &unpaid] {
        sqlx::query(
            "UPDATE checkout_sessions
                SET expires_at = to_timestamp($2), created_at = to_timestamp($2) - interval '30 min'
              WHERE id = $1",
        )
        .bind(id(s))
        .bind((paid_at + 1) as f64)
        .execute(&c.app.db)
        .await
        .unwrap();
    }
    // Wall-clock time passes expires_at while the watcher is still behind.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert!(expiry_tick(&c.app.state).await.unwrap().is_empty());
    assert_eq!(c.session(&id(&paid)).await["status"], "Pending");

    // The watcher catches up and sees the payment: it is confirming, so still no expiry.
    tick(&w).await;
    assert!(expiry_tick(&c.app.state).await.unwrap().is_empty());
    c.confirm(&w).await;
    assert_eq!(c.session(&id(&paid)).await["status"], "Paid");
    // Now the cursor is past expires_at: the unpaid one expires, the paid one never.
    assert_eq!(expiry_tick(&c.app.state).await.unwrap(), vec![id(&unpaid)]);
    assert_eq!(c.session(&id(&unpaid)).await["status"], "Expired");
    assert_eq!(c.session(&id(&paid)).await["status"], "Paid");
}

#[tokio::test]
async fn a_payment_to_an_expired_session_is_recorded_as_late_and_changes_nothing() {
    let c = Chain::start().await;
    let w = c.watcher(Network::Bsc);
    tick(&w).await;
    let s = c.create("BSC", "USDT", "10.00").await;
    let (status, _) = c
        .app
        .request(
            reqwest::Method::POST,
            &format!("/v1/checkout/sessions/{}/expire", id(&s)),
            Some(&c.app.merchant.test_key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    c.pay(&s, "10").await;
    tick(&w).await;
    let report = c.confirm(&w).await;
    assert_eq!((report.credited, report.late), (0, 1), "{report:?}");
    let after = c.session(&id(&s)).await;
    assert_eq!(after["status"], "Expired");
    assert_eq!(after["amount_received"], "0");
    assert_eq!(after["transactions"][0]["status"], "Confirmed");
    let late: bool = c
        .db_value(
            "SELECT late AND NOT credited FROM transactions WHERE session_id = $1",
            &id(&s),
        )
        .await;
    assert!(late);
}

#[tokio::test]
async fn a_denylisted_sender_blocks_the_session() {
    let dir = std::env::temp_dir().join(format!("cs-deny-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("denylist.txt");
    // The payer is anvil's second account.
    std::fs::write(
        &file,
        "# sanctioned\n0x70997970C51812dc3A010C7d01b50e0d17dc79C8\n",
    )
    .unwrap();
    let c = Chain::start_with(&format!("denylist_file = \"{}\"", file.display())).await;
    assert_eq!(
        hex20(&c.payer),
        "0x70997970c51812dc3a010c7d01b50e0d17dc79c8"
    );
    let w = c.watcher(Network::Bsc);
    tick(&w).await;
    let s = c.create("BSC", "USDT", "10.00").await;
    c.pay(&s, "10").await;
    tick(&w).await;
    let report = c.confirm(&w).await;
    assert_eq!(report.blocked, 1, "{report:?}");
    let blocked = c.session(&id(&s)).await;
    assert_eq!(blocked["status"], "Blocked");
    assert_eq!(blocked["amount_received"], "0");
}

#[tokio::test]
async fn impossible_values_and_wrong_tokens_are_anomalies_not_panics() {
    let c = Chain::start().await;
    let w = c.watcher(Network::Bsc);
    tick(&w).await;
    let s = c.create("BSC", "USDT", "10.00").await;
    let to = Chain::address_of(&s);
    // 2^200 base units: far beyond what NUMERIC-backed Decimal amounts hold.
    c.anvil.mint(&c.usdt18, &to, U256::from(1) << 200).await;
    // USDC sent to a USDT session.
    c.anvil
        .transfer(&c.usdc6, &c.payer, &to, units("10", 6))
        .await;
    let report = tick(&w).await;
    assert_eq!((report.recorded, report.anomalies), (0, 2), "{report:?}");
    let kinds: Vec<String> = sqlx::query_scalar("SELECT kind FROM chain_anomalies ORDER BY kind")
        .fetch_all(&c.app.db)
        .await
        .unwrap();
    assert_eq!(kinds, ["value_out_of_range", "wrong_token"]);
    c.confirm(&w).await;
    assert_eq!(c.session(&id(&s)).await["status"], "Pending");
    assert_eq!(c.app.count("transactions").await, 0);
}

#[tokio::test]
async fn a_stale_watcher_makes_readyz_unready_and_refuses_creates() {
    let c = Chain::start_with("").await;
    let readyz = |app: &TestApp| {
        let (client, url) = (app.client.clone(), format!("{}/readyz", app.base));
        async move {
            let res = client.get(url).send().await.unwrap();
            let status = res.status();
            (status, res.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = readyz(&c.app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["checks"]["watchers"]["BSC/test"]["status"], "stale");
    let (status, body) = c
        .app
        .create_session(
            &c.app.merchant.test_key,
            json!({"pricing_amount": "10.00", "pricing_currency": "USDT", "currency": "USDT",
                   "network": "BSC", "success_url": "https://a.example/", "cancel_url": "https://a.example/"}),
        )
        .await;
    let err = assert_error(status, &body, 503, "service_unavailable");
    assert!(err["message"].as_str().unwrap().contains("BSC"), "{err}");
    assert_eq!(c.app.count("checkout_sessions").await, 0);

    tick(&c.watcher(Network::Bsc)).await;
    tick(&c.watcher(Network::Tron)).await;
    let (status, body) = readyz(&c.app).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["checks"]["watchers"]["BSC/test"]["status"], "ok");
    tokio::time::sleep(Duration::from_millis(1100)).await; // the create path's 1 s cache
    c.create("BSC", "USDT", "10.00").await;
}

#[tokio::test]
async fn after_downtime_the_watcher_backfills_in_steps_and_reports_its_lag() {
    let c = Chain::start().await;
    let mut net = c.app.state.config.network(Network::Bsc, Mode::Test).clone();
    net.max_blocks_per_scan = 40;
    net.max_block_range = 16; // several eth_getLogs per step
    let w = c.watcher_for(net.clone());
    tick(&w).await;
    let s = c.create("BSC", "USDT", "10.00").await;
    c.anvil.mine(100).await;
    c.pay(&s, "10").await;
    c.anvil.mine(CONFIRMATIONS).await;

    let step = tick(&w).await;
    assert!(step.behind, "{step:?}");
    let (from, to) = step.scanned.unwrap();
    assert_eq!(to - from + 1, 40);
    assert_eq!(
        step.rpc_calls, 5,
        "blockNumber, 3 x getLogs, one block header"
    );
    let lag: i64 = c
        .db_value(
            "SELECT head_number - block_number FROM chain_cursors WHERE network = $1",
            "BSC",
        )
        .await;
    assert!(lag > 50, "lag {lag}");
    let mut cycles = 1;
    loop {
        let r = tick(&w).await;
        cycles += 1;
        if !r.behind {
            break;
        }
    }
    assert_eq!(cycles, 3, "~105 blocks in steps of 40");
    assert_eq!(c.session(&id(&s)).await["status"], "Paid");
}

#[tokio::test]
async fn a_url_serving_another_chain_stops_the_watcher_with_a_clear_error() {
    let c = Chain::start().await;
    let mut net = c.app.state.config.network(Network::Bsc, Mode::Test).clone();
    net.chain_id = Some(56); // anvil is 31337
    let w = c.watcher_for(net);
    let err = w.tick().await.unwrap_err().to_string();
    assert!(
        err.contains("serves chain id 31337, not the configured 56"),
        "{err}"
    );
    let last_error: Option<String> =
        sqlx::query_scalar("SELECT last_error FROM chain_cursors WHERE network = 'BSC'")
            .fetch_one(&c.app.db)
            .await
            .unwrap();
    assert!(last_error.unwrap().contains("chain id"));
    let block: Option<i64> =
        sqlx::query_scalar("SELECT block_number FROM chain_cursors WHERE network = 'BSC'")
            .fetch_one(&c.app.db)
            .await
            .unwrap();
    assert_eq!(block, None, "nothing scanned");
}

#[tokio::test]
async fn a_node_that_lags_behind_itself_delays_a_credit_but_never_loses_it() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let c = Chain::start().await;
    let lagging = std::sync::Arc::new(AtomicBool::new(false));
    let payment_block = std::sync::Arc::new(AtomicU64::new(u64::MAX));
    let (lag, block) = (lagging.clone(), payment_block.clone());
    // While lagging, the node knows neither the receipt nor the payment's block.
    let w = watcher_behind_proxy(
        &c,
        std::sync::Arc::new(move |_, request: &Value, mut answer: Value| {
            if lag.load(Ordering::SeqCst) {
                let method = request["method"].as_str().unwrap_or("");
                let asked = request["params"][0]
                    .as_str()
                    .and_then(checkout_server::chain::rpc::parse_quantity);
                if method == "eth_getTransactionReceipt"
                    || (method == "eth_getBlockByNumber"
                        && asked == Some(block.load(Ordering::SeqCst)))
                {
                    answer["result"] = Value::Null;
                }
            }
            Some(answer)
        }),
    )
    .await;
    tick(&w).await;
    let s = c.create("BSC", "USDT", "10.00").await;
    let tx = c.pay(&s, "10").await;
    let receipt = c.anvil.receipt(&tx).await;
    payment_block.store(
        checkout_server::chain::rpc::parse_quantity(receipt["blockNumber"].as_str().unwrap())
            .unwrap(),
        Ordering::SeqCst,
    );
    assert_eq!(tick(&w).await.recorded, 1);
    lagging.store(true, Ordering::SeqCst);
    let report = c.confirm(&w).await;
    assert_eq!((report.not_found, report.credited), (0, 0), "{report:?}");
    assert_eq!(
        c.session(&id(&s)).await["transactions"][0]["status"],
        "Unconfirmed"
    );
    lagging.store(false, Ordering::SeqCst);
    let report = tick(&w).await;
    assert_eq!(report.credited, 1, "{report:?}");
    assert_eq!(c.session(&id(&s)).await["status"], "Paid");
}
