//! A real EVM node for the watcher tests: anvil from `tests/chain/node_modules` (installed by
//! `npm ci --prefix tests/chain`), a test ERC-20 compiled with solc-js and deployed over
//! JSON-RPC, and helpers to pay, mine, and reorg.

use alloy_primitives::{keccak256, U256};
use serde_json::{json, Value};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn chain_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/chain")
}

fn anvil_bin() -> PathBuf {
    chain_dir().join("node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")
}

/// A contract's creation bytecode from `source` (relative to `tests/chain`), compiled with
/// solc-js once per test run and cached by source hash.
pub fn compiled(source: &str, contract: &str) -> String {
    static CODE: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());
    let id = format!("{source}:{contract}");
    if let Some((_, code)) = CODE.lock().unwrap().iter().find(|(k, _)| *k == id) {
        return code.clone();
    }
    let text = std::fs::read(chain_dir().join(source)).unwrap();
    let script = std::fs::read(chain_dir().join("compile.mjs")).unwrap();
    let key = keccak256([text, script, contract.as_bytes().to_vec()].concat());
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{contract}-{key:x}.json"));
    let json = match std::fs::read_to_string(&cache) {
        Ok(text) => text,
        Err(_) => {
            let out = Command::new("node")
                .arg(chain_dir().join("compile.mjs"))
                .args([source, contract])
                .output()
                .expect("node runs (npm ci --prefix tests/chain first)");
            assert!(
                out.status.success(),
                "solc failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8(out.stdout).unwrap();
            std::fs::write(&cache, &text).unwrap();
            text
        }
    };
    let v: Value = serde_json::from_str(&json).unwrap();
    let code = v["bytecode"].as_str().unwrap().to_owned();
    CODE.lock().unwrap().push((id, code.clone()));
    code
}

fn token_bytecode() -> String {
    compiled("TestToken.sol", "TestToken")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn hex20(raw: &[u8; 20]) -> String {
    format!("0x{}", hex::encode(raw))
}

pub fn word_address(raw: &[u8; 20]) -> String {
    format!("{:0>64}", hex::encode(raw))
}

pub fn word_u256(v: U256) -> String {
    format!("{v:064x}")
}

pub fn selector(signature: &str) -> String {
    hex::encode(&keccak256(signature.as_bytes())[..4])
}

/// An anvil node on a free port, killed when dropped.
pub struct Anvil {
    child: Child,
    pub url: String,
    http: reqwest::Client,
    pub accounts: Vec<[u8; 20]>,
    automine: std::sync::atomic::AtomicBool,
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Anvil {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// With more command-line arguments (`--hardfork prague`, say).
    pub async fn start_with(extra: &[&str]) -> Self {
        let bin = anvil_bin();
        assert!(
            bin.exists(),
            "{} is missing: run `npm ci --prefix tests/chain`",
            bin.display()
        );
        let mut last = None;
        for _ in 0..5 {
            let port = free_port();
            let child = Command::new(&bin)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--accounts", "4", "--chain-id", "31337"])
                // `finalized` = head − 2 × slots: as deep as the tests' 3 confirmations.
                .args(["--slots-in-an-epoch", "1"])
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("anvil starts");
            let mut anvil = Anvil {
                child,
                url: format!("http://127.0.0.1:{port}"),
                http: reqwest::Client::new(),
                accounts: Vec::new(),
                automine: true.into(),
            };
            for _ in 0..100 {
                if let Ok(accounts) = anvil.try_rpc("eth_accounts", json!([])).await {
                    anvil.accounts = accounts
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|a| {
                            checkout_server::chain::rpc::parse_address_hex(a.as_str().unwrap())
                                .unwrap()
                        })
                        .collect();
                    return anvil;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            last = Some(anvil.url.clone());
        }
        panic!("anvil did not answer (last tried {last:?})");
    }

    async fn try_rpc(&self, method: &str, params: Value) -> Result<Value, String> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let res = self
            .http
            .post(&self.url)
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let v: Value = res.json().await.map_err(|e| e.to_string())?;
        match v.get("error") {
            Some(e) if !e.is_null() => Err(e.to_string()),
            _ => Ok(v["result"].clone()),
        }
    }

    /// The node's answer, or its error.
    pub async fn rpc_result(&self, method: &str, params: Value) -> Result<Value, String> {
        self.try_rpc(method, params).await
    }

    pub async fn rpc(&self, method: &str, params: Value) -> Value {
        self.try_rpc(method, params)
            .await
            .unwrap_or_else(|e| panic!("{method}: {e}"))
    }

    /// Sends a transaction from `from` (an unlocked account); returns its hash. With automine
    /// on, it is mined by the time this returns.
    pub async fn send(&self, from: &[u8; 20], to: Option<&[u8; 20]>, data: String) -> String {
        let mut tx = json!({ "from": hex20(from), "data": format!("0x{data}"), "gas": "0x2dc6c0" });
        if let Some(to) = to {
            tx["to"] = json!(hex20(to));
        }
        self.submit("eth_sendTransaction", json!([tx])).await
    }

    /// Submits a transaction; returns its hash (mined when automine is on).
    async fn submit(&self, method: &str, params: Value) -> String {
        let hash = self.rpc(method, params).await.as_str().unwrap().to_owned();
        if self.automine.load(std::sync::atomic::Ordering::SeqCst) {
            self.receipt(&hash).await;
        }
        hash
    }

    /// The receipt, waiting for the block (anvil answers a send before it has mined it).
    pub async fn receipt(&self, hash: &str) -> Value {
        for _ in 0..200 {
            let r = self.rpc("eth_getTransactionReceipt", json!([hash])).await;
            if !r.is_null() {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no receipt for {hash}");
    }

    /// Deploys a test token with `decimals`; returns its address.
    pub async fn deploy_token(&self, decimals: u8) -> [u8; 20] {
        self.deploy(&token_bytecode(), &word_u256(U256::from(decimals)))
            .await
    }

    /// Deploys creation `code` with hex-encoded constructor `args`; returns its address.
    pub async fn deploy(&self, code: &str, args: &str) -> [u8; 20] {
        let data = format!("{}{args}", code.trim_start_matches("0x"));
        let hash = self.send(&self.accounts[0], None, data).await;
        let receipt = self.receipt(&hash).await;
        checkout_server::chain::rpc::parse_address_hex(receipt["contractAddress"].as_str().unwrap())
            .unwrap()
    }

    /// `token.balanceOf(owner)`.
    pub async fn token_balance(&self, token: &[u8; 20], owner: &[u8; 20]) -> U256 {
        let data = format!(
            "0x{}{}",
            selector("balanceOf(address)"),
            word_address(owner)
        );
        let v = self
            .rpc(
                "eth_call",
                json!([{ "to": hex20(token), "data": data }, "latest"]),
            )
            .await;
        U256::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
    }

    pub async fn mint(&self, token: &[u8; 20], to: &[u8; 20], value: U256) -> String {
        let data = format!(
            "{}{}{}",
            selector("mint(address,uint256)"),
            word_address(to),
            word_u256(value)
        );
        self.send(&self.accounts[0], Some(token), data).await
    }

    /// An ERC-20 `transfer` from `from` (minted the value first).
    pub async fn transfer(
        &self,
        token: &[u8; 20],
        from: &[u8; 20],
        to: &[u8; 20],
        value: U256,
    ) -> String {
        self.mint(token, from, value).await;
        let data = format!(
            "{}{}{}",
            selector("transfer(address,uint256)"),
            word_address(to),
            word_u256(value)
        );
        self.send(from, Some(token), data).await
    }

    /// `count` transfers of `value` from `from` to `to`, all in one transaction.
    pub async fn scatter(
        &self,
        token: &[u8; 20],
        from: &[u8; 20],
        to: &[u8; 20],
        value: U256,
        count: u64,
    ) -> String {
        let data = format!(
            "{}{}{}{}",
            selector("scatter(address,uint256,uint256)"),
            word_address(to),
            word_u256(value),
            word_u256(U256::from(count))
        );
        self.send(from, Some(token), data).await
    }

    /// A signed, not yet sent, `transferMany` from `from` (an unlocked account) paying each
    /// `(to, value)`, at a fixed low gas price: the same bytes can be mined again after a revert.
    pub async fn sign_transfer_many(
        &self,
        token: &[u8; 20],
        from: &[u8; 20],
        payments: &[([u8; 20], U256)],
    ) -> String {
        let n = payments.len();
        let mut data = selector("transferMany(address[],uint256[])");
        // Head: two offsets; then each array as length + items.
        data += &word_u256(U256::from(64));
        data += &word_u256(U256::from(64 + 32 * (n + 1)));
        data += &word_u256(U256::from(n));
        for (to, _) in payments {
            data += &word_address(to);
        }
        data += &word_u256(U256::from(n));
        for (_, value) in payments {
            data += &word_u256(*value);
        }
        let nonce = self
            .rpc("eth_getTransactionCount", json!([hex20(from), "pending"]))
            .await;
        let tx = json!({
            "from": hex20(from), "to": hex20(token), "data": format!("0x{data}"),
            "gas": "0x2dc6c0", "gasPrice": "0x77359400", "nonce": nonce,
        });
        self.rpc("eth_signTransaction", json!([tx]))
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Sends a signed transaction; returns its hash (mined when automine is on).
    pub async fn send_raw(&self, raw: &str) -> String {
        self.submit("eth_sendRawTransaction", json!([raw])).await
    }

    /// Mints to `to` at a high gas price (mined ahead of cheaper transactions in one block).
    pub async fn mint_first(&self, token: &[u8; 20], to: &[u8; 20], value: U256) -> String {
        let data = format!(
            "{}{}{}",
            selector("mint(address,uint256)"),
            word_address(to),
            word_u256(value)
        );
        let tx = json!({ "from": hex20(&self.accounts[0]), "to": hex20(token),
                         "data": format!("0x{data}"), "gas": "0x2dc6c0", "gasPrice": "0x174876e800" });
        self.rpc("eth_sendTransaction", json!([tx]))
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The timestamp of block `number` (None: the latest).
    pub async fn block_time(&self, number: Option<u64>) -> u64 {
        let tag = number.map_or_else(|| "latest".to_owned(), |n| format!("{n:#x}"));
        let block = self.rpc("eth_getBlockByNumber", json!([tag, false])).await;
        checkout_server::chain::rpc::parse_quantity(block["timestamp"].as_str().unwrap()).unwrap()
    }

    pub async fn set_blocked(&self, token: &[u8; 20], who: &[u8; 20]) {
        let data = format!(
            "{}{}{}",
            selector("setBlocked(address,bool)"),
            word_address(who),
            word_u256(U256::from(1))
        );
        self.send(&self.accounts[0], Some(token), data).await;
    }

    pub async fn mine(&self, blocks: u64) {
        self.rpc("anvil_mine", json!([format!("{blocks:#x}")]))
            .await;
    }

    pub async fn set_automine(&self, on: bool) {
        self.rpc("evm_setAutomine", json!([on])).await;
        self.automine.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    pub async fn snapshot(&self) -> String {
        self.rpc("evm_snapshot", json!([]))
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn revert(&self, id: &str) {
        assert_eq!(self.rpc("evm_revert", json!([id])).await, json!(true));
    }
}

/// `amount` whole tokens plus `fraction` (a decimal string such as "5") as base units.
pub fn units(amount: &str, decimals: u8) -> U256 {
    let (whole, frac) = amount.split_once('.').unwrap_or((amount, ""));
    assert!(frac.len() <= decimals as usize);
    let digits = format!("{whole}{frac:0<width$}", width = decimals as usize);
    U256::from_str_radix(&digits, 10).unwrap()
}
