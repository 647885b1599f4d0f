//! Sweeps on a real chain (anvil, Prague): deposit addresses delegate to `SweepDelegate` with
//! offline-signed EIP-7702 authorizations, and a gas tank sweeps them into the treasury.

use crate::chain_support::{compiled, hex20, selector, units, word_address, word_u256, Anvil};
use crate::common::{create_merchant_with_xpubs, Merchant, TestApp};
use alloy_primitives::{Address, U256};
use checkout_server::chain::rpc::RetryPolicy;
use checkout_server::chain::watcher::Watcher;
use checkout_server::config::{Config, SweepConfig};
use checkout_server::domain::address::{parse_evm_address, PUBLIC_TEST_EVM_XPUB};
use checkout_server::domain::api_key::Mode;
use checkout_server::domain::network::Network;
use checkout_server::sweep::authorize::authorize;
use checkout_server::sweep::delegate::delegate_address;
use checkout_server::sweep::sweeper::{SweepReport, Sweeper};
use reqwest::StatusCode;
use serde_json::{json, Value};

const TEST_MNEMONIC: &str =
    "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";
/// anvil's fourth default account: the gas tank (it holds only ETH).
const TANK_KEY: &str = "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6";
const CONFIRMATIONS: u64 = 2;

struct SweepChain {
    anvil: Anvil,
    app: TestApp,
    merchant: Merchant,
    merchant_id: uuid::Uuid,
    /// USDT-like: `transfer` returns nothing.
    usdt: [u8; 20],
    /// USDC-like: a standard ERC-20.
    usdc: [u8; 20],
    treasury: Address,
    sweep: SweepConfig,
    watcher: Watcher,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn network_toml(url: &str, usdt: &[u8; 20], usdc: &[u8; 20]) -> String {
    format!(
        r#"
[watcher]
lease_seconds = 2

[networks.BSC.test]
rpc_urls = ["{url}"]
chain_id = 31337
confirmations = {CONFIRMATIONS}
poll_interval_ms = 100
finality = "depth"
tokens.USDT = {{ contract = "{usdt}", decimals = 6 }}
tokens.USDC = {{ contract = "{usdc}", decimals = 6 }}
"#,
        usdt = hex20(usdt),
        usdc = hex20(usdc),
    )
}

impl SweepChain {
    async fn start() -> Self {
        let anvil = Anvil::start_with(&["--hardfork", "prague"]).await;
        let usdt = anvil
            .deploy(&compiled("TetherLikeToken.sol", "TetherLikeToken"), "")
            .await;
        let usdc = anvil.deploy_token(6).await;
        let networks = network_toml(&anvil.url, &usdt, &usdc);
        let app = TestApp::spawn_unwatched(&networks, |_| {}).await;
        let merchant =
            create_merchant_with_xpubs(&app.db, "Sweeper", None, Some(PUBLIC_TEST_EVM_XPUB)).await;
        let merchant_id: uuid::Uuid =
            sqlx::query_scalar("SELECT id FROM merchants WHERE name = 'Sweeper'")
                .fetch_one(&app.db)
                .await
                .unwrap();
        let dir = std::env::temp_dir().join(format!("sweep-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let key_file = dir.join("gas-tank.key");
        std::fs::write(&key_file, format!("{TANK_KEY}\n")).unwrap();
        let treasury = Address::from(rand_address());
        let config = Config::from_toml(&format!(
            r#"{networks}
[sweep.BSC.test]
merchant = "{merchant_id}"
treasury = "{treasury}"
gas_tank_key_file = "{key}"
min_amount = "5"
batch_size = 30
max_gas_price_gwei = "100"
"#,
            key = key_file.display()
        ))
        .unwrap();
        let sweep = config.sweeps[0].clone();
        let net = app.state.config.network(Network::Bsc, Mode::Test).clone();
        let watcher = Watcher::new(&app.state, &net, RetryPolicy::default()).unwrap();
        watcher.tick().await.unwrap();
        SweepChain {
            anvil,
            app,
            merchant,
            merchant_id,
            usdt,
            usdc,
            treasury,
            sweep,
            watcher,
            _dir: TempDir(dir),
        }
    }

    fn sweeper(&self) -> Sweeper {
        Sweeper::new(&self.app.state, &self.sweep).unwrap()
    }

    /// A session paid (and credited) with `amount` of `currency`; returns (id, pay address).
    async fn paid_session(&self, currency: &str, amount: &str) -> (String, [u8; 20]) {
        let (status, body) = self
            .app
            .create_session(
                &self.merchant.test_key,
                json!({
                    "pricing_amount": amount, "pricing_currency": currency,
                    "currency": currency, "network": "BSC",
                    "success_url": "https://shop.example/ok",
                    "cancel_url": "https://shop.example/cancel",
                }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let address = parse_evm_address(body["pay_address"].as_str().unwrap()).unwrap();
        self.pay(currency, &address, amount).await;
        (body["id"].as_str().unwrap().to_owned(), address)
    }

    async fn pay(&self, currency: &str, to: &[u8; 20], amount: &str) {
        let token = if currency == "USDT" {
            self.usdt
        } else {
            self.usdc
        };
        self.anvil.mint(&token, to, units(amount, 6)).await;
    }

    /// Mines the confirmations and lets the watcher credit everything.
    async fn credit(&self) {
        self.anvil.mine(CONFIRMATIONS).await;
        for _ in 0..5 {
            self.watcher.tick().await.unwrap();
        }
    }

    async fn balance_of(&self, token: &[u8; 20], owner: &[u8; 20]) -> U256 {
        self.anvil.token_balance(token, owner).await
    }

    async fn eth_balance(&self, who: &[u8; 20]) -> U256 {
        let v = self
            .anvil
            .rpc("eth_getBalance", json!([hex20(who), "latest"]))
            .await;
        U256::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
    }

    async fn import(&self, from: u32, to: u32) {
        let file = authorize(
            TEST_MNEMONIC,
            "",
            PUBLIC_TEST_EVM_XPUB,
            31337,
            self.sweep.delegate,
            from,
            to,
            0,
        )
        .unwrap();
        checkout_server::service::sweeps::import_authorizations(
            &self.app.db,
            self.merchant_id,
            None,
            &file,
        )
        .await
        .unwrap();
    }

    /// Sweeps, mines the confirmations, and settles; returns the sending and settling reports.
    async fn sweep_now(&self, sweeper: &Sweeper) -> (SweepReport, SweepReport) {
        let sent = sweeper.tick().await.unwrap();
        self.anvil.mine(CONFIRMATIONS).await;
        let settled = sweeper.tick().await.unwrap();
        (sent, settled)
    }

    async fn sweep_json(&self, id: &str) -> Value {
        let (status, body) = self
            .app
            .get(&format!("/v1/sweeps/{id}"), &self.merchant.test_key)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }
}

fn rand_address() -> [u8; 20] {
    rand::random()
}

#[test]
fn the_committed_bytecode_is_what_solc_builds_from_the_source() {
    let built = compiled("../../src/sweep/SweepDelegate.sol", "SweepDelegate");
    let committed: Value =
        serde_json::from_str(include_str!("../../src/sweep/SweepDelegate.json")).unwrap();
    assert_eq!(
        committed["bytecode"].as_str().unwrap(),
        built,
        "src/sweep/SweepDelegate.json is stale: rebuild it with tests/chain/compile.mjs"
    );
}

#[tokio::test]
async fn paid_sessions_are_swept_to_the_treasury_in_one_batch_and_again_after_late_payments() {
    let c = SweepChain::start().await;
    let sweeper = c.sweeper();
    // The delegate is deployed once, at the address the treasury determines.
    let delegate = sweeper.deploy_delegate().await.unwrap();
    assert_eq!(delegate, delegate_address(c.treasury));
    assert_eq!(
        sweeper.deploy_delegate().await.unwrap(),
        delegate,
        "idempotent"
    );

    // Ten sessions paid, alternating USDT and USDC; an eleventh whose address has used its
    // nonce (its authorization is stale); a twelfth below the minimum.
    let mut paid = Vec::new();
    let (mut usdt_sum, mut usdc_sum) = (U256::ZERO, U256::ZERO);
    for i in 0..10 {
        let currency = if i % 2 == 0 { "USDT" } else { "USDC" };
        let amount = format!("{}.25", 10 + i);
        let (_, address) = c.paid_session(currency, &amount).await;
        if currency == "USDT" {
            usdt_sum += units(&amount, 6);
        } else {
            usdc_sum += units(&amount, 6);
        }
        paid.push(address);
    }
    let (_, stale) = c.paid_session("USDT", "20").await;
    c.anvil
        .rpc("anvil_setNonce", json!([hex20(&stale), "0x1"]))
        .await;
    let (_, small) = c.paid_session("USDC", "1").await;
    c.credit().await;
    c.import(0, 20).await;

    let (sent, settled) = c.sweep_now(&sweeper).await;
    assert_eq!(sent.sent.len(), 1, "one batch: {sent:?}");
    assert_eq!(
        sent.stale,
        vec![checkout_server::domain::address::evm_checksum(&stale)]
    );
    assert_eq!(sent.below_minimum, 1, "{sent:?}");
    assert_eq!(settled.settled, sent.sent);
    let usdt_treasury = c.balance_of(&c.usdt, &c.treasury.0 .0).await;
    let usdc_treasury = c.balance_of(&c.usdc, &c.treasury.0 .0).await;
    assert_eq!(
        usdt_treasury, usdt_sum,
        "the treasury got exactly the USDT paid"
    );
    assert_eq!(
        usdc_treasury, usdc_sum,
        "the treasury got exactly the USDC paid"
    );
    for address in &paid {
        assert_eq!(c.balance_of(&c.usdt, address).await, U256::ZERO);
        assert_eq!(c.balance_of(&c.usdc, address).await, U256::ZERO);
        assert_eq!(
            c.eth_balance(address).await,
            U256::ZERO,
            "no gas was ever sent to a deposit address"
        );
    }
    assert_eq!(
        c.balance_of(&c.usdt, &stale).await,
        units("20", 6),
        "skipped, untouched"
    );
    assert_eq!(
        c.balance_of(&c.usdc, &small).await,
        units("1", 6),
        "below the minimum"
    );

    let first = c.sweep_json(&sent.sent[0]).await;
    assert_eq!(first["status"], "completed", "{first}");
    assert_eq!(first["authorizations"], 10);
    assert_eq!(first["items"].as_array().unwrap().len(), 10);
    assert!(first["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["swept_amount"] == i["expected_amount"]));
    let fresh_gas = first["gas_used"].as_i64().unwrap();
    println!(
        "sweep gas, fresh batch of 10 (with authorizations): {fresh_gas} in all, {} per address",
        fresh_gas / 10
    );

    // A sweep.completed event, listed by type.
    let (status, events) = c
        .app
        .get("/v1/events?type=sweep.completed", &c.merchant.test_key)
        .await;
    assert_eq!(status, StatusCode::OK, "{events}");
    assert_eq!(events["data"][0]["data"]["id"], first["id"]);
    let (status, list) = c
        .app
        .get("/v1/sweeps?page=1&page_size=5", &c.merchant.test_key)
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["meta"]["total"], 1);
    let (status, live) = c.app.get("/v1/sweeps", &c.merchant.live_key).await;
    assert_eq!(status, StatusCode::OK, "{live}");
    assert_eq!(
        live["meta"]["total"], 0,
        "test sweeps are not the live key's"
    );
    let (status, ready) = c.app.get("/readyz", "").await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(
        ready["checks"]["sweeps"]["BSC/test"]["status"], "ok",
        "{ready}"
    );

    // Nothing new: nothing is sent.
    let idle = c.sweeper().tick().await.unwrap();
    assert!(idle.sent.is_empty(), "{idle:?}");

    // Late payments to five swept addresses: swept next time, with no authorization (they
    // are delegated already), in a plain EIP-1559 transaction.
    let mut late_sum = U256::ZERO;
    for address in &paid[..5] {
        c.pay("USDT", address, "7.5").await;
        late_sum += units("7.5", 6);
    }
    c.credit().await;
    let (again, _) = c.sweep_now(&sweeper).await;
    assert_eq!(again.sent.len(), 1, "{again:?}");
    let second = c.sweep_json(&again.sent[0]).await;
    assert_eq!(second["status"], "completed", "{second}");
    assert_eq!(second["authorizations"], 0);
    let tx = c
        .anvil
        .rpc("eth_getTransactionByHash", json!([second["tx_hash"]]))
        .await;
    assert_eq!(tx["type"], "0x2", "no authorization, no type-4 transaction");
    assert_eq!(
        c.balance_of(&c.usdt, &c.treasury.0 .0).await,
        usdt_sum + late_sum
    );
    let repeat_gas = second["gas_used"].as_i64().unwrap();
    println!(
        "sweep gas, repeat batch of 5 (delegated): {repeat_gas} in all, {} per address",
        repeat_gas / 5
    );
    for address in &paid {
        assert_eq!(c.eth_balance(address).await, U256::ZERO);
    }
}

#[tokio::test]
async fn no_call_can_send_a_delegated_address_funds_anywhere_but_the_treasury() {
    let c = SweepChain::start().await;
    let mut low = c.sweep.clone();
    low.low_gas_balance = rust_decimal::Decimal::from(1_000_000);
    let sweeper = Sweeper::new(&c.app.state, &low).unwrap();
    sweeper.deploy_delegate().await.unwrap();
    let (_, address) = c.paid_session("USDC", "50").await;
    c.credit().await;
    c.import(0, 5).await;
    // Delegate the address (and sweep it) once.
    let (sent, _) = c.sweep_now(&sweeper).await;
    assert_eq!(sent.sent.len(), 1);
    let (_, ready) = c.app.get("/readyz", "").await;
    assert_eq!(
        ready["checks"]["sweeps"]["BSC/test"]["status"], "low",
        "{ready}"
    );
    assert_eq!(
        ready["status"], "ready",
        "a low gas tank warns; it does not stop payments"
    );
    c.pay("USDC", &address, "30").await;
    let attacker = c.anvil.accounts[2];

    // An ERC-20 transfer "from" the deposit address: its code has no such function.
    let transfer = format!(
        "{}{}{}",
        selector("transfer(address,uint256)"),
        word_address(&attacker),
        word_u256(units("30", 6))
    );
    let call = json!([{ "from": hex20(&attacker), "to": hex20(&address),
                        "data": format!("0x{transfer}") }, "latest"]);
    let direct = c.anvil.rpc_result("eth_call", call).await;
    assert!(direct.is_err(), "an unknown call reverts: {direct:?}");
    // Nor can the token be called through it: `sweep` pays the treasury whoever calls.
    let sweep_call = format!(
        "{}{}{}{}",
        selector("sweep(address[])"),
        word_u256(U256::from(32)),
        word_u256(U256::from(1)),
        word_address(&c.usdc)
    );
    c.anvil.send(&attacker, Some(&address), sweep_call).await;
    assert_eq!(c.balance_of(&c.usdc, &attacker).await, U256::ZERO);
    assert_eq!(c.balance_of(&c.usdc, &address).await, U256::ZERO);
    assert_eq!(
        c.balance_of(&c.usdc, &c.treasury.0 .0).await,
        units("80", 6),
        "the attacker's call swept to the treasury"
    );
    // A native coin sent to the delegated address is accepted, and swept to the treasury.
    let before = c.eth_balance(&c.treasury.0 .0).await;
    c.anvil
        .rpc(
            "eth_sendTransaction",
            json!([{ "from": hex20(&attacker), "to": hex20(&address), "value": "0x3e8" }]),
        )
        .await;
    c.anvil.mine(1).await;
    let sweep_native = format!(
        "{}{}{}",
        selector("sweep(address[])"),
        word_u256(U256::from(32)),
        word_u256(U256::ZERO)
    );
    c.anvil.send(&attacker, Some(&address), sweep_native).await;
    assert_eq!(
        c.eth_balance(&c.treasury.0 .0).await,
        before + U256::from(1000)
    );
}

#[tokio::test]
async fn a_stale_authorization_in_a_batch_is_skipped_by_the_chain_and_the_rest_is_swept() {
    use alloy_consensus::{SignableTransaction, TxEip7702, TxEnvelope};
    use alloy_eips::eip2718::Encodable2718;
    use alloy_signer::SignerSync;
    use std::str::FromStr;

    let c = SweepChain::start().await;
    let sweeper = c.sweeper();
    let delegate = sweeper.deploy_delegate().await.unwrap();
    let (_, fresh) = c.paid_session("USDC", "12").await;
    let (_, used) = c.paid_session("USDC", "13").await;
    c.credit().await;
    // The second address's key sent a transaction meanwhile: nonce 0 no longer applies.
    c.anvil
        .rpc("anvil_setNonce", json!([hex20(&used), "0x1"]))
        .await;
    let file = authorize(
        TEST_MNEMONIC,
        "",
        PUBLIC_TEST_EVM_XPUB,
        31337,
        delegate,
        0,
        2,
        0,
    )
    .unwrap();
    let authorizations: Vec<_> = file
        .authorizations
        .iter()
        .map(|e| e.signed(31337, delegate))
        .collect();
    let tank = alloy_signer_local::PrivateKeySigner::from_str(TANK_KEY).unwrap();
    let nonce = c
        .anvil
        .rpc(
            "eth_getTransactionCount",
            json!([tank.address().to_string(), "latest"]),
        )
        .await;
    let tx = TxEip7702 {
        chain_id: 31337,
        nonce: checkout_server::chain::rpc::parse_quantity(nonce.as_str().unwrap()).unwrap(),
        gas_limit: 500_000,
        max_fee_per_gas: 20_000_000_000,
        max_priority_fee_per_gas: 1_000_000_000,
        to: delegate,
        value: U256::ZERO,
        access_list: Default::default(),
        authorization_list: authorizations,
        input: checkout_server::sweep::delegate::sweep_many_call(
            vec![Address::from(fresh), Address::from(used)],
            vec![Address::from(c.usdc)],
        ),
    };
    let signature = tank.sign_hash_sync(&tx.signature_hash()).unwrap();
    let raw = TxEnvelope::from(tx.into_signed(signature)).encoded_2718();
    let hash = c.anvil.send_raw(&format!("0x{}", hex::encode(raw))).await;
    let receipt = c.anvil.receipt(&hash).await;
    assert_eq!(receipt["status"], "0x1", "the batch succeeds: {receipt}");
    assert_eq!(c.balance_of(&c.usdc, &fresh).await, U256::ZERO);
    assert_eq!(
        c.balance_of(&c.usdc, &used).await,
        units("13", 6),
        "skipped"
    );
    assert_eq!(
        c.balance_of(&c.usdc, &c.treasury.0 .0).await,
        units("12", 6)
    );
    let code = c
        .anvil
        .rpc("eth_getCode", json!([hex20(&used), "latest"]))
        .await;
    assert_eq!(code, "0x", "the stale authorization was not applied");
}

#[tokio::test]
async fn a_token_that_refuses_keeps_its_balance_while_the_rest_is_swept_and_stops_costing_gas() {
    let c = SweepChain::start().await;
    let sweeper = c.sweeper();
    sweeper.deploy_delegate().await.unwrap();
    // USDC (a standard token here) refuses transfers to the treasury, as a blacklist would.
    c.anvil.set_blocked(&c.usdc, &c.treasury.0 .0).await;
    let (_, both) = c.paid_session("USDT", "20").await;
    c.pay("USDC", &both, "20").await;
    let (_, usdc_only) = c.paid_session("USDC", "30").await;
    c.credit().await;
    c.import(0, 5).await;

    let (sent, settled) = c.sweep_now(&sweeper).await;
    assert_eq!(sent.sent.len(), 1, "{sent:?}");
    assert!(settled.given_up.is_empty(), "{settled:?}");
    assert_eq!(c.balance_of(&c.usdt, &both).await, U256::ZERO, "USDT swept");
    assert_eq!(
        c.balance_of(&c.usdc, &both).await,
        units("20", 6),
        "USDC refused, kept"
    );
    assert_eq!(c.balance_of(&c.usdc, &usdc_only).await, units("30", 6));
    let first = c.sweep_json(&sent.sent[0]).await;
    assert_eq!(first["status"], "completed");
    assert_eq!(first["totals"]["USDT"], "20");

    // The address that moves nothing is tried again, at most three times in all.
    let mut given_up = settled.given_up;
    for _ in 0..4 {
        let (_, settled) = c.sweep_now(&sweeper).await;
        given_up.extend(settled.given_up);
    }
    let usdc_only_text = checkout_server::domain::address::evm_checksum(&usdc_only);
    assert_eq!(given_up, vec![usdc_only_text.clone()]);
    let tries: i64 = sqlx::query_scalar("SELECT count(*) FROM sweep_items WHERE address = $1")
        .bind(&usdc_only_text)
        .fetch_one(&c.app.db)
        .await
        .unwrap();
    assert_eq!(tries, 3, "three sweeps tried it");
    let idle = sweeper.tick().await.unwrap();
    assert!(
        idle.sent.is_empty() && idle.in_flight == 0,
        "no more gas spent on it: {idle:?}"
    );
    // Its next payment makes it a candidate again.
    c.pay("USDC", &usdc_only, "1").await;
    c.credit().await;
    let (retry, _) = c.sweep_now(&sweeper).await;
    assert_eq!(retry.sent.len(), 1, "{retry:?}");
}
