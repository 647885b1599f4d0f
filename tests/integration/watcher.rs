//! The chain watcher against a real EVM node (anvil): detection, confirmations, crediting,
//! reorgs, reverts, restarts, failing RPCs, expiry, late payments, denylist, anomalies, TRON.

use crate::chain_support::{hex20, units, Anvil};
use crate::common::{assert_error, TestApp};
use alloy_primitives::U256;
use checkout_server::chain::rpc::RetryPolicy;
use checkout_server::chain::watcher::{TickReport, Watcher};
use checkout_server::config::Scan;
use checkout_server::domain::address::{parse_evm_address, parse_tron_address, tron_base58};
use checkout_server::domain::api_key::Mode;
use checkout_server::domain::network::{Finality, Network};
use checkout_server::workers::expiry_tick;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

const CONFIRMATIONS: u64 = 3;

tokio::task_local! {
    /// The scan mode and the finality rule the scenario's networks use.
    static MODES: (Scan, Finality);
}

/// Runs each scenario in both scan modes and both finality rules: `name::recipients`,
/// `name::contract` (finality by depth) and `name::recipients_by_tag`, `name::contract_by_tag`
/// (anvil's `finalized` block, which its `--slots-in-an-epoch 1` puts as deep as the
/// confirmations).
macro_rules! both_scans {
    ($(async fn $name:ident() $body:block)+) => {$(
        mod $name {
            use super::*;

            #[tokio::test]
            async fn recipients() {
                MODES.scope((Scan::Recipients, Finality::Depth), async $body).await
            }

            #[tokio::test]
            async fn contract() {
                MODES.scope((Scan::Contract, Finality::Depth), async $body).await
            }

            #[tokio::test]
            async fn recipients_by_tag() {
                MODES.scope((Scan::Recipients, Finality::Tag), async $body).await
            }

            #[tokio::test]
            async fn contract_by_tag() {
                MODES.scope((Scan::Contract, Finality::Tag), async $body).await
            }
        }
    )+};
}

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
        let (scan, finality) = MODES
            .try_with(|modes| *modes)
            .unwrap_or((Scan::Recipients, Finality::Depth));
        let scan = match scan {
            Scan::Recipients => "recipients",
            Scan::Contract => "contract",
            Scan::Auto => "auto",
        };
        let finality = match finality {
            Finality::Tag => "tag",
            Finality::Depth => "depth",
        };
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
scan = "{scan}"
finality = "{finality}"
tokens.USDT = {{ contract = "{usdt}", decimals = 18 }}
tokens.USDC = {{ contract = "{usdc}", decimals = 6 }}

[networks.TRON.test]
rpc_urls = ["{url}"]
chain_id = 31337
confirmations = {CONFIRMATIONS}
poll_interval_ms = 100
scan = "{scan}"
finality = "{finality}"
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

    /// Expires the session through the API.
    async fn expire(&self, session: &Value) {
        let (status, body) = self
            .app
            .request(
                reqwest::Method::POST,
                &format!("/v1/checkout/sessions/{}/expire", id(session)),
                Some(&self.app.merchant.test_key),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    /// Mines the confirmations and runs the watcher until nothing is left to do.
    async fn confirm(&self, w: &Watcher) -> TickReport {
        self.anvil.mine(CONFIRMATIONS).await;
        tick(w).await
    }

    /// The session's events, oldest first.
    async fn events_of(&self, session_id: &str) -> Vec<Value> {
        let (status, body) = self
            .app
            .get(
                &format!("/v1/events?session_id={session_id}&page_size=100"),
                &self.app.merchant.test_key,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let mut events = body["data"].as_array().unwrap().clone();
        events.reverse();
        events
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

both_scans! {
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
}

both_scans! {
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
}

both_scans! {
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
}

both_scans! {
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
}

both_scans! {
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
}

both_scans! {
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
}

both_scans! {
    async fn a_watcher_killed_mid_way_resumes_from_its_cursor_and_counts_each_transfer_once() {
        let c = Chain::start().await;
        let first = c.watcher(Network::Bsc);
        tick(&first).await;
        let s = c.create("BSC", "USDT", "30.00").await;
        c.pay(&s, "10").await;
        tick(&first).await; // stored, not yet confirmed
        let last_scanned: i64 = c
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
        assert_eq!(
            from as i64,
            last_scanned + 1,
            "resumed right after the last block scanned: it still holds, so nothing below changed"
        );
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
}

both_scans! {
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
}

type Hook = dyn Fn(u64, &Value, Value) -> Option<Value> + Send + Sync;

/// Sends a proxy's request on to the node and returns the node's answer.
async fn forward(client: &reqwest::Client, target: &str, request: &Value) -> Value {
    client
        .post(target)
        .json(request)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Applies `hook` to each call of a request (one, or a JSON-RPC batch) and its answer. In a
/// batch, a call the hook fails gets a JSON-RPC error, unless it fails them all.
fn each_call(hook: &Hook, n: u64, request: &Value, answer: Value) -> Option<Value> {
    let (Some(calls), Value::Array(answers)) = (request.as_array(), &answer) else {
        return hook(n, request, answer);
    };
    let mut out = Vec::new();
    for answer in answers {
        let call = calls.iter().find(|c| c["id"] == answer["id"])?;
        out.push(hook(n, call, answer.clone()));
    }
    if out.iter().all(Option::is_none) {
        return None;
    }
    let refused = |id: &Value| json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32000, "message": "refused by the proxy"}});
    let out = out
        .into_iter()
        .zip(answers)
        .map(|(answer, original)| answer.unwrap_or_else(|| refused(&original["id"])))
        .collect();
    Some(Value::Array(out))
}

/// A JSON-RPC proxy in front of the node. `hook(request number, call, answer)` may rewrite
/// the node's answer to each call, or return `None` to fail the call (a lone call, or every
/// call of a batch: the request fails with HTTP 500).
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
                let answer = forward(&client, &target, &request).await;
                match each_call(&*hook, n, &request, answer) {
                    Some(v) => axum::Json(v).into_response(),
                    None => (StatusCode::INTERNAL_SERVER_ERROR, "flaky").into_response(),
                }
            }
        }),
    );
    let url = format!("{}/", crate::common::serve_local(app).await);
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
    net.rpc_urls = vec![proxy(c.anvil.url.clone(), hook).await.into()];
    c.watcher_for(net)
}

both_scans! {
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
}

both_scans! {
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
}

both_scans! {
    async fn failing_rpc_calls_are_retried_and_a_second_url_takes_over() {
        let c = Chain::start().await;
        let base = c.app.state.config.network(Network::Bsc, Mode::Test).clone();

        let mut flaky = base.clone();
        flaky.rpc_urls = vec![flaky_proxy(c.anvil.url.clone()).await.into()];
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
        failover.rpc_urls = vec!["http://127.0.0.1:1/".into(), c.anvil.url.clone().into()];
        let w = c.watcher_for(failover);
        let s = c.create("BSC", "USDT", "12.00").await;
        c.pay(&s, "12").await;
        tick(&w).await;
        c.confirm(&w).await;
        assert_eq!(c.session(&id(&s)).await["status"], "Paid");
    }
}

both_scans! {
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
}

both_scans! {
    async fn a_payment_to_an_expired_session_is_recorded_as_late_and_changes_nothing() {
        let c = Chain::start().await;
        let w = c.watcher(Network::Bsc);
        tick(&w).await;
        let s = c.create("BSC", "USDT", "10.00").await;
        c.expire(&s).await;
        c.pay(&s, "10").await;
        tick(&w).await;
        let report = c.confirm(&w).await;
        assert_eq!((report.credited, report.late), (0, 1), "{report:?}");
        let after = c.session(&id(&s)).await;
        assert_eq!(after["status"], "Expired");
        assert_eq!(after["amount_received"], "0");
        assert_eq!(after["transactions"][0]["status"], "Confirmed");
        assert_eq!(after["transactions"][0]["credited"], false);
        assert_eq!(after["transactions"][0]["not_credited_reason"], "late");
        let late: bool = c
            .db_value(
                "SELECT late AND NOT credited FROM transactions WHERE session_id = $1",
                &id(&s),
            )
            .await;
        assert!(late);
    }
}

both_scans! {
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
        assert_eq!(blocked["transactions"][0]["credited"], false);
        assert_eq!(blocked["transactions"][0]["not_credited_reason"], "blocked");
    }
}

both_scans! {
    async fn another_token_is_an_unexpected_payment_and_impossible_values_are_anomalies() {
        let c = Chain::start().await;
        let w = c.watcher(Network::Bsc);
        tick(&w).await;
        let s = c.create("BSC", "USDT", "10.00").await;
        let to = Chain::address_of(&s);
        // 2^200 base units: far beyond what NUMERIC-backed Decimal amounts hold.
        c.anvil.mint(&c.usdt18, &to, U256::from(1) << 200).await;
        // USDC sent to a USDT session.
        let usdc = c
            .anvil
            .transfer(&c.usdc6, &c.payer, &to, units("10", 6))
            .await;
        let report = tick(&w).await;
        assert_eq!((report.recorded, report.anomalies), (1, 1), "{report:?}");
        let kinds: Vec<String> = sqlx::query_scalar("SELECT kind FROM chain_anomalies ORDER BY kind")
            .fetch_all(&c.app.db)
            .await
            .unwrap();
        assert_eq!(kinds, ["value_out_of_range"]);
        let report = c.confirm(&w).await;
        assert_eq!((report.unexpected, report.credited), (1, 0), "{report:?}");
        let after = c.session(&id(&s)).await;
        assert_eq!(after["status"], "Pending");
        assert_eq!(after["amount_received"], "0");
        assert_eq!(
            after["transactions"],
            json!([]),
            "another token is not listed"
        );
        assert_eq!(after["anomalies"], json!({"dust": 0, "unexpected": 1}));
        let events = c.events_of(&id(&s)).await;
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0]["event_type"], "session.unexpected_payment");
        let payment = &events[0]["data"]["unexpected_payment"];
        assert_eq!(payment["tx_hash"], usdc);
        assert_eq!(payment["amount"], "10");
        assert_eq!(payment["currency"], "USDC");
        assert_eq!(
            payment["token_contract"],
            checkout_server::domain::address::evm_checksum(&c.usdc6)
        );
        assert_eq!(events[0]["data"]["anomalies"]["unexpected"], 1);
        // Counted once, whatever the rescans.
        c.anvil.mine(2).await;
        tick(&w).await;
        assert_eq!(c.session(&id(&s)).await["anomalies"]["unexpected"], 1);
    }
}

both_scans! {
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
}

both_scans! {
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
            step.rpc_calls, 4,
            "one batch for the head and the final block's header, then one per chunk \
             (its getLogs and its last header)"
        );
        // Each chunk committed with the cursor.
        let cursor: i64 = c
            .db_value(
                "SELECT block_number FROM chain_cursors WHERE network = $1",
                "BSC",
            )
            .await;
        assert_eq!(cursor as u64, to);
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
}

#[tokio::test]
async fn a_tron_url_is_checked_against_nile_by_default_in_test_mode() {
    let c = Chain::start().await;
    let mut net = c
        .app
        .state
        .config
        .network(Network::Tron, Mode::Test)
        .clone();
    net.chain_id = Network::Tron.testnet().chain_id;
    let err = c.watcher_for(net).tick().await.unwrap_err().to_string();
    assert!(
        err.contains("serves chain id 31337, not the configured 3448148188"),
        "{err}"
    );
    let live = c.app.state.config.network(Network::Tron, Mode::Live);
    assert_eq!(live.chain_id, Some(0x2b6653dc), "TRON mainnet");
}

both_scans! {
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
}

both_scans! {
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
}

// ---- money safety: reorgs across stalls, lateness by block time, dust, long cycles ----

/// A proxy whose every call fails while `broken` is set.
async fn breakable_watcher(c: &Chain) -> (Watcher, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let broken = std::sync::Arc::new(AtomicBool::new(false));
    let cut = broken.clone();
    let w = watcher_behind_proxy(
        c,
        std::sync::Arc::new(move |_, _, answer| (!cut.load(Ordering::SeqCst)).then_some(answer)),
    )
    .await;
    (w, broken)
}

/// Runs cycles until the watcher has caught up with the head.
async fn catch_up(w: &Watcher) -> TickReport {
    for _ in 0..20 {
        let report = tick(w).await;
        if !report.behind {
            return report;
        }
    }
    panic!("the watcher did not catch up");
}

both_scans! {
    async fn a_stall_across_a_tip_reorg_rescans_the_replaced_block_and_credits_the_payment() {
        use std::sync::atomic::Ordering;
        let c = Chain::start().await;
        let (w, broken) = breakable_watcher(&c).await;
        tick(&w).await;
        let s = c.create("BSC", "USDT", "10.00").await;
        let snapshot = c.anvil.snapshot().await;
        // Two blocks (a payment below is a mint, then the transfer: the second block).
        c.anvil.mine(2).await;
        let head = tick(&w).await.head;
        let scanned: i64 = c
            .db_value(
                "SELECT block_number FROM chain_cursors WHERE network = $1",
                "BSC",
            )
            .await;
        assert_eq!(scanned as u64, head, "the new block is scanned at depth 1");

        // The watcher's RPC is cut; meanwhile the tip is reorged: the replacement block carries
        // the payment, and the chain grows far past the confirmation window.
        broken.store(true, Ordering::SeqCst);
        assert!(w.tick().await.is_err());
        c.anvil.revert(&snapshot).await;
        let tx = c.pay(&s, "10").await;
        let receipt = c.anvil.receipt(&tx).await;
        assert_eq!(
            checkout_server::chain::rpc::parse_quantity(receipt["blockNumber"].as_str().unwrap()),
            Some(head),
            "the payment is in the replacement of the block scanned"
        );
        c.anvil.mine(11).await;
        broken.store(false, Ordering::SeqCst);

        catch_up(&w).await;
        tick(&w).await;
        let paid = c.session(&id(&s)).await;
        assert_eq!(paid["status"], "Paid", "{paid}");
        assert_eq!(paid["transactions"][0]["tx_hash"], tx);
    }
}

both_scans! {
    async fn a_reorg_below_the_final_block_walks_back_to_a_matching_checkpoint_and_rescans() {
        let c = Chain::start().await;
        let w = c.watcher(Network::Bsc);
        tick(&w).await;
        let s = c.create("BSC", "USDT", "10.00").await;
        c.anvil.mine(5).await;
        tick(&w).await;
        let snapshot = c.anvil.snapshot().await;
        c.anvil.mine(5).await;
        tick(&w).await;
        let final_before: i64 = c
            .db_value(
                "SELECT final_number FROM chain_cursors WHERE network = $1",
                "BSC",
            )
            .await;

        // A reorg deeper than the confirmations: the blocks from the snapshot on are replaced,
        // and the payment lands below the recorded final block.
        c.anvil.revert(&snapshot).await;
        let tx = c.pay(&s, "10").await;
        let block = checkout_server::chain::rpc::parse_quantity(
            c.anvil.receipt(&tx).await["blockNumber"].as_str().unwrap(),
        )
        .unwrap();
        assert!((block as i64) < final_before, "{block} < {final_before}");
        c.anvil.mine(10).await;

        let report = tick(&w).await;
        let rewound = report.rewound_to.expect("the final block's hash changed");
        assert!(
            rewound < block,
            "rescanned from {rewound}, payment at {block}"
        );
        assert_eq!(report.recorded, 1, "{report:?}");
        tick(&w).await;
        assert_eq!(c.session(&id(&s)).await["status"], "Paid");
    }
}

/// Moves the session's expiry to `at` (unix seconds).
async fn expire_at(c: &Chain, session: &Value, at: u64) {
    sqlx::query(
        "UPDATE checkout_sessions
            SET expires_at = to_timestamp($2), created_at = to_timestamp($2) - interval '30 min'
          WHERE id = $1",
    )
    .bind(id(session))
    .bind(at as f64)
    .execute(&c.app.db)
    .await
    .unwrap();
}

both_scans! {
    async fn a_transfer_mined_after_expires_at_is_late_and_expires_the_open_session() {
        let c = Chain::start().await;
        let w = c.watcher(Network::Bsc);
        tick(&w).await;
        let s = c.create("BSC", "USDT", "10.00").await;
        c.anvil.mine(1).await;
        let now = c.anvil.block_time(None).await;
        // The session expired a second before the newest block; no watcher cycle has run since,
        // so it still looks Pending when the transfer arrives.
        expire_at(&c, &s, now - 1).await;
        let tx = c.pay(&s, "10").await;
        tick(&w).await;
        let report = c.confirm(&w).await;
        assert_eq!((report.credited, report.late), (0, 1), "{report:?}");

        let after = c.session(&id(&s)).await;
        assert_eq!(after["status"], "Expired", "{after}");
        assert_eq!(after["amount_received"], "0");
        let t = &after["transactions"][0];
        assert_eq!(t["tx_hash"], tx);
        assert_eq!(t["status"], "Confirmed");
        assert_eq!(t["credited"], false);
        assert_eq!(t["not_credited_reason"], "late");
        let mut types: Vec<String> = c
            .events_of(&id(&s))
            .await
            .iter()
            .map(|e| e["event_type"].as_str().unwrap().to_owned())
            .collect();
        types.sort();
        assert_eq!(types, ["session.expired", "session.late_payment"]);
        let stored: f64 = c
            .db_value(
                "SELECT extract(epoch FROM block_time)::float8 FROM transactions WHERE session_id = $1",
                &id(&s),
            )
            .await;
        assert!(stored as u64 >= now, "the block's time is recorded");
    }
}

both_scans! {
    async fn an_unconfirmed_transfer_mined_after_expires_at_does_not_hold_back_expiry() {
        let c = Chain::start().await;
        let w = c.watcher(Network::Bsc);
        tick(&w).await;
        let s = c.create("BSC", "USDT", "10.00").await;
        c.anvil.mine(CONFIRMATIONS).await;
        let now = c.anvil.block_time(None).await;
        expire_at(&c, &s, now - 1).await;
        c.pay(&s, "10").await;
        let seen = tick(&w).await;
        assert_eq!((seen.recorded, seen.credited), (1, 0), "{seen:?}");
        // The chain is read past expires_at at full depth; the only transfer is late anyway.
        assert_eq!(expiry_tick(&c.app.state).await.unwrap(), vec![id(&s)]);
        assert_eq!(c.session(&id(&s)).await["status"], "Expired");
        let report = c.confirm(&w).await;
        assert_eq!(report.late, 1, "{report:?}");
        let types: Vec<String> = c
            .events_of(&id(&s))
            .await
            .iter()
            .map(|e| e["event_type"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(types, ["session.expired", "session.late_payment"]);
    }
}

both_scans! {
    async fn block_times_come_from_headers_when_logs_carry_none() {
        let c = Chain::start().await;
        // TRON's /jsonrpc sends logs without blockTimestamp.
        let w = watcher_behind_proxy(
            &c,
            std::sync::Arc::new(|_, request: &Value, mut answer: Value| {
                if request["method"] == "eth_getLogs" {
                    for log in answer["result"].as_array_mut().into_iter().flatten() {
                        log.as_object_mut().unwrap().remove("blockTimestamp");
                    }
                }
                Some(answer)
            }),
        )
        .await;
        tick(&w).await;
        let s = c.create("BSC", "USDT", "10.00").await;
        let tx = c.pay(&s, "10").await;
        c.anvil.mine(1).await;
        let block = checkout_server::chain::rpc::parse_quantity(
            c.anvil.receipt(&tx).await["blockNumber"].as_str().unwrap(),
        )
        .unwrap();
        let report = tick(&w).await;
        assert_eq!(report.recorded, 1, "{report:?}");
        let stored: f64 = c
            .db_value(
                "SELECT extract(epoch FROM block_time)::float8 FROM transactions WHERE session_id = $1",
                &id(&s),
            )
            .await;
        assert_eq!(stored as u64, c.anvil.block_time(Some(block)).await);
    }
}

/// A webhook receiver on loopback that keeps every body.
async fn body_receiver() -> (std::sync::Arc<std::sync::Mutex<Vec<Value>>>, String) {
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = bodies.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let kept = kept.clone();
            async move {
                kept.lock()
                    .unwrap()
                    .push(serde_json::from_slice::<Value>(&body).unwrap());
                StatusCode::OK
            }
        }),
    );
    let url = format!("{}/hook", crate::common::serve_local(app).await);
    (bodies, url)
}

both_scans! {
    async fn a_dust_flood_writes_no_events_and_a_real_payment_after_it_is_delivered_at_once() {
        let c = Chain::start_with("[webhooks]\nallow_private_targets = true").await;
        let (bodies, url) = body_receiver().await;
        let (status, body) = c
            .app
            .request(
                reqwest::Method::POST,
                "/v1/webhook_endpoints",
                Some(&c.app.merchant.test_key),
                Some(json!({ "url": url })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let w = c.watcher(Network::Bsc);
        tick(&w).await;
        let s = c.create("BSC", "USDT", "10.00").await;
        // 300 transfers of one base unit each, in one transaction.
        c.anvil
            .scatter(
                &c.usdt18,
                &c.payer,
                &Chain::address_of(&s),
                U256::from(1),
                300,
            )
            .await;
        let seen = tick(&w).await;
        assert_eq!(
            (seen.logs, seen.recorded, seen.anomalies),
            (300, 0, 300),
            "{seen:?}"
        );
        c.confirm(&w).await;

        let flooded = c.session(&id(&s)).await;
        assert_eq!(flooded["transactions"], json!([]));
        assert_eq!(flooded["anomalies"], json!({"dust": 300, "unexpected": 0}));
        assert!(flooded.to_string().len() < 64 * 1024);
        let (events, bytes): (i64, i64) =
            sqlx::query_as("SELECT count(*), COALESCE(sum(length(data::text)), 0) FROM events")
                .fetch_one(&c.app.db)
                .await
                .unwrap();
        assert!(
            events <= 5 && bytes < 256 * 1024,
            "{events} events, {bytes} bytes"
        );

        // A real payment right after the flood: credited after its confirmations, delivered by
        // the next dispatch.
        c.pay(&s, "10").await;
        tick(&w).await;
        let report = c.confirm(&w).await;
        assert_eq!(report.credited, 1, "{report:?}");
        let dispatcher = checkout_server::webhooks::dispatcher::Dispatcher::new(
            c.app.db.clone(),
            &c.app.state.config.webhooks,
        )
        .unwrap();
        dispatcher.tick().await.unwrap();
        let received = bodies.lock().unwrap().clone();
        assert_eq!(received.len(), 1, "{received:?}");
        assert_eq!(received[0]["event_type"], "session.completed");
        assert_eq!(received[0]["data"]["anomalies"]["dust"], 300);
    }
}

both_scans! {
    async fn two_replicas_with_a_slow_node_advance_through_a_backfill_longer_than_the_lease() {
        let c = Chain::start().await;
        // Every eth_getLogs takes 2 s; the lease is 2 s.
        let slow = proxy_slow_logs(c.anvil.url.clone(), Duration::from_secs(2)).await;
        let mut net = c.app.state.config.network(Network::Bsc, Mode::Test).clone();
        net.rpc_urls = vec![slow.into()];
        net.max_block_range = 4;
        net.max_blocks_per_scan = 16;
        let first = c.watcher_for(net.clone());
        tick(&first).await;
        let s = c.create("BSC", "USDT", "20.00").await;
        c.pay(&s, "10").await;
        c.anvil.mine(6).await;
        c.pay(&s, "10").await;
        c.anvil.mine(6).await;
        let target = c.anvil.rpc("eth_blockNumber", json!([])).await;
        let target = checkout_server::chain::rpc::parse_quantity(target.as_str().unwrap()).unwrap();

        // Both replicas run their loops; a cycle (4 chunks of 2 s) outlives the lease.
        let second = c.watcher_for(net);
        let shutdown = tokio_util::sync::CancellationToken::new();
        let a = tokio::spawn(first.run(shutdown.clone()));
        let b = tokio::spawn(second.run(shutdown.clone()));
        let mut cursor = 0;
        for _ in 0..60 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            cursor = c
                .db_value::<Option<i64>>(
                    "SELECT block_number FROM chain_cursors WHERE network = $1",
                    "BSC",
                )
                .await
                .unwrap_or(0);
            if cursor as u64 >= target && c.session(&id(&s)).await["status"] == "Paid" {
                break;
            }
        }
        shutdown.cancel();
        let _ = tokio::join!(a, b);
        assert!(cursor as u64 >= target, "cursor {cursor}, head {target}");
        let paid = c.session(&id(&s)).await;
        assert_eq!(paid["status"], "Paid", "{paid}");
        assert_eq!(paid["amount_received"], "20");
        let credited: i64 = c
            .db_value(
                "SELECT count(*) FROM transactions WHERE session_id = $1 AND credited",
                &id(&s),
            )
            .await;
        assert_eq!(credited, 2);
    }
}

/// A proxy that delays every `eth_getLogs` answer by `delay`.
async fn proxy_slow_logs(target: String, delay: Duration) -> String {
    use axum::response::IntoResponse;
    let client = reqwest::Client::new();
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move |axum::Json(request): axum::Json<Value>| {
            let (client, target) = (client.clone(), target.clone());
            async move {
                let calls = request.as_array().cloned().unwrap_or(vec![request.clone()]);
                if calls.iter().any(|c| c["method"] == "eth_getLogs") {
                    tokio::time::sleep(delay).await;
                }
                let answer = forward(&client, &target, &request).await;
                axum::Json(answer).into_response()
            }
        }),
    );
    let url = format!("{}/", crate::common::serve_local(app).await);
    url
}

both_scans! {
    async fn an_answer_over_the_size_limit_halves_the_range() {
        let c = Chain::start().await;
        let mut net = c.app.state.config.network(Network::Bsc, Mode::Test).clone();
        net.max_block_range = 16;
        net.max_response_bytes = 2048;
        let w = c.watcher_for(net);
        tick(&w).await;
        let mut sessions = Vec::new();
        for _ in 0..6 {
            let s = c.create("BSC", "USDT", "10.00").await;
            c.pay(&s, "10").await;
            sessions.push(s);
        }
        let report = tick(&w).await;
        assert_eq!(report.recorded, 6, "{report:?}");
        assert!(report.rpc_calls > 6, "the range was split: {report:?}");
        c.confirm(&w).await;
        for s in &sessions {
            assert_eq!(c.session(&id(s)).await["status"], "Paid");
        }
    }
}

both_scans! {
    async fn one_refused_receipt_holds_back_only_its_own_transfer() {
        use std::sync::atomic::Ordering;
        let c = Chain::start().await;
        let refused = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let refusing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (r, on) = (refused.clone(), refusing.clone());
        let w = watcher_behind_proxy(
            &c,
            std::sync::Arc::new(move |_, request: &Value, answer: Value| {
                let refuse = on.load(Ordering::SeqCst)
                    && request["method"] == "eth_getTransactionReceipt"
                    && request["params"][0].as_str() == Some(r.lock().unwrap().as_str());
                (!refuse).then_some(answer)
            }),
        )
        .await;
        tick(&w).await;
        let a = c.create("BSC", "USDT", "10.00").await;
        let b = c.create("BSC", "USDT", "10.00").await;
        *refused.lock().unwrap() = c.pay(&a, "10").await;
        c.pay(&b, "10").await;
        tick(&w).await;
        let report = c.confirm(&w).await;
        assert_eq!((report.credited, report.errors), (1, 1), "{report:?}");
        assert_eq!(c.session(&id(&a)).await["status"], "Pending");
        assert_eq!(c.session(&id(&b)).await["status"], "Paid");

        // The refused one has waited past max_lag_seconds: /readyz says so.
        sqlx::query("UPDATE transactions SET due_since = now() - interval '1 hour' WHERE status = 'Unconfirmed'")
            .execute(&c.app.db)
            .await
            .unwrap();
        tick(&c.watcher(Network::Tron)).await;
        let res = c
            .app
            .client
            .get(format!("{}/readyz", c.app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body: Value = res.json().await.unwrap();
        let bsc = &body["checks"]["watchers"]["BSC/test"];
        assert_eq!(bsc["status"], "degraded", "{body}");
        assert!(bsc["reason"].as_str().unwrap().contains("settled"), "{bsc}");
        assert!(
            bsc["last_error"]
                .as_str()
                .unwrap()
                .contains("could not be settled"),
            "{bsc}"
        );

        // The node answers again: credited, and ready again.
        refusing.store(false, Ordering::SeqCst);
        let report = tick(&w).await;
        assert_eq!(report.credited, 1, "{report:?}");
        assert_eq!(c.session(&id(&a)).await["status"], "Paid");
        let res = c
            .app
            .client
            .get(format!("{}/readyz", c.app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
}

both_scans! {
    async fn a_reorg_that_shifts_a_batch_payouts_log_indexes_credits_each_payment_once() {
        let c = Chain::start().await;
        let w = c.watcher(Network::Bsc);
        tick(&w).await;
        let x = c.create("BSC", "USDT", "10.00").await;
        let y = c.create("BSC", "USDT", "20.00").await;
        c.anvil.mint(&c.usdt18, &c.payer, units("30", 18)).await;
        let snapshot = c.anvil.snapshot().await;
        // One transaction pays both sessions (logs 0 and 1 of its block).
        let batch = c
            .anvil
            .sign_transfer_many(
                &c.usdt18,
                &c.payer,
                &[
                    (Chain::address_of(&x), units("10", 18)),
                    (Chain::address_of(&y), units("20", 18)),
                ],
            )
            .await;
        let tx = c.anvil.send_raw(&batch).await;
        assert_eq!(tick(&w).await.recorded, 2);

        // The block is replaced: the same transaction is mined again behind another transfer,
        // so its logs are 1 and 2 now; index 1 names the other session's payment.
        c.anvil.revert(&snapshot).await;
        c.anvil.set_automine(false).await;
        c.anvil
            .mint_first(&c.usdt18, &c.anvil.accounts[2], units("1", 18))
            .await;
        assert_eq!(c.anvil.send_raw(&batch).await, tx, "the same transaction");
        c.anvil.mine(1).await;
        c.anvil.set_automine(true).await;
        let receipt = c.anvil.receipt(&tx).await;
        let first_log = checkout_server::chain::rpc::parse_quantity(
            receipt["logs"][0]["logIndex"].as_str().unwrap(),
        );
        assert_eq!(first_log, Some(1), "the payout's logs moved");

        tick(&w).await;
        c.confirm(&w).await;
        tick(&w).await;
        for (s, amount) in [(&x, "10"), (&y, "20")] {
            let paid = c.session(&id(s)).await;
            assert_eq!(paid["status"], "Paid", "{paid}");
            assert_eq!(paid["amount_received"], amount);
            let credited: i64 = c
                .db_value(
                    "SELECT count(*) FROM transactions WHERE session_id = $1 AND credited",
                    &id(s),
                )
                .await;
            assert_eq!(credited, 1, "{paid}");
        }
    }
}

both_scans! {
    async fn expiry_waits_until_the_final_block_is_strictly_past_expires_at() {
        let c = Chain::start().await;
        let w = c.watcher(Network::Bsc);
        tick(&w).await;
        let s = c.create("BSC", "USDT", "10.00").await;
        // Several blocks in one second (Arbitrum, BSC): the final block's time equals expires_at,
        // and a block above it, not yet final, could still hold a payment made in time.
        let t = c.anvil.block_time(None).await + 1;
        c.anvil.rpc("evm_setNextBlockTimestamp", json!([t])).await;
        c.anvil
            .rpc(
                "anvil_mine",
                json!([format!("{:#x}", CONFIRMATIONS + 2), "0x0"]),
            )
            .await;
        expire_at(&c, &s, t).await;
        // Wall-clock time passes expires_at too.
        tokio::time::sleep(Duration::from_millis(2100)).await;
        tick(&w).await;
        let safe: f64 = c
            .db_value(
                "SELECT extract(epoch FROM safe_time)::float8 FROM chain_cursors WHERE network = $1",
                "BSC",
            )
            .await;
        assert_eq!(safe as u64, t, "the final block is in the expiry second");
        assert!(expiry_tick(&c.app.state).await.unwrap().is_empty());
        // The chain moves past that second: now it expires.
        c.anvil
            .rpc("evm_setNextBlockTimestamp", json!([t + 1]))
            .await;
        c.anvil.mine(CONFIRMATIONS).await;
        tick(&w).await;
        assert_eq!(expiry_tick(&c.app.state).await.unwrap(), vec![id(&s)]);
    }
}

both_scans! {
    async fn a_node_that_falls_behind_the_final_block_is_left_for_the_next_url() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let c = Chain::start().await;
        // While `frozen` is set, the first URL answers as a node stuck at that height.
        let frozen = std::sync::Arc::new(AtomicU64::new(u64::MAX));
        let f = frozen.clone();
        let lagging = proxy(
            c.anvil.url.clone(),
            std::sync::Arc::new(move |_, request: &Value, mut answer: Value| {
                let stuck = f.load(Ordering::SeqCst);
                if stuck != u64::MAX {
                    match request["method"].as_str().unwrap_or("") {
                        "eth_blockNumber" => answer["result"] = json!(format!("{stuck:#x}")),
                        "eth_getBlockByNumber" => {
                            let asked = request["params"][0]
                                .as_str()
                                .and_then(checkout_server::chain::rpc::parse_quantity);
                            if asked.is_some_and(|n| n > stuck) {
                                answer["result"] = Value::Null;
                            }
                        }
                        _ => {}
                    }
                }
                Some(answer)
            }),
        )
        .await;
        let mut net = c.app.state.config.network(Network::Bsc, Mode::Test).clone();
        net.rpc_urls = vec![lagging.into(), c.anvil.url.clone().into()];
        let w = c.watcher_for(net);
        tick(&w).await;
        let s = c.create("BSC", "USDT", "10.00").await;
        c.anvil.mine(5).await;
        let head = tick(&w).await.head;
        frozen.store(head - 4, Ordering::SeqCst);
        c.pay(&s, "10").await;
        c.anvil.mine(CONFIRMATIONS).await;
        for _ in 0..4 {
            tick(&w).await;
        }
        assert_eq!(c.session(&id(&s)).await["status"], "Paid");
    }
}

both_scans! {
    async fn a_failing_scan_does_not_hold_back_transfers_already_found() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let c = Chain::start().await;
        let logs_fail = std::sync::Arc::new(AtomicBool::new(false));
        let fail = logs_fail.clone();
        let w = watcher_behind_proxy(
            &c,
            std::sync::Arc::new(move |_, request: &Value, answer: Value| {
                let refuse = fail.load(Ordering::SeqCst) && request["method"] == "eth_getLogs";
                (!refuse).then_some(answer)
            }),
        )
        .await;
        tick(&w).await;
        let s = c.create("BSC", "USDT", "10.00").await;
        c.pay(&s, "10").await;
        assert_eq!(tick(&w).await.recorded, 1);
        // The node now fails every log query; the payment reaches its confirmations.
        logs_fail.store(true, Ordering::SeqCst);
        c.anvil.mine(CONFIRMATIONS).await;
        assert!(w.tick().await.is_err(), "the scan failed");
        assert_eq!(c.session(&id(&s)).await["status"], "Paid");
    }
}

/// The watcher over a proxy that keeps every `eth_getLogs` request it forwards.
async fn watcher_logging_get_logs(
    c: &Chain,
    tweak: impl FnOnce(&mut checkout_server::config::NetworkConfig),
) -> (Watcher, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = requests.clone();
    let mut net = c.app.state.config.network(Network::Bsc, Mode::Test).clone();
    net.rpc_urls = vec![proxy(
        c.anvil.url.clone(),
        std::sync::Arc::new(move |_, request: &Value, answer| {
            if request["method"] == "eth_getLogs" {
                kept.lock().unwrap().push(request["params"][0].clone());
            }
            Some(answer)
        }),
    )
    .await
    .into()];
    tweak(&mut net);
    (c.watcher_for(net), requests)
}

/// The recipients a `eth_getLogs` filter names in `topics[2]`, as 20-byte addresses.
fn recipients_of(filter: &Value) -> Vec<[u8; 20]> {
    filter["topics"][2]
        .as_array()
        .expect("a recipient list")
        .iter()
        .map(|word| {
            let text = word.as_str().unwrap();
            assert_eq!(&text[..26], format!("0x{}", "0".repeat(24)), "{text}");
            parse_evm_address(&format!("0x{}", &text[26..])).unwrap()
        })
        .collect()
}

#[tokio::test]
async fn with_recipient_scans_the_node_is_asked_only_for_watched_addresses_and_not_at_all_without()
{
    let c = Chain::start().await;
    let (w, requests) = watcher_logging_get_logs(&c, |_| {}).await;
    tick(&w).await;
    // Transfers of the token to addresses nobody watches, and no session yet.
    let stranger = [0x5a; 20];
    c.anvil
        .transfer(&c.usdt18, &c.payer, &stranger, units("3", 18))
        .await;
    let report = tick(&w).await;
    assert!(report.scanned.is_some(), "{report:?}");
    assert!(
        requests.lock().unwrap().is_empty(),
        "no watched address: no eth_getLogs call"
    );

    let s = c.create("BSC", "USDT", "10.00").await;
    c.anvil
        .transfer(&c.usdt18, &c.payer, &stranger, units("4", 18))
        .await;
    c.pay(&s, "10").await;
    let report = tick(&w).await;
    assert_eq!(
        (report.logs, report.recorded),
        (1, 1),
        "only the payment's log came back: {report:?}"
    );
    let asked = requests.lock().unwrap().clone();
    assert!(!asked.is_empty());
    for filter in &asked {
        assert_eq!(filter["topics"][1], Value::Null, "{filter}");
        assert_eq!(
            recipients_of(filter),
            vec![Chain::address_of(&s)],
            "{filter}"
        );
    }
    assert_eq!(c.confirm(&w).await.credited, 1);
    assert_eq!(c.session(&id(&s)).await["status"], "Paid");
}

#[tokio::test]
async fn watched_addresses_are_asked_for_in_chunks_of_the_configured_size() {
    let c = Chain::start().await;
    let (w, requests) = watcher_logging_get_logs(&c, |net| net.max_addresses_per_call = 2).await;
    tick(&w).await;
    let mut sessions = Vec::new();
    for _ in 0..5 {
        let s = c.create("BSC", "USDT", "10.00").await;
        c.pay(&s, "10").await;
        sessions.push(s);
    }
    requests.lock().unwrap().clear();
    let report = tick(&w).await;
    assert_eq!(
        report.recorded,
        5,
        "{report:?} {:?}",
        requests.lock().unwrap()
    );
    let asked = requests.lock().unwrap().clone();
    let sizes: Vec<usize> = asked.iter().map(|f| recipients_of(f).len()).collect();
    assert_eq!(sizes, vec![2, 2, 1], "one range, three calls: {sizes:?}");
    let mut named: Vec<[u8; 20]> = asked.iter().flat_map(recipients_of).collect();
    let mut expected: Vec<[u8; 20]> = sessions.iter().map(Chain::address_of).collect();
    named.sort();
    expected.sort();
    assert_eq!(named, expected, "every watched address, each once");
    c.confirm(&w).await;
    for s in &sessions {
        assert_eq!(c.session(&id(s)).await["status"], "Paid");
    }
}

#[tokio::test]
async fn a_closed_session_stays_watched_for_the_late_window_and_then_is_not_asked_for() {
    let c = Chain::start().await;
    let (w, requests) = watcher_logging_get_logs(&c, |_| {}).await;
    tick(&w).await;
    let s = c.create("BSC", "USDT", "10.00").await;
    c.expire(&s).await;
    // Expired a moment ago: a payment now is late, and still seen.
    c.pay(&s, "10").await;
    assert_eq!(tick(&w).await.recorded, 1);
    let report = c.confirm(&w).await;
    assert_eq!(report.late, 1, "{report:?}");

    // Past the window (72 h after expires_at): no longer asked about.
    sqlx::query(
        "UPDATE checkout_sessions SET expires_at = now() - interval '73 hours',
                created_at = now() - interval '74 hours' WHERE id = $1",
    )
    .bind(id(&s))
    .execute(&c.app.db)
    .await
    .unwrap();
    requests.lock().unwrap().clear();
    c.pay(&s, "1").await;
    let report = tick(&w).await;
    assert_eq!(report.recorded, 0, "{report:?}");
    assert!(
        requests.lock().unwrap().is_empty(),
        "nothing watched: no eth_getLogs call"
    );
}

/// A node in front of anvil that keeps the headers of every request it forwards.
async fn header_recording_proxy(
    target: String,
) -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<axum::http::HeaderMap>>>,
) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = seen.clone();
    let client = reqwest::Client::new();
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, axum::Json(request): axum::Json<Value>| {
                let (client, target, kept) = (client.clone(), target.clone(), kept.clone());
                async move {
                    kept.lock().unwrap().push(headers);
                    let answer = forward(&client, &target, &request).await;
                    axum::Json(answer)
                }
            },
        ),
    );
    let url = format!("{}/", crate::common::serve_local(app).await);
    (url, seen)
}

#[tokio::test]
async fn each_rpc_url_gets_only_its_own_headers() {
    let c = Chain::start().await;
    let (keyed, keyed_seen) = header_recording_proxy(c.anvil.url.clone()).await;
    let (public, public_seen) = header_recording_proxy(c.anvil.url.clone()).await;
    let toml = format!(
        r#"
[networks.BSC.test]
chain_id = 31337
tokens.USDT = {{ contract = "0x55d398326f99059fF775485246999027B3197955", decimals = 18 }}
rpc_headers = {{ X-Everyone = "shared" }}
rpc_urls = [
  {{ url = "{keyed}", headers = {{ TRON-PRO-API-KEY = "secret-key" }} }},
  "{public}",
]
"#
    );
    let config = checkout_server::config::Config::from_toml(&toml).unwrap();
    let net = config.network(Network::Bsc, Mode::Test).clone();
    assert!(
        !format!("{net:?}").contains("secret-key"),
        "redacted in Debug"
    );
    // The first cycle checks the chain id of every URL: both are asked.
    tick(&c.watcher_for(net)).await;
    let keyed_seen = keyed_seen.lock().unwrap().clone();
    let public_seen = public_seen.lock().unwrap().clone();
    assert!(!keyed_seen.is_empty() && !public_seen.is_empty());
    for headers in &keyed_seen {
        assert_eq!(headers["tron-pro-api-key"], "secret-key");
        assert_eq!(headers["x-everyone"], "shared");
    }
    for headers in &public_seen {
        assert!(headers.get("tron-pro-api-key").is_none(), "{headers:?}");
        assert_eq!(headers["x-everyone"], "shared");
    }
}

#[tokio::test]
async fn a_url_with_a_rate_limit_is_asked_no_faster_than_it() {
    use checkout_server::chain::rpc::{EndpointSpec, RpcClient};
    let anvil = crate::chain_support::Anvil::start().await;
    let paced = EndpointSpec {
        url: anvil.url.clone(),
        max_requests_per_second: Some(20),
        ..EndpointSpec::default()
    };
    let rpc = RpcClient::new(&[paced], fast_retries(), 100).unwrap();
    let started = std::time::Instant::now();
    for _ in 0..11 {
        rpc.block_number().await.unwrap();
    }
    // Eleven requests at 20 a second: ten gaps of 50 ms at least.
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
}

/// A node that answers every call with `status` (and `Retry-After`, if given) or, for
/// status 200, block number 16; it counts the calls.
async fn canned_node(
    status: StatusCode,
    retry_after: Option<&'static str>,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use axum::response::IntoResponse;
    use std::sync::atomic::Ordering;
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = calls.clone();
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move || {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                if status == StatusCode::OK {
                    return axum::Json(json!({ "jsonrpc": "2.0", "id": 1, "result": "0x10" }))
                        .into_response();
                }
                let mut response = (status, "slow down").into_response();
                if let Some(after) = retry_after {
                    response
                        .headers_mut()
                        .insert("retry-after", after.parse().unwrap());
                }
                response
            }
        }),
    );
    let url = format!("{}/", crate::common::serve_local(app).await);
    (url, calls)
}

#[tokio::test]
async fn a_provider_that_limits_us_is_left_alone_while_the_next_url_answers() {
    use checkout_server::chain::rpc::{EndpointSpec, RpcClient, RpcError};
    use std::sync::atomic::Ordering;
    let spec = |url: &String| EndpointSpec {
        url: url.clone(),
        ..EndpointSpec::default()
    };
    for status in [
        StatusCode::TOO_MANY_REQUESTS,
        StatusCode::FORBIDDEN,
        StatusCode::SERVICE_UNAVAILABLE,
    ] {
        let (limited, limited_calls) = canned_node(status, Some("60")).await;
        let (healthy, healthy_calls) = canned_node(StatusCode::OK, None).await;
        let rpc = RpcClient::new(&[spec(&limited), spec(&healthy)], fast_retries(), 100).unwrap();
        let started = std::time::Instant::now();
        for _ in 0..5 {
            assert_eq!(rpc.block_number().await.unwrap(), 16);
        }
        assert_eq!(
            limited_calls.load(Ordering::SeqCst),
            1,
            "{status}: asked once, then left alone for its Retry-After"
        );
        assert_eq!(healthy_calls.load(Ordering::SeqCst), 5);
        assert!(started.elapsed() < Duration::from_secs(5), "no waiting");
    }

    // Alone, and limited without Retry-After: refused at once, and not asked again for 30 s.
    let (limited, limited_calls) = canned_node(StatusCode::TOO_MANY_REQUESTS, None).await;
    let rpc = RpcClient::new(&[spec(&limited)], fast_retries(), 100).unwrap();
    for _ in 0..3 {
        let e = rpc.block_number().await.unwrap_err();
        assert!(
            matches!(e, RpcError::RateLimited { .. } | RpcError::AllPaused),
            "{e}"
        );
    }
    assert_eq!(limited_calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_spent_daily_budget_moves_calls_to_the_next_url() {
    use checkout_server::chain::rpc::{EndpointSpec, RpcClient};
    use std::sync::atomic::Ordering;
    let (budgeted, budgeted_calls) = canned_node(StatusCode::OK, None).await;
    let (other, other_calls) = canned_node(StatusCode::OK, None).await;
    let endpoints = [
        EndpointSpec {
            url: budgeted,
            max_requests_per_day: Some(3),
            ..EndpointSpec::default()
        },
        EndpointSpec {
            url: other,
            ..EndpointSpec::default()
        },
    ];
    let rpc = RpcClient::new(&endpoints, fast_retries(), 100).unwrap();
    for _ in 0..5 {
        assert_eq!(rpc.block_number().await.unwrap(), 16);
    }
    assert_eq!(
        budgeted_calls.load(Ordering::SeqCst),
        3,
        "its budget, no more"
    );
    assert_eq!(other_calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_failover_to_a_url_serving_another_chain_is_refused_before_it_serves() {
    use checkout_server::chain::rpc::{EndpointSpec, RpcClient, RpcError};
    use std::sync::atomic::{AtomicBool, Ordering};
    let anvil = crate::chain_support::Anvil::start().await;
    let down = std::sync::Arc::new(AtomicBool::new(false));
    let d = down.clone();
    let first = proxy(
        anvil.url.clone(),
        std::sync::Arc::new(move |_, _, answer| (!d.load(Ordering::SeqCst)).then_some(answer)),
    )
    .await;
    // Answers 0x10 to everything: chain 16, not the configured 31337.
    let (other_chain, other_calls) = canned_node(StatusCode::OK, None).await;
    let spec = |url: String| EndpointSpec {
        url,
        ..EndpointSpec::default()
    };
    let rpc = RpcClient::new(&[spec(first), spec(other_chain)], fast_retries(), 100)
        .unwrap()
        .with_chain_id(Some(31337));
    rpc.block_number().await.expect("the first URL serves");
    assert_eq!(other_calls.load(Ordering::SeqCst), 0);

    down.store(true, Ordering::SeqCst);
    let e = rpc.block_number().await.unwrap_err();
    assert!(
        matches!(
            e,
            RpcError::WrongChain { found: 16, .. } | RpcError::Http(_)
        ),
        "{e}"
    );
    assert_eq!(
        other_calls.load(Ordering::SeqCst),
        1,
        "asked its chain id once, then left alone; never asked for data"
    );
    down.store(false, Ordering::SeqCst);
    rpc.block_number()
        .await
        .expect("the first URL serves again");
    assert_eq!(other_calls.load(Ordering::SeqCst), 1);
}

/// A proxy that refuses JSON-RPC batches (HTTP 400), as some providers do; counts them.
async fn batch_refusing_proxy(
    target: String,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use axum::response::IntoResponse;
    use std::sync::atomic::Ordering;
    let batches = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = batches.clone();
    let client = reqwest::Client::new();
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move |axum::Json(request): axum::Json<Value>| {
            let (client, target, counted) = (client.clone(), target.clone(), counted.clone());
            async move {
                if request.is_array() {
                    counted.fetch_add(1, Ordering::SeqCst);
                    return (StatusCode::BAD_REQUEST, "batch requests are not supported")
                        .into_response();
                }
                let answer = forward(&client, &target, &request).await;
                axum::Json(answer).into_response()
            }
        }),
    );
    let url = format!("{}/", crate::common::serve_local(app).await);
    (url, batches)
}

both_scans! {
    async fn a_node_that_refuses_batches_is_asked_one_call_at_a_time() {
        use std::sync::atomic::Ordering;
        let c = Chain::start().await;
        let (url, batches) = batch_refusing_proxy(c.anvil.url.clone()).await;
        let mut net = c.app.state.config.network(Network::Bsc, Mode::Test).clone();
        net.rpc_urls = vec![url.into()];
        let w = c.watcher_for(net);
        tick(&w).await;
        let s = c.create("BSC", "USDT", "10.00").await;
        c.pay(&s, "10").await;
        tick(&w).await;
        let report = c.confirm(&w).await;
        assert_eq!(report.credited, 1, "{report:?}");
        assert_eq!(c.session(&id(&s)).await["status"], "Paid");
        assert_eq!(batches.load(Ordering::SeqCst), 1, "tried once, then not for an hour");
        c.anvil.mine(1).await;
        let cycle = tick(&w).await;
        // A contract scan asks for the new and the newly final blocks apart (the blocks
        // between are not downloaded again); by recipient one query covers both.
        let contract = MODES.try_with(|m| m.0 == Scan::Contract).unwrap_or(false);
        assert_eq!(
            cycle.rpc_calls,
            if contract { 6 } else { 5 },
            "the head, a header to check, finality (by tag) or the new final header (by \
             depth), the eth_getLogs, the last header: {cycle:?}"
        );
    }
}

#[tokio::test]
async fn a_node_that_refuses_the_finalized_tag_is_counted_by_depth_and_asked_again_later() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let c = MODES
        .scope((Scan::Recipients, Finality::Tag), Chain::start())
        .await;
    let asked = std::sync::Arc::new(AtomicU64::new(0));
    let a = asked.clone();
    let w = watcher_behind_proxy(
        &c,
        std::sync::Arc::new(move |_, request: &Value, answer: Value| {
            if request["params"][0] == "finalized" {
                a.fetch_add(1, Ordering::SeqCst);
                return Some(json!({"jsonrpc": "2.0", "id": answer["id"],
                    "error": {"code": -32602, "message": "invalid block number"}}));
            }
            Some(answer)
        }),
    )
    .await;
    tick(&w).await;
    let s = c.create("BSC", "USDT", "10.00").await;
    c.pay(&s, "10").await;
    tick(&w).await;
    let report = c.confirm(&w).await;
    assert_eq!(
        report.credited, 1,
        "credited at its confirmations: {report:?}"
    );
    assert_eq!(
        asked.load(Ordering::SeqCst),
        1,
        "not asked again for a while"
    );
}

#[tokio::test]
async fn by_tag_a_transfer_waits_for_the_finalized_block_whatever_its_confirmations() {
    let c = MODES
        .scope((Scan::Recipients, Finality::Tag), Chain::start())
        .await;
    let pinned: std::sync::Arc<std::sync::Mutex<Option<Value>>> = Default::default();
    let p = pinned.clone();
    let w = watcher_behind_proxy(
        &c,
        std::sync::Arc::new(move |_, request: &Value, mut answer: Value| {
            if request["params"][0] == "finalized" {
                if let Some(header) = p.lock().unwrap().clone() {
                    answer["result"] = header;
                }
            }
            Some(answer)
        }),
    )
    .await;
    tick(&w).await;
    let s = c.create("BSC", "USDT", "10.00").await;
    // Finality stalls just before the payment's block.
    let before = c
        .anvil
        .rpc("eth_getBlockByNumber", json!(["latest", false]))
        .await;
    *pinned.lock().unwrap() = Some(before.clone());
    c.pay(&s, "10").await;
    c.anvil.mine(20).await;
    for _ in 0..2 {
        let report = tick(&w).await;
        assert_eq!(report.credited, 0, "{report:?}");
        assert_eq!(
            report.final_limit,
            checkout_server::chain::rpc::parse_quantity(before["number"].as_str().unwrap())
                .unwrap()
        );
    }
    assert_eq!(
        c.session(&id(&s)).await["status"],
        "Pending",
        "seen, not final"
    );
    // Finality resumes.
    *pinned.lock().unwrap() = None;
    let report = tick(&w).await;
    assert_eq!(report.credited, 1, "{report:?}");
    assert_eq!(c.session(&id(&s)).await["status"], "Paid");
}

both_scans! {
    async fn a_caught_up_cycle_makes_one_request_and_one_more_when_blocks_came() {
        let c = Chain::start().await;
        let w = c.watcher(Network::Bsc);
        tick(&w).await;
        let s = c.create("BSC", "USDT", "10.00").await;
        c.anvil.mine(1).await;
        tick(&w).await;
        let idle = tick(&w).await;
        assert_eq!(idle.rpc_calls, 1, "the head, the final block and finality in one batch: {idle:?}");
        c.pay(&s, "10").await;
        let seen = tick(&w).await;
        assert_eq!(seen.recorded, 1);
        assert_eq!(seen.rpc_calls, 2, "and the new blocks' logs with their headers: {seen:?}");
        assert_eq!(
            seen.scanned.map(|(from, _)| from),
            Some(idle.head + 1),
            "only the new blocks: the last one scanned still holds"
        );
        c.anvil.mine(CONFIRMATIONS).await;
        let credited = tick(&w).await;
        assert_eq!(credited.credited, 1);
        assert_eq!(credited.rpc_calls, 3, "and the receipt: {credited:?}");
    }
}

#[tokio::test]
async fn auto_asks_for_the_recipients_while_they_fit_one_call_and_for_the_contract_beyond() {
    let c = Chain::start().await;
    let (w, requests) = watcher_logging_get_logs(&c, |net| {
        net.scan = Scan::Auto;
        net.max_addresses_per_call = 2;
    })
    .await;
    tick(&w).await;
    let first = c.create("BSC", "USDT", "10.00").await;
    c.pay(&first, "10").await;
    requests.lock().unwrap().clear();
    assert_eq!(tick(&w).await.recorded, 1);
    let asked = requests.lock().unwrap().clone();
    assert!(!asked.is_empty());
    for filter in &asked {
        assert_eq!(recipients_of(filter), vec![Chain::address_of(&first)]);
    }

    let mut later = Vec::new();
    for _ in 0..2 {
        let s = c.create("BSC", "USDT", "10.00").await;
        c.pay(&s, "10").await;
        later.push(s);
    }
    requests.lock().unwrap().clear();
    assert_eq!(
        tick(&w).await.recorded,
        2,
        "three watched: the whole contract"
    );
    let asked = requests.lock().unwrap().clone();
    assert!(!asked.is_empty());
    for filter in &asked {
        assert_eq!(
            filter["topics"],
            json!([checkout_server::chain::rpc::TRANSFER_TOPIC])
        );
    }
    c.confirm(&w).await;
    for s in std::iter::once(&first).chain(&later) {
        assert_eq!(c.session(&id(s)).await["status"], "Paid");
    }
}

both_scans! {
    async fn a_block_whose_logs_a_node_missed_is_scanned_again_as_it_becomes_final() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let c = Chain::start().await;
        // While armed with a block number, the first eth_getLogs answer covering that block
        // comes back empty (a lagging backend, or TRON's blocks missing the log index).
        let armed = std::sync::Arc::new(AtomicU64::new(u64::MAX));
        let a = armed.clone();
        let w = watcher_behind_proxy(
            &c,
            std::sync::Arc::new(move |_, request: &Value, mut answer: Value| {
                let target = a.load(Ordering::SeqCst);
                if request["method"] == "eth_getLogs" && target != u64::MAX {
                    let bound = |key: &str| {
                        checkout_server::chain::rpc::parse_quantity(
                            request["params"][0][key].as_str().unwrap(),
                        )
                        .unwrap()
                    };
                    if bound("fromBlock") <= target && target <= bound("toBlock") {
                        a.store(u64::MAX, Ordering::SeqCst);
                        answer["result"] = json!([]);
                    }
                }
                Some(answer)
            }),
        )
        .await;
        tick(&w).await;
        let s = c.create("BSC", "USDT", "10.00").await;
        let tx = c.pay(&s, "10").await;
        let receipt = c.anvil.rpc("eth_getTransactionReceipt", json!([tx])).await;
        let block =
            checkout_server::chain::rpc::parse_quantity(receipt["blockNumber"].as_str().unwrap())
                .unwrap();
        armed.store(block, Ordering::SeqCst);
        let missed = tick(&w).await;
        assert_eq!(missed.recorded, 0, "the node's answer missed it: {missed:?}");
        assert_eq!(armed.load(Ordering::SeqCst), u64::MAX, "the answer was emptied");
        let report = c.confirm(&w).await;
        assert_eq!((report.recorded, report.credited), (1, 1), "{report:?}");
        assert_eq!(c.session(&id(&s)).await["status"], "Paid");
    }
}

#[tokio::test]
async fn java_trons_own_limiter_answer_pauses_the_url_and_does_not_turn_batches_off() {
    use checkout_server::chain::rpc::{EndpointSpec, RpcClient, RpcError};
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(|| async {
            axum::Json(json!({ "Error": "lack of computing resources" }))
        }),
    );
    let url = format!("{}/", crate::common::serve_local(app).await);
    let spec = EndpointSpec {
        url,
        ..EndpointSpec::default()
    };
    let rpc = RpcClient::new(std::slice::from_ref(&spec), fast_retries(), 100).unwrap();
    let e = rpc.block_number().await.unwrap_err();
    assert!(matches!(e, RpcError::RateLimited { .. }), "{e}");
    let rpc = RpcClient::new(&[spec], fast_retries(), 100).unwrap();
    let e = rpc.headers(&[1, 2]).await.unwrap_err();
    assert!(
        matches!(e, RpcError::RateLimited { .. }),
        "a limit, not a refused batch: {e}"
    );
}

#[tokio::test]
async fn a_lost_finalized_answer_makes_nothing_newly_final_and_the_tag_is_asked_again() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let c = MODES
        .scope((Scan::Recipients, Finality::Tag), Chain::start())
        .await;
    let failing = std::sync::Arc::new(AtomicBool::new(false));
    let asked = std::sync::Arc::new(AtomicU64::new(0));
    let (f, a) = (failing.clone(), asked.clone());
    let w = watcher_behind_proxy(
        &c,
        std::sync::Arc::new(move |_, request: &Value, answer: Value| {
            if request["params"][0] == "finalized" {
                a.fetch_add(1, Ordering::SeqCst);
                if f.load(Ordering::SeqCst) {
                    return Some(json!({"jsonrpc": "2.0", "id": answer["id"],
                        "error": {"code": -32000, "message": "internal error"}}));
                }
            }
            Some(answer)
        }),
    )
    .await;
    tick(&w).await;
    let s = c.create("BSC", "USDT", "10.00").await;
    c.pay(&s, "10").await;
    failing.store(true, Ordering::SeqCst);
    c.anvil.mine(10).await;
    let before = asked.load(Ordering::SeqCst);
    for _ in 0..2 {
        let report = tick(&w).await;
        assert_eq!(
            report.credited, 0,
            "not credited by depth meanwhile: {report:?}"
        );
    }
    assert_eq!(
        asked.load(Ordering::SeqCst),
        before + 2,
        "asked every cycle"
    );
    assert_eq!(c.session(&id(&s)).await["status"], "Pending");
    failing.store(false, Ordering::SeqCst);
    let report = tick(&w).await;
    assert_eq!(report.credited, 1, "{report:?}");
}

#[tokio::test]
async fn a_node_on_another_fork_cannot_undo_a_transfer_in_a_final_block() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let c = Chain::start().await;
    // The second URL is a node of the same chain id on another history (a minority fork).
    let other = crate::chain_support::Anvil::start().await;
    let refusing = std::sync::Arc::new(AtomicBool::new(false));
    let r = refusing.clone();
    let first = proxy(
        c.anvil.url.clone(),
        std::sync::Arc::new(move |_, request: &Value, answer: Value| {
            let refuse =
                r.load(Ordering::SeqCst) && request["method"] == "eth_getTransactionReceipt";
            (!refuse).then_some(answer)
        }),
    )
    .await;
    let mut net = c.app.state.config.network(Network::Bsc, Mode::Test).clone();
    net.rpc_urls = vec![first.into(), other.url.clone().into()];
    let w = c.watcher_for(net);
    tick(&w).await;
    let s = c.create("BSC", "USDT", "10.00").await;
    let tx = c.pay(&s, "10").await;
    let receipt = c.anvil.rpc("eth_getTransactionReceipt", json!([tx])).await;
    let block =
        checkout_server::chain::rpc::parse_quantity(receipt["blockNumber"].as_str().unwrap())
            .unwrap();
    other.mine(block + 1).await;
    tick(&w).await;
    // The block becomes final through the first URL; its receipt is then asked of the other
    // node, which knows no such transaction and has another block at that height.
    refusing.store(true, Ordering::SeqCst);
    let report = c.confirm(&w).await;
    assert_eq!(
        (report.credited, report.not_found),
        (0, 0),
        "not undone on its word: {report:?}"
    );
    assert_eq!(
        c.session(&id(&s)).await["transactions"][0]["status"],
        "Unconfirmed"
    );
    refusing.store(false, Ordering::SeqCst);
    let report = tick(&w).await;
    assert_eq!(report.credited, 1, "{report:?}");
    assert_eq!(c.session(&id(&s)).await["status"], "Paid");
}
