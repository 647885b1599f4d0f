//! TRON sweeps: plan (anvil stands in for `/jsonrpc`, as in the watcher tests), sign offline
//! with the mnemonic, and broadcast through a stub of the node's HTTP API. The stub answers
//! as TRON's documentation records (`{"result": true, "txid": …}`, and
//! `TRANSACTION_EXPIRATION_ERROR` with its hex message), checks each transaction's id and
//! signature, refuses energy delegated to an account that is not activated, and carries out
//! each USDT transfer on anvil from the deposit address, so balances move for real.

use crate::chain_support::{hex20, units, Anvil};
use crate::common::{create_merchant_with_xpubs, Merchant, TestApp};
use alloy_primitives::U256;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use checkout_server::chain::rpc::RetryPolicy;
use checkout_server::chain::watcher::Watcher;
use checkout_server::config::{Config, TronSweepConfig};
use checkout_server::domain::address::{parse_tron_address, tron_base58, PUBLIC_TEST_TRON_XPUB};
use checkout_server::domain::api_key::Mode;
use checkout_server::domain::network::Network;
use checkout_server::sweep::tron::broadcast::{BroadcastError, Broadcaster};
use checkout_server::sweep::tron::plan::{Plan, ENERGY_TO_HOLDER, ENERGY_TO_NEW_HOLDER};
use checkout_server::sweep::tron::sign::{sign, signer_of, SignError, SignedPlan};
use checkout_server::sweep::tron::{self, ContractType, Raw};
use prost::Message;
use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

const TEST_MNEMONIC: &str =
    "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";
const GAS_WALLET_KEY: &str = "7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6";
/// From TRON's documentation: the answer to a transaction broadcast after its expiration
/// (`message` is hex of "Transaction expired").
const EXPIRED_ANSWER: &str = r#"{"code":"TRANSACTION_EXPIRATION_ERROR","txid":"{txid}","message":"5472616e73616374696f6e2065787069726564"}"#;

/// What the stub node saw and holds.
#[derive(Default)]
struct NodeState {
    activated: BTreeSet<[u8; 20]>,
    /// (contract type, the account it is for), in the order broadcast.
    broadcasts: Vec<(String, [u8; 20])>,
    infos: BTreeMap<String, Value>,
    expire_transfers: bool,
    refusals: Vec<String>,
}

struct Stub {
    anvil: Arc<Anvil>,
    state: Mutex<NodeState>,
}

type Shared = Arc<Stub>;

fn account_of_hex41(text: &str) -> [u8; 20] {
    let bytes = hex::decode(text).unwrap();
    assert_eq!(bytes.len(), 21, "{text}");
    assert_eq!(bytes[0], 0x41, "{text}");
    bytes[1..].try_into().unwrap()
}

async fn chain_parameters() -> Json<Value> {
    Json(json!({ "chainParameter": [
        { "key": "getTransactionFee", "value": 1000 },
        { "key": "getCreateAccountFee", "value": 100000 },
        { "key": "getCreateNewAccountFeeInSystemContract", "value": 1000000 },
        { "key": "getEnergyFee", "value": 100 },
    ]}))
}

async fn get_account(State(stub): State<Shared>, Json(body): Json<Value>) -> Json<Value> {
    let account = account_of_hex41(body["address"].as_str().unwrap());
    if stub.state.lock().unwrap().activated.contains(&account) {
        Json(json!({ "address": body["address"], "balance": 1_100_000, "create_time": 1 }))
    } else {
        Json(json!({}))
    }
}

async fn account_resource() -> Json<Value> {
    // Mainnet-like: about 9.5 energy a day per staked TRX.
    Json(
        json!({ "freeNetLimit": 600, "TotalEnergyLimit": 180_000_000_000i64,
                  "TotalEnergyWeight": 19_000_000_000i64 }),
    )
}

async fn can_delegate() -> Json<Value> {
    Json(json!({ "max_size": 50_000_000_000_000i64 }))
}

async fn transaction_info(State(stub): State<Shared>, Json(body): Json<Value>) -> Json<Value> {
    let id = body["value"].as_str().unwrap();
    let state = stub.state.lock().unwrap();
    Json(state.infos.get(id).cloned().unwrap_or(json!({})))
}

/// The node's checks and effects for one broadcast.
async fn broadcast(State(stub): State<Shared>, Json(body): Json<Value>) -> Json<Value> {
    let raw_hex = body["raw_data_hex"].as_str().unwrap();
    let raw = Raw::decode(hex::decode(raw_hex).unwrap().as_slice()).unwrap();
    let txid = hex::encode(Sha256::digest(hex::decode(raw_hex).unwrap()));
    assert_eq!(body["txID"], txid);
    assert_eq!(body["visible"], false);
    let contract = &raw.contract[0];
    let json_contract = &body["raw_data"]["contract"][0];
    assert_eq!(
        json_contract["parameter"]["type_url"],
        contract.parameter.as_ref().unwrap().type_url
    );
    assert_eq!(body["raw_data"]["expiration"], raw.expiration);
    assert_eq!(
        body["raw_data"]["ref_block_hash"],
        hex::encode(&raw.ref_block_hash)
    );
    let value = &json_contract["parameter"]["value"];
    let owner = account_of_hex41(value["owner_address"].as_str().unwrap());
    let signature = hex::decode(body["signature"][0].as_str().unwrap()).unwrap();
    if signer_of(&raw, &signature) != Some(owner) {
        return Json(
            json!({ "code": "SIGERROR", "txid": txid, "message": hex::encode("Validate signature error") }),
        );
    }
    let bytes = contract.parameter.as_ref().unwrap().value.as_slice();
    let kind = json_contract["type"].as_str().unwrap().to_owned();
    let head = stub.anvil.rpc("eth_blockNumber", json!([])).await;
    let head = u64::from_str_radix(head.as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
    let mut info = json!({ "id": txid, "blockNumber": head, "blockTimeStamp": 1 });
    let subject;
    match contract.r#type {
        t if t == ContractType::Transfer as i32 => {
            assert_eq!(kind, "TransferContract");
            let c = tron::TransferContract::decode(bytes).unwrap();
            subject = c.to_address[1..].try_into().unwrap();
            let mut state = stub.state.lock().unwrap();
            if state.activated.insert(subject) {
                info["fee"] = json!(1_100_000);
            }
        }
        t if t == ContractType::DelegateResource as i32
            || t == ContractType::UnDelegateResource as i32 =>
        {
            assert_eq!(value["resource"], "ENERGY");
            let receiver = account_of_hex41(value["receiver_address"].as_str().unwrap());
            subject = receiver;
            if !stub.state.lock().unwrap().activated.contains(&receiver) {
                let message = hex::encode("Contract validate error : Account does not exist");
                stub.state.lock().unwrap().refusals.push(kind.clone());
                return Json(
                    json!({ "code": "CONTRACT_VALIDATE_ERROR", "txid": txid, "message": message }),
                );
            }
        }
        t if t == ContractType::TriggerSmartContract as i32 => {
            assert_eq!(kind, "TriggerSmartContract");
            subject = owner;
            if stub.state.lock().unwrap().expire_transfers {
                stub.state.lock().unwrap().refusals.push(kind.clone());
                return Json(
                    serde_json::from_str(&EXPIRED_ANSWER.replace("{txid}", &txid)).unwrap(),
                );
            }
            let c = tron::TriggerSmartContract::decode(bytes).unwrap();
            let token: [u8; 20] = c.contract_address[1..].try_into().unwrap();
            // Carried out on anvil from the deposit address itself.
            stub.anvil
                .rpc("anvil_impersonateAccount", json!([hex20(&owner)]))
                .await;
            stub.anvil
                .rpc(
                    "anvil_setBalance",
                    json!([hex20(&owner), "0xde0b6b3a7640000"]),
                )
                .await;
            let hash = stub
                .anvil
                .send(&owner, Some(&token), hex::encode(&c.data))
                .await;
            let receipt = stub.anvil.receipt(&hash).await;
            let logs: Vec<Value> = receipt["logs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| {
                    json!({
                        "address": l["address"].as_str().unwrap().trim_start_matches("0x"),
                        "topics": l["topics"].as_array().unwrap().iter()
                            .map(|t| t.as_str().unwrap().trim_start_matches("0x").to_owned())
                            .collect::<Vec<_>>(),
                        "data": l["data"].as_str().unwrap().trim_start_matches("0x"),
                    })
                })
                .collect();
            let block = receipt["blockNumber"].as_str().unwrap();
            info["blockNumber"] =
                json!(u64::from_str_radix(block.trim_start_matches("0x"), 16).unwrap());
            info["fee"] = json!(0);
            info["receipt"] = json!({ "energy_usage_total": 64_285, "result": "SUCCESS" });
            info["log"] = json!(logs);
        }
        other => panic!("unexpected contract type {other}"),
    }
    let mut state = stub.state.lock().unwrap();
    state.broadcasts.push((kind, subject));
    state.infos.insert(txid.clone(), info);
    Json(json!({ "result": true, "txid": txid }))
}

struct TronChain {
    anvil: Arc<Anvil>,
    stub: Shared,
    stub_url: String,
    app: TestApp,
    merchant: Merchant,
    merchant_id: uuid::Uuid,
    usdt: [u8; 20],
    treasury: [u8; 20],
    watcher: Watcher,
    dir: std::path::PathBuf,
}

impl Drop for TronChain {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl TronChain {
    async fn start() -> Self {
        let anvil = Arc::new(Anvil::start().await);
        let usdt = anvil.deploy_token(6).await;
        let networks = format!(
            r#"
[watcher]
lease_seconds = 2

[networks.TRON.test]
rpc_urls = ["{url}"]
chain_id = 31337
confirmations = 1
poll_interval_ms = 100
finality = "depth"
tokens.USDT = {{ contract = "{usdt}", decimals = 6 }}
"#,
            url = anvil.url,
            usdt = tron_base58(&usdt),
        );
        let app = TestApp::spawn_unwatched(&networks, |_| {}).await;
        let merchant =
            create_merchant_with_xpubs(&app.db, "TronSweeper", Some(PUBLIC_TEST_TRON_XPUB), None)
                .await;
        let merchant_id: uuid::Uuid =
            sqlx::query_scalar("SELECT id FROM merchants WHERE name = 'TronSweeper'")
                .fetch_one(&app.db)
                .await
                .unwrap();
        let stub = Arc::new(Stub {
            anvil: anvil.clone(),
            state: Mutex::new(NodeState::default()),
        });
        let router = Router::new()
            .route("/wallet/getchainparameters", post(chain_parameters))
            .route("/wallet/getaccount", post(get_account))
            .route("/wallet/getaccountresource", post(account_resource))
            .route("/wallet/getcandelegatedmaxsize", post(can_delegate))
            .route("/wallet/broadcasttransaction", post(broadcast))
            .route("/wallet/gettransactioninfobyid", post(transaction_info))
            .with_state(stub.clone());
        let stub_url = crate::common::serve_local(router).await;
        let dir = std::env::temp_dir().join(format!("tron-sweep-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("gas.key"), format!("{GAS_WALLET_KEY}\n")).unwrap();
        let net = app.state.config.network(Network::Tron, Mode::Test).clone();
        let watcher = Watcher::new(&app.state, &net, RetryPolicy::default()).unwrap();
        watcher.tick().await.unwrap();
        TronChain {
            anvil,
            stub,
            stub_url,
            app,
            merchant,
            merchant_id,
            usdt,
            treasury: rand::random(),
            watcher,
            dir,
        }
    }

    /// The `[sweep.TRON.test]` table with `extra` lines, over the app's networks.
    fn config(&self, extra: &str) -> (Config, TronSweepConfig) {
        let config = Config::from_toml(&self.config_text(extra)).unwrap();
        let sweep = config.tron_sweeps[0].clone();
        (config, sweep)
    }

    fn config_text(&self, extra: &str) -> String {
        let net = self.app.state.config.network(Network::Tron, Mode::Test);
        format!(
            r#"
[networks.TRON.test]
rpc_urls = ["{url}"]
chain_id = 31337
confirmations = 1
poll_interval_ms = 100
finality = "depth"
tokens.USDT = {{ contract = "{usdt}", decimals = 6 }}

[sweep.TRON.test]
merchant = "{merchant}"
treasury = "{treasury}"
gas_wallet_key_file = "{key}"
min_amount = "5"
http_urls = ["{stub}"]
{extra}
"#,
            url = net.rpc_urls[0].url,
            usdt = tron_base58(&self.usdt),
            merchant = self.merchant_id,
            treasury = tron_base58(&self.treasury),
            key = self.dir.join("gas.key").display(),
            stub = self.stub_url,
        )
    }

    /// A TRON session paid with `amount` USDT and credited; returns its pay address.
    async fn paid_session(&self, amount: &str) -> [u8; 20] {
        let (status, body) = self
            .app
            .create_session(
                &self.merchant.test_key,
                json!({
                    "pricing_amount": amount, "pricing_currency": "USDT",
                    "currency": "USDT", "network": "TRON",
                    "success_url": "https://shop.example/ok",
                    "cancel_url": "https://shop.example/cancel",
                }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let address = parse_tron_address(body["pay_address"].as_str().unwrap()).unwrap();
        self.anvil
            .mint(&self.usdt, &address, units(amount, 6))
            .await;
        address
    }

    async fn credit(&self) {
        self.anvil.mine(2).await;
        for _ in 0..5 {
            self.watcher.tick().await.unwrap();
        }
    }

    async fn balance_of(&self, owner: &[u8; 20]) -> U256 {
        self.anvil.token_balance(&self.usdt, owner).await
    }

    async fn plan(&self, config: &Config, sweep: &TronSweepConfig) -> Plan {
        checkout_server::service::sweeps::tron_plan(&self.app.db, config, sweep)
            .await
            .unwrap()
    }

    /// The same plan made again (another id, the same addresses and amounts).
    fn plan_again(&self, plan: &Plan) -> Plan {
        let mut again = plan.clone();
        again.id = checkout_server::domain::ids::random_id("sw_");
        again
    }

    fn activate(&self, account: &[u8; 20]) {
        self.stub.state.lock().unwrap().activated.insert(*account);
    }

    fn broadcasts(&self) -> Vec<(String, [u8; 20])> {
        self.stub.state.lock().unwrap().broadcasts.clone()
    }
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

#[tokio::test]
async fn plan_sign_and_broadcast_with_delegated_energy_sweeps_into_the_treasury() {
    let c = TronChain::start().await;
    let (config, sweep) = c.config("energy = \"delegate\"");
    let fresh = c.paid_session("12.5").await;
    let used = c.paid_session("20").await;
    let small = c.paid_session("3").await;
    c.activate(&used);
    c.credit().await;

    // Plan: two addresses above the minimum; the one below is checked and left out.
    let plan = c.plan(&config, &sweep).await;
    assert_eq!(plan.items.len(), 2, "{plan:#?}");
    let item = |a: &[u8; 20]| {
        plan.items
            .iter()
            .find(|i| i.address == tron_base58(a))
            .unwrap()
    };
    let (first, second) = (item(&fresh), item(&used));
    assert_eq!(first.amount, dec("12.5"));
    assert_eq!(first.amount_units, "12500000");
    assert!(!first.activated && second.activated);
    // The treasury holds no USDT yet: the first transfer costs more energy, the next less.
    assert_eq!(plan.items[0].energy, ENERGY_TO_NEW_HOLDER);
    assert_eq!(plan.items[1].energy, ENERGY_TO_HOLDER);
    assert_eq!(first.bandwidth, 345);
    assert_eq!(first.activation_fee_trx, dec("1.1"));
    assert_eq!(first.trx_sent, dec("1.1"), "the activation transfer");
    assert_eq!(second.trx_sent, Decimal::ZERO);
    assert_eq!(
        plan.items[0].burn_trx,
        Decimal::from(plan.items[0].energy) / Decimal::from(10_000)
    );
    assert_eq!(second.cost_delegated_trx, Decimal::ZERO);
    assert_eq!(second.cost_burn_trx, dec("6.4285"));
    // 64,285 energy + 10 % at 180e9 / 19e9 energy per TRX: 7,465 TRX of stake, rounded up.
    assert_eq!(second.delegated_sun, Some(7_465_000_000));
    assert_eq!(plan.totals.cost_trx, dec("1.1"));
    assert_eq!(plan.totals.amount, dec("32.5"));
    let block = c
        .anvil
        .rpc("eth_getBlockByNumber", json!(["latest", false]))
        .await;
    let hash = hex::decode(block["hash"].as_str().unwrap().trim_start_matches("0x")).unwrap();
    assert_eq!(plan.reference.ref_block_hash, hex::encode(&hash[8..16]));
    let lifetime = plan.reference.expiration - plan.reference.timestamp;
    assert!(
        lifetime > 22 * 3600 * 1000 && lifetime < 24 * 3600 * 1000,
        "{lifetime}"
    );
    assert_eq!(
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM sweep_addresses WHERE address = $1")
            .bind(tron_base58(&small))
            .fetch_one(&c.app.db)
            .await
            .unwrap(),
        1,
        "below the minimum: checked"
    );

    // Sign offline: a mnemonic of another wallet is refused; ours signs every transfer.
    let other = "legal winner thank year wave sausage worth useful legal winner thank yellow";
    assert!(matches!(
        sign(&plan, other, "", None, chrono::Utc::now()),
        Err(SignError::WrongMnemonic)
    ));
    let signed = sign(&plan, TEST_MNEMONIC, "", None, chrono::Utc::now()).unwrap();
    assert_eq!(signed.transfers.len(), 2);
    for t in &signed.transfers {
        let tx =
            tron::Transaction::decode(hex::decode(&t.transaction).unwrap().as_slice()).unwrap();
        let raw = tx.raw_data.unwrap();
        assert_eq!(
            signer_of(&raw, &tx.signature[0]).map(|a| tron_base58(&a)),
            Some(t.address.clone())
        );
        assert_eq!(raw.expiration, plan.reference.expiration);
    }
    // Through JSON, as the file goes from the offline machine to the server.
    let signed: SignedPlan =
        serde_json::from_str(&serde_json::to_string(&signed).unwrap()).unwrap();

    // A transfer pointed elsewhere is refused before anything is sent.
    let mut tampered = signed.clone();
    tampered.plan.items[0].amount_units = "1".into();
    let broadcaster = Broadcaster::new(&c.app.state, &sweep).unwrap();
    let refused = broadcaster.broadcast(&tampered).await.unwrap_err();
    assert!(matches!(refused, BroadcastError::Invalid(_)), "{refused}");
    // So is a plan whose money fields were raised on the way (the transfers still verify).
    let mut greedy = signed.clone();
    greedy.plan.items[0].trx_sent = dec("500");
    let refused = broadcaster.broadcast(&greedy).await.unwrap_err();
    assert!(refused.to_string().contains("more TRX"), "{refused}");
    let mut greedy = signed.clone();
    greedy.plan.items[1].delegated_sun = Some(1_000_000_000_000);
    let refused = broadcaster.broadcast(&greedy).await.unwrap_err();
    assert!(refused.to_string().contains("more stake"), "{refused}");
    assert!(c.broadcasts().is_empty());
    assert_eq!(c.app.count("sweeps").await, 0);
    // A second plan of the same addresses, signed too: only one of the two can be sent.
    let rival = sign(
        &c.plan_again(&plan),
        TEST_MNEMONIC,
        "",
        None,
        chrono::Utc::now(),
    )
    .unwrap();

    let report = broadcaster.broadcast(&signed).await.unwrap();
    assert_eq!(report.sweep.status, "completed", "{:#?}", report.steps);
    assert!(report.left_out.is_empty());
    // In order: activation, delegations, transfers, undelegations; none refused.
    let kinds: Vec<String> = c.broadcasts().into_iter().map(|b| b.0).collect();
    assert_eq!(
        kinds,
        [
            "TransferContract",
            "DelegateResourceContract",
            "DelegateResourceContract",
            "TriggerSmartContract",
            "TriggerSmartContract",
            "UnDelegateResourceContract",
            "UnDelegateResourceContract",
        ]
    );
    assert!(c.stub.state.lock().unwrap().refusals.is_empty());
    assert_eq!(c.balance_of(&c.treasury).await, units("32.5", 6));
    assert_eq!(c.balance_of(&fresh).await, U256::ZERO);
    assert_eq!(c.balance_of(&small).await, units("3", 6), "not swept");

    // Reported by the API and by a sweep.completed event.
    let (status, body) = c
        .app
        .get(&format!("/v1/sweeps/{}", plan.id), &c.merchant.test_key)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["network"], "TRON");
    assert_eq!(body["status"], "completed");
    assert_eq!(body["energy_mode"], "delegate");
    assert_eq!(body["totals"]["USDT"], "32.5");
    assert_eq!(body["tx_hash"], Value::Null);
    assert_eq!(body["gas_tank"], plan.gas_wallet);
    assert_eq!(body["delegate"], plan.staking_account.clone().unwrap());
    assert_eq!(body["transactions"].as_array().unwrap().len(), 7);
    assert!(body["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["status"] == "confirmed"));
    assert_eq!(body["fee_wei"], "1100000", "the activation");
    for item in body["items"].as_array().unwrap() {
        let transfer = body["transactions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["kind"] == "transfer" && t["address"] == item["address"])
            .unwrap();
        assert_eq!(item["tx_hash"], transfer["tx_hash"]);
        assert_eq!(item["swept_amount"], item["expected_amount"]);
    }
    let (_, events) = c
        .app
        .get("/v1/events?type=sweep.completed", &c.merchant.test_key)
        .await;
    assert_eq!(events["data"][0]["data"]["id"], plan.id, "{events}");

    // Broadcast again: nothing is sent twice. The rival plan is refused; a new one is empty.
    let again = broadcaster.broadcast(&signed).await.unwrap();
    assert_eq!(again.sweep.status, "completed");
    let refused = broadcaster.broadcast(&rival).await.unwrap_err();
    assert!(
        refused.to_string().contains("waiting for a sweep"),
        "{refused}"
    );
    assert_eq!(c.broadcasts().len(), 7);
    let empty = c.plan(&config, &sweep).await;
    assert!(empty.items.is_empty());
    let nothing = sign(&empty, TEST_MNEMONIC, "", None, chrono::Utc::now()).unwrap();
    let refused = broadcaster.broadcast(&nothing).await.unwrap_err();
    assert!(
        refused.to_string().starts_with("nothing to sweep"),
        "{refused}"
    );

    // A late payment to a swept address is planned next time.
    c.anvil.mint(&c.usdt, &fresh, units("7", 6)).await;
    c.credit().await;
    let next = c.plan(&config, &sweep).await;
    assert_eq!(next.items.len(), 1);
    assert!(next.items[0].activated, "activated by the first sweep");
    assert_eq!(
        next.items[0].energy, ENERGY_TO_HOLDER,
        "the treasury holds USDT now"
    );
}

#[tokio::test]
async fn an_expired_transfer_fails_the_sweep_and_its_addresses_are_planned_again() {
    let c = TronChain::start().await;
    let (config, sweep) = c.config("energy = \"burn\"");
    let paid = c.paid_session("15").await;
    c.activate(&paid);
    c.credit().await;
    let plan = c.plan(&config, &sweep).await;
    assert_eq!(plan.items.len(), 1);
    // Burned: the address gets its energy's TRX and its bandwidth's, less what it holds.
    let item = &plan.items[0];
    assert_eq!(item.energy, ENERGY_TO_NEW_HOLDER);
    assert_eq!(item.delegated_sun, None);
    assert_eq!(item.trx_sent, dec("13.0285") + dec("0.345") - dec("1.1"));
    assert_eq!(plan.totals.cost_trx, dec("13.0285"));

    let signed = sign(&plan, TEST_MNEMONIC, "", None, chrono::Utc::now()).unwrap();
    c.stub.state.lock().unwrap().expire_transfers = true;
    let broadcaster = Broadcaster::new(&c.app.state, &sweep).unwrap();
    let report = broadcaster.broadcast(&signed).await.unwrap();
    assert_eq!(report.sweep.status, "failed");
    let transfer = report.steps.iter().find(|s| s.kind == "transfer").unwrap();
    assert_eq!(transfer.status, "failed");
    assert_eq!(
        transfer.error.as_deref(),
        Some("TRANSACTION_EXPIRATION_ERROR: Transaction expired")
    );
    let funding = report.steps.iter().find(|s| s.kind == "funding").unwrap();
    assert_eq!(funding.status, "confirmed", "the TRX went first");
    assert_eq!(c.balance_of(&paid).await, units("15", 6), "nothing moved");
    let (_, body) = c
        .app
        .get(&format!("/v1/sweeps/{}", plan.id), &c.merchant.test_key)
        .await;
    assert_eq!(body["status"], "failed");
    assert_eq!(body["items"][0]["swept_amount"], "0");

    // Not a failure of the address: the next plan has it again.
    c.stub.state.lock().unwrap().expire_transfers = false;
    let again = c.plan(&config, &sweep).await;
    assert_eq!(again.items.len(), 1);
    let signed = sign(&again, TEST_MNEMONIC, "", None, chrono::Utc::now()).unwrap();
    let report = broadcaster.broadcast(&signed).await.unwrap();
    assert_eq!(report.sweep.status, "completed", "{:#?}", report.steps);
    assert_eq!(c.balance_of(&c.treasury).await, units("15", 6));
}

#[tokio::test]
async fn plans_for_another_configuration_or_past_their_window_are_refused() {
    let c = TronChain::start().await;
    let (config, sweep) = c.config("energy = \"none\"");
    let paid = c.paid_session("9").await;
    c.activate(&paid);
    c.credit().await;
    let plan = c.plan(&config, &sweep).await;
    assert_eq!(plan.items[0].energy_available, Some(0));
    assert_eq!(
        plan.warnings.len(),
        1,
        "short of energy: {:?}",
        plan.warnings
    );
    assert_eq!(plan.totals.cost_trx, Decimal::ZERO);
    let signed = sign(&plan, TEST_MNEMONIC, "", None, chrono::Utc::now()).unwrap();

    // Signing after the window, or broadcasting it under another energy mode, is refused.
    let late = plan.expires_at() - chrono::Duration::minutes(5);
    assert!(matches!(
        sign(&plan, TEST_MNEMONIC, "", None, late),
        Err(SignError::Expired(_))
    ));
    let (_, burn) = c.config("energy = \"burn\"");
    let error = Broadcaster::new(&c.app.state, &burn)
        .unwrap()
        .broadcast(&signed)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("energy mode"), "{error}");

    // A plan whose window has passed is refused before anything is recorded or sent.
    let mut expired = plan.clone();
    expired.reference.expiration = chrono::Utc::now().timestamp_millis() - 1000;
    let stale = sign(
        &expired,
        TEST_MNEMONIC,
        "",
        None,
        expired.expires_at() - chrono::Duration::hours(1),
    )
    .unwrap();
    let error = Broadcaster::new(&c.app.state, &sweep)
        .unwrap()
        .broadcast(&stale)
        .await
        .unwrap_err();
    assert!(matches!(error, BroadcastError::Expired(_)), "{error}");
    assert!(c.broadcasts().is_empty());
    assert_eq!(c.app.count("sweeps").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_plans_online_signs_offline_and_broadcasts() {
    const BIN: &str = env!("CARGO_BIN_EXE_checkout-server");
    let c = TronChain::start().await;
    let paid = c.paid_session("11").await;
    c.activate(&paid);
    c.credit().await;
    let config_file = c.dir.join("checkout.toml");
    std::fs::write(&config_file, c.config_text("energy = \"delegate\"")).unwrap();
    let db_url = c.app.state.config.database_url.clone();
    let online = |args: &[&str]| {
        std::process::Command::new(BIN)
            .args(args)
            .env("DATABASE_URL", &db_url)
            .env("CHECKOUT_CONFIG", &config_file)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let plan_file = c.dir.join("plan.json");
    let planned = online(&[
        "sweep",
        "plan",
        "--network",
        "TRON",
        "--mode",
        "test",
        "--out",
        plan_file.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&planned.stderr);
    assert!(planned.status.success(), "{stderr}");
    assert!(stderr.contains("1 addresses, 11 USDT"), "{stderr}");

    // Offline: no database, no configuration, the mnemonic on stdin; never as an argument.
    let signed_file = c.dir.join("signed.json");
    let offline = |args: &[&str], stdin: &str| {
        let mut child = std::process::Command::new(BIN)
            .args(args)
            .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/nothing")
            .env("CHECKOUT_CONFIG", "/nonexistent/checkout.toml")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let refused = offline(
        &[
            "sweep",
            "sign",
            "--plan",
            plan_file.to_str().unwrap(),
            "--mnemonic",
            TEST_MNEMONIC,
        ],
        "",
    );
    assert!(!refused.status.success());
    let signed = offline(
        &[
            "sweep",
            "sign",
            "--plan",
            plan_file.to_str().unwrap(),
            "--out",
            signed_file.to_str().unwrap(),
        ],
        TEST_MNEMONIC,
    );
    assert!(
        signed.status.success(),
        "{}",
        String::from_utf8_lossy(&signed.stderr)
    );
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(&signed_file).unwrap()).unwrap();
    assert_eq!(file["transfers"].as_array().unwrap().len(), 1);
    assert!(
        !file.to_string().contains("abandon"),
        "no secret in the output"
    );

    let sent = online(&["sweep", "broadcast", signed_file.to_str().unwrap()]);
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let report: Value = serde_json::from_slice(&sent.stdout).unwrap();
    assert_eq!(report["status"], "completed", "{report}");
    assert_eq!(report["totals"]["USDT"], "11");
    assert_eq!(c.balance_of(&c.treasury).await, units("11", 6));
}

#[test]
fn broadcast_answers_as_trons_documentation_records_them() {
    use checkout_server::sweep::tron::api::{broadcast_outcome, Broadcast};
    let accepted: Value = serde_json::from_str(
        r#"{ "result": true, "txid": "c558bd35978267d8999baf6148703cbc94786f3f2e22893637588ca05437d7f0" }"#,
    )
    .unwrap();
    assert_eq!(broadcast_outcome(&accepted), Broadcast::Accepted);
    let expired: Value =
        serde_json::from_str(&EXPIRED_ANSWER.replace("{txid}", &"ab".repeat(32))).unwrap();
    assert_eq!(
        broadcast_outcome(&expired),
        Broadcast::Refused {
            code: "TRANSACTION_EXPIRATION_ERROR".into(),
            message: "Transaction expired".into()
        }
    );
    // Already on chain (sent before a crash): as good as accepted.
    let duplicate =
        json!({ "code": "DUP_TRANSACTION_ERROR", "message": hex::encode("Dup transaction.") });
    assert_eq!(broadcast_outcome(&duplicate), Broadcast::Accepted);
    let busy = json!({ "code": "SERVER_BUSY", "message": hex::encode("Server busy.") });
    assert!(matches!(broadcast_outcome(&busy), Broadcast::Busy { .. }));
    let signature = json!({ "code": "SIGERROR", "message": "56616c6964617465207369676e6174757265206572726f72" });
    assert_eq!(
        broadcast_outcome(&signature),
        Broadcast::Refused {
            code: "SIGERROR".into(),
            message: "Validate signature error".into()
        }
    );
}

#[test]
fn transaction_results_are_read_from_the_nodes_answers() {
    use checkout_server::sweep::tron::api::transaction_info;
    assert_eq!(
        transaction_info(&json!({})).unwrap(),
        None,
        "in no block yet"
    );
    // A TRC-20 call as gettransactioninfobyid answers it (TRON's documentation, Nile).
    let ok = json!({
        "id": "01b4cde4", "fee": 5254500, "blockNumber": 66985120,
        "blockTimeStamp": 1777437762000u64, "contractResult": [""],
        "contract_address": "419ff8fc48fb114ccd5bbdc24a86f0c73082f08825",
        "receipt": { "energy_fee": 4458500, "energy_usage_total": 44585, "net_fee": 796000,
                     "result": "SUCCESS" },
        "log": [{ "address": "9ff8fc48fb114ccd5bbdc24a86f0c73082f08825",
                  "topics": ["ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef",
                             "000000000000000000000000dd791d6bd1a9f9a2f4c6b5f7eb1b2c1f0a3b4c5d",
                             "0000000000000000000000000000000000000000000000000000000000000077"],
                  "data": "0000000000000000000000000000000000000000000000000000000000000007" }],
    });
    let info = transaction_info(&ok).unwrap().unwrap();
    assert!(info.succeeded);
    assert_eq!(
        (info.block_number, info.fee, info.energy_used),
        (66985120, 5254500, 44585)
    );
    assert_eq!(info.logs[0].address[0], 0x9f);
    assert_eq!(info.logs[0].data[31], 7);
    // Reverted: `result: FAILED` on top, the reason in the receipt.
    let failed = json!({ "id": "02", "blockNumber": 5, "fee": 100, "result": "FAILED",
                         "receipt": { "energy_usage_total": 64285, "result": "REVERT" } });
    let info = transaction_info(&failed).unwrap().unwrap();
    assert!(!info.succeeded);
    assert_eq!(info.failure.as_deref(), Some("REVERT"));
    // A TRX transfer has no receipt result: it executed.
    let plain = json!({ "id": "03", "blockNumber": 6, "receipt": { "net_fee": 100000 } });
    assert!(transaction_info(&plain).unwrap().unwrap().succeeded);
    assert!(transaction_info(&json!({ "blockNumber": 1, "log": [{ "address": "zz" }] })).is_err());
}

#[tokio::test]
async fn a_staking_account_kept_offline_signs_its_delegations_with_the_transfers() {
    let c = TronChain::start().await;
    let staking_key = k256::ecdsa::SigningKey::from_slice(
        &hex::decode("59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d").unwrap(),
    )
    .unwrap();
    let staking = tron_base58(&tron::account_of(&staking_key));
    let (config, sweep) = c.config(&format!(
        "energy = \"delegate\"\nstaking_account = \"{staking}\""
    ));
    assert!(sweep.staking_key.is_none());
    let paid = c.paid_session("40").await;
    c.activate(&paid);
    c.credit().await;
    let plan = c.plan(&config, &sweep).await;
    assert_eq!(plan.staking_account.as_deref(), Some(staking.as_str()));
    let now = chrono::Utc::now();
    assert!(matches!(
        sign(&plan, TEST_MNEMONIC, "", None, now),
        Err(SignError::NoStakingKey)
    ));
    let gas_key =
        k256::ecdsa::SigningKey::from_slice(&hex::decode(GAS_WALLET_KEY).unwrap()).unwrap();
    assert!(matches!(
        sign(&plan, TEST_MNEMONIC, "", Some(&gas_key), now),
        Err(SignError::WrongStakingKey(_))
    ));
    let signed = sign(&plan, TEST_MNEMONIC, "", Some(&staking_key), now).unwrap();
    assert_eq!(
        (signed.delegations.len(), signed.undelegations.len()),
        (1, 1)
    );
    // Sent last, the undelegation lives longer than the transfers (24 h less a margin).
    let expiration = |t: &checkout_server::sweep::tron::sign::SignedTransaction| {
        tron::Transaction::decode(hex::decode(&t.transaction).unwrap().as_slice())
            .unwrap()
            .raw_data
            .unwrap()
            .expiration
    };
    assert_eq!(expiration(&signed.transfers[0]), plan.reference.expiration);
    assert_eq!(
        expiration(&signed.undelegations[0]),
        plan.reference.block_timestamp + (24 * 60 - 10) * 60 * 1000
    );

    // Without the offline delegations, the server cannot lend the energy: refused up front.
    let mut missing = signed.clone();
    missing.delegations.clear();
    let broadcaster = Broadcaster::new(&c.app.state, &sweep).unwrap();
    assert!(matches!(
        broadcaster.broadcast(&missing).await,
        Err(BroadcastError::Invalid(_))
    ));
    let report = broadcaster.broadcast(&signed).await.unwrap();
    assert_eq!(report.sweep.status, "completed", "{:#?}", report.steps);
    let kinds: Vec<String> = c.broadcasts().into_iter().map(|b| b.0).collect();
    assert_eq!(
        kinds,
        [
            "DelegateResourceContract",
            "TriggerSmartContract",
            "UnDelegateResourceContract"
        ]
    );
    assert_eq!(c.balance_of(&c.treasury).await, units("40", 6));
}
