//! The watcher against real TRON answers (`../shared/fixtures/tron-jsonrpc.md`), replayed by a
//! stub node: a mainnet USDT log, TRON's block fields (`stateRoot: "0x"`, zero gas, timestamps
//! in seconds and in milliseconds), java-tron's range and result-cap errors, its `finalized`
//! (solidified) block, and a node lagging behind the head it reported.

use crate::common::TestApp;
use checkout_server::chain::rpc::RetryPolicy;
use checkout_server::chain::watcher::Watcher;
use checkout_server::domain::api_key::Mode;
use checkout_server::domain::network::Network;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Recorded answer A: 8,399 USDT to `TYaPXWLsctg4qXh75pvANup4wQ5msLrRoL` (java-tron issue 4987).
const MAINNET_LOG: &str = r#"{"address":"0xa614f803b6fd780986a42c78ec9c7f77e6ded13c","blockHash":"0x000000000223a0a7db3c891d7c9d4ef45cc8e7c32f941f1ef59d062b2adbeea7","blockNumber":"0x223a0a7","data":"0x00000000000000000000000000000000000000000000000000000001f49e91c0","logIndex":"0x21","removed":false,"topics":["0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef","0x0000000000000000000000005a67fa7cc56bd6d043a98e17d329c1dc9e14753f","0x000000000000000000000000f7fa1c9867fe20f456d90112c6e6c5643a9baf68"],"transactionHash":"0xfc92e2eb478e8f71d2647c8937d4be9c2a8c6317131fd9d95c50d6d42476de63","transactionIndex":"0x44"}"#;
const LOG_BLOCK: u64 = 0x223a0a7;
const RECIPIENT: &str = "TYaPXWLsctg4qXh75pvANup4wQ5msLrRoL";
const RECIPIENT_WORD: &str = "0x000000000000000000000000f7fa1c9867fe20f456d90112c6e6c5643a9baf68";

/// Recorded answer B (a Nile block): TRON's fields, renumbered per block by the stub.
const NILE_BLOCK: &str = r#"{"number":"0x3fe1c00","hash":"0x0000000003fe1c00462b498ddae67717e96c785078adb5ccb7279148916e6f97","parentHash":"0x0000000003fe1bff062fa008dcd68f6ab2a96a25bc175df22a04baa0cd391573","miner":"0xa234e405a2c6fd67cdd4d0ea2f6188f65534c8b1","timestamp":"0x69f18a5c","size":"0x73d","transactionsRoot":"0xfda5b0a23514a969259ae378185fc833e2c4e35874ee2f8b6d26d15acd976c6e","stateRoot":"0x","transactions":[],"uncles":[],"gasLimit":"0x0","gasUsed":"0x0","difficulty":"0x0","totalDifficulty":"0x0","extraData":"0x","nonce":"0x0000000000000000","sha3Uncles":"0x0000000000000000000000000000000000000000000000000000000000000000","receiptsRoot":"0x0000000000000000000000000000000000000000000000000000000000000000","mixHash":"0x0000000000000000000000000000000000000000000000000000000000000000","baseFeePerGas":"0x0"}"#;

/// java-tron's limits (recorded answers E): at most 5,000 blocks a query, and no more than a
/// (here small) number of candidate blocks around the payment.
const MAX_RANGE: u64 = 5000;
const CAPPED_SPAN: u64 = 1000;

/// TRON's solidified block trails the head by 18 blocks while every producer keeps its slot.
const SOLIDIFIED_LAG: u64 = 18;

/// A TRON node: its head, and every `eth_getLogs` range it was asked for. With `lag`, the
/// backend answering blocks and logs is that many blocks behind the head reported (a
/// provider's pool): it clamps log ranges to its own head, as java-tron does, and has no
/// block above it.
struct StubTron {
    head: AtomicU64,
    lag: AtomicU64,
    now: u64,
    log_ranges: Mutex<Vec<(u64, u64)>>,
}

impl StubTron {
    /// TRON block hashes start with the height; the payment's block keeps its recorded hash.
    fn hash(n: u64) -> String {
        if n == LOG_BLOCK {
            return "0x000000000223a0a7db3c891d7c9d4ef45cc8e7c32f941f1ef59d062b2adbeea7".into();
        }
        format!("0x{n:016x}{}", "5a".repeat(24))
    }

    /// Seconds since java-tron 4.6, milliseconds before: the stub mixes both.
    fn timestamp(&self, n: u64) -> u64 {
        let head = self.head.load(Ordering::SeqCst);
        let seconds = self.now - 3 * head.saturating_sub(n);
        if n % 2 == 0 {
            seconds * 1000
        } else {
            seconds
        }
    }

    fn answer(&self, method: &str, params: &Value) -> Value {
        let quantity = |v: &Value| {
            u64::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
        };
        match method {
            "eth_chainId" => json!({ "result": "0x2b6653dc" }),
            "eth_blockNumber" => {
                json!({ "result": format!("0x{:x}", self.head.load(Ordering::SeqCst)) })
            }
            "eth_getBlockByNumber" => {
                let head = self.head.load(Ordering::SeqCst);
                let n = match params[0].as_str() {
                    Some("finalized") => head - SOLIDIFIED_LAG,
                    Some("safe" | "pending") => {
                        return json!({ "error": { "code": -32602, "message": "invalid block number" } })
                    }
                    // Above the head of the backend answering blocks.
                    _ if quantity(&params[0]) > head - self.lag.load(Ordering::SeqCst) => {
                        return json!({ "result": null })
                    }
                    _ => quantity(&params[0]),
                };
                let mut block: Value = serde_json::from_str(NILE_BLOCK).unwrap();
                block["number"] = json!(format!("0x{n:x}"));
                block["hash"] = json!(Self::hash(n));
                block["parentHash"] = json!(Self::hash(n - 1));
                block["timestamp"] = json!(format!("0x{:x}", self.timestamp(n)));
                json!({ "result": block })
            }
            "eth_getLogs" => {
                let filter = &params[0];
                let (from, to) = (quantity(&filter["fromBlock"]), quantity(&filter["toBlock"]));
                self.log_ranges.lock().unwrap().push((from, to));
                if to - from > MAX_RANGE {
                    return json!({ "error": { "code": -32602, "message": "exceed max block range: 5000", "data": "{}" } });
                }
                let served = self.head.load(Ordering::SeqCst) - self.lag.load(Ordering::SeqCst);
                let to = to.min(served);
                if from > to {
                    return json!({ "result": [] });
                }
                let holds_payment = from <= LOG_BLOCK && LOG_BLOCK <= to;
                if holds_payment && to - from >= CAPPED_SPAN {
                    return json!({ "error": { "code": -32005, "message": "query returned more than 10000 results", "data": "{}" } });
                }
                let asks_for_recipient = match filter["topics"][2].as_array() {
                    None => true,
                    Some(words) => words.iter().any(|w| w == RECIPIENT_WORD),
                };
                if holds_payment && asks_for_recipient {
                    let log: Value = serde_json::from_str(MAINNET_LOG).unwrap();
                    json!({ "result": [log] })
                } else {
                    json!({ "result": [] })
                }
            }
            "eth_getTransactionReceipt" => {
                let log: Value = serde_json::from_str(MAINNET_LOG).unwrap();
                json!({ "result": {
                    "blockHash": log["blockHash"], "blockNumber": log["blockNumber"],
                    "status": "0x1", "logs": [log], "gasUsed": "0x0",
                    "transactionHash": log["transactionHash"], "transactionIndex": "0x44",
                }})
            }
            other => {
                json!({ "error": { "code": -32601, "message": format!("{other} not stubbed") } })
            }
        }
    }
}

/// One call's answer, in its envelope.
fn answer_call(stub: &StubTron, request: &Value) -> Value {
    let mut answer = stub.answer(request["method"].as_str().unwrap(), &request["params"]);
    answer["jsonrpc"] = json!("2.0");
    answer["id"] = request["id"].clone();
    answer
}

async fn serve(stub: Arc<StubTron>) -> String {
    let app = axum::Router::new().route(
        "/jsonrpc",
        axum::routing::post(move |axum::Json(request): axum::Json<Value>| {
            let stub = stub.clone();
            async move {
                // java-tron takes batches (up to 100 calls), and answers errors with HTTP 200.
                axum::Json(match request.as_array() {
                    Some(calls) => {
                        Value::Array(calls.iter().map(|c| answer_call(&stub, c)).collect())
                    }
                    None => answer_call(&stub, &request),
                })
            }
        }),
    );
    let url = format!("{}/jsonrpc", crate::common::serve_local(app).await);
    url
}

/// A watcher on the stub at `LOG_BLOCK - 1`, and a session paid by the recorded log.
async fn started(scan: &str) -> (Arc<StubTron>, TestApp, Watcher, String) {
    let stub = Arc::new(StubTron {
        head: AtomicU64::new(LOG_BLOCK - 1),
        lag: AtomicU64::new(0),
        now: u64::try_from(chrono::Utc::now().timestamp()).unwrap(),
        log_ranges: Mutex::new(Vec::new()),
    });
    let url = serve(stub.clone()).await;
    // Test mode, with mainnet's chain id and USDT contract: the replayed answers are mainnet's.
    let toml = format!(
        r#"
[networks.TRON.test]
rpc_urls = ["{url}"]
chain_id = 728126428
scan = "{scan}"
max_block_range = 10000
tokens.USDT = {{ contract = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t", decimals = 6 }}
"#
    );
    let app = TestApp::spawn_unwatched(&toml, |_| {}).await;
    let net = app.state.config.network(Network::Tron, Mode::Test).clone();
    let policy = RetryPolicy {
        timeout: Duration::from_secs(5),
        attempts: 2,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(50),
    };
    let w = Watcher::new(&app.state, &net, policy).unwrap();
    w.tick().await.expect("a first cycle starts at the head");
    let (status, session) = app
        .create_session(
            &app.merchant.test_key,
            json!({
                "pricing_amount": "8399", "pricing_currency": "USDT", "currency": "USDT",
                "network": "TRON", "success_url": "https://shop.example/ok",
                "cancel_url": "https://shop.example/cancel",
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    let id = session["id"].as_str().unwrap().to_owned();
    // The recorded payment's recipient stands in for the derived address.
    sqlx::query("UPDATE checkout_sessions SET pay_address = $1 WHERE id = $2")
        .bind(RECIPIENT)
        .bind(&id)
        .execute(&app.db)
        .await
        .unwrap();
    (stub, app, w, id)
}

async fn replay(scan: &str) {
    let (stub, app, w, id) = started(scan).await;
    // 6,000 blocks later: more than java-tron's 5,000 a query, and the payment's neighbourhood
    // over the result cap. Deep enough to be final.
    stub.head.store(LOG_BLOCK + 5999, Ordering::SeqCst);
    let report = w
        .tick()
        .await
        .expect("the range is split until the node answers");
    assert_eq!(report.recorded, 1, "{report:?}");
    assert_eq!(report.credited, 1, "{report:?}");

    let ranges = stub.log_ranges.lock().unwrap().clone();
    assert!(
        ranges.iter().any(|(f, t)| t - f > MAX_RANGE),
        "the configured range was tried: {ranges:?}"
    );
    let answered: Vec<_> = ranges.iter().filter(|(f, t)| t - f <= MAX_RANGE).collect();
    let covered: u64 = answered
        .iter()
        .filter(|(f, t)| !(*f <= LOG_BLOCK && LOG_BLOCK <= *t && t - f >= CAPPED_SPAN))
        .map(|(f, t)| t - f + 1)
        .sum();
    assert_eq!(
        covered, 6000,
        "every block asked for exactly once once answered: {ranges:?}"
    );

    let (status, after) = app
        .get(
            &format!("/v1/checkout/sessions/{id}"),
            &app.merchant.test_key,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(after["status"], "Paid", "{after}");
    assert_eq!(after["amount_received"], "8399");
    let tx = &after["transactions"][0];
    assert_eq!(
        tx["tx_hash"],
        "fc92e2eb478e8f71d2647c8937d4be9c2a8c6317131fd9d95c50d6d42476de63"
    );
    assert_eq!(tx["amount"], "8399");
    assert_eq!(tx["status"], "Confirmed");
    let stored: (i64, String, String) = sqlx::query_as(
        "SELECT block_number, to_address, from_address FROM transactions WHERE session_id = $1",
    )
    .bind(&id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(
        stored,
        (
            LOG_BLOCK as i64,
            RECIPIENT.to_owned(),
            "TJDENsfBJs4RFETt1X1W8wMDc8M5XnJhCe".to_owned()
        )
    );
}

#[tokio::test]
async fn a_recorded_mainnet_usdt_log_is_decoded_and_credited_asking_only_for_the_recipient() {
    replay("recipients").await;
}

#[tokio::test]
async fn a_recorded_mainnet_usdt_log_is_decoded_and_credited_from_a_contract_scan() {
    replay("contract").await;
}

#[tokio::test]
async fn an_empty_answer_past_a_lagging_nodes_head_is_asked_again_not_taken_for_nothing() {
    let (stub, app, w, id) = started("recipients").await;
    // The head moves past the payment's block and its solidification, but the backend that
    // answers logs and blocks is still before the payment: its log answer is empty.
    stub.head.store(LOG_BLOCK + 50, Ordering::SeqCst);
    stub.lag.store(51, Ordering::SeqCst);
    for _ in 0..3 {
        let outcome = w.tick().await;
        assert!(
            outcome.as_ref().is_err() || outcome.as_ref().is_ok_and(|r| r.recorded == 0),
            "{outcome:?}"
        );
    }
    let final_block: Option<i64> = sqlx::query_scalar("SELECT final_number FROM chain_cursors")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(
        final_block.is_some_and(|f| (f as u64) < LOG_BLOCK),
        "no block the lagging node did not show is final: {final_block:?}"
    );
    // The backend catches up: the same blocks, asked again, hold the payment.
    stub.lag.store(0, Ordering::SeqCst);
    let report = w.tick().await.expect("a cycle on a node that caught up");
    assert_eq!((report.recorded, report.credited), (1, 1), "{report:?}");
    let (_, after) = app
        .get(
            &format!("/v1/checkout/sessions/{id}"),
            &app.merchant.test_key,
        )
        .await;
    assert_eq!(after["status"], "Paid", "{after}");
}

#[tokio::test]
async fn the_solidified_block_decides_what_is_final() {
    let (stub, app, w, id) = started("recipients").await;
    // The payment is in the chain but not yet solidified: recorded, not credited.
    stub.head
        .store(LOG_BLOCK + SOLIDIFIED_LAG - 1, Ordering::SeqCst);
    let report = w.tick().await.expect("cycle");
    assert_eq!((report.recorded, report.credited), (1, 0), "{report:?}");
    assert_eq!(report.final_limit, LOG_BLOCK - 1);
    // One block later its block is the solidified one.
    stub.head
        .store(LOG_BLOCK + SOLIDIFIED_LAG, Ordering::SeqCst);
    let report = w.tick().await.expect("cycle");
    assert_eq!(
        (report.final_limit, report.credited),
        (LOG_BLOCK, 1),
        "{report:?}"
    );
    let (_, after) = app
        .get(
            &format!("/v1/checkout/sessions/{id}"),
            &app.merchant.test_key,
        )
        .await;
    assert_eq!(after["status"], "Paid", "{after}");
}
