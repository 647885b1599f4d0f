//! What watching TRON mainnet USDT costs: RPC calls, bytes each way and CPU per hour of chain.
//!
//! The stub chain carries 70 unrelated USDT transfers per block and 100 payments of exactly
//! 10 USDT to watched addresses in random blocks of the first 1,000; 1,000, 10,000 and 100,000
//! open TRON sessions are watched, with `scan = "recipients"`, `"contract"` and `"auto"`. The
//! watcher runs caught up at TRON's default poll interval (6 s): the head grows by two blocks,
//! then one cycle runs. Every payment must be credited, or the bench fails.
//!
//! The node is a stub of java-tron's `/jsonrpc` in this process (its own thread), with its
//! limits (5,000-block ranges, 1,000 topics per position, 10,000 results, batches of 100), so
//! the figures are what a real node would be asked for.
//!
//! `cargo bench --bench watcher_cost` (BENCH_DATABASE_URL: an admin URL, default
//! postgres://postgres@127.0.0.1:5432/postgres).

use alloy_primitives::{keccak256, B256};
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use checkout_server::chain::rpc::{parse_quantity, quantity, RetryPolicy, TRANSFER_TOPIC};
use checkout_server::chain::watcher::Watcher;
use checkout_server::config::Config;
use checkout_server::domain::address::{tron_base58, PUBLIC_TEST_TRON_XPUB};
use checkout_server::domain::api_key::Mode;
use checkout_server::domain::network::Network;
use checkout_server::service::merchants::{self, MerchantSpec};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

// ---- the scenario ----

/// A mainnet-like height (hashes and numbers take their real sizes).
const START: u64 = 78_000_000;
/// Blocks that carry payments (50 minutes of chain).
const BLOCKS: u64 = 1_000;
/// Blocks after them, so the last payments reach their confirmations (same traffic).
const TAIL: u64 = 20;
/// Blocks the watcher sees arrive, one cycle each.
const CHAIN_BLOCKS: u64 = BLOCKS + TAIL;
/// TRON's default poll interval (6 s) over 3 s blocks: a cycle sees two new blocks.
const BLOCKS_PER_CYCLE: u64 = 2;
const BLOCKS_PER_HOUR: u64 = 1_200;
const BLOCK_SECONDS: u64 = 3;
const UNRELATED_PER_BLOCK: usize = 70;
const PAYMENTS: usize = 100;
/// 10 USDT in base units (6 decimals).
const PAYMENT_UNITS: u64 = 10_000_000;
const CONFIRMATIONS: u32 = 19;
/// Nile's chain id (the network config is test mode, whose defaults are Nile's).
const CHAIN_ID: u64 = 0xcd86_90dc;
const SEED: u64 = 0x7a0c_05e5;

// java-tron's defaults.
/// The solidified block trails the head by this much when no slot is missed.
const SOLIDIFIED_LAG: u64 = 18;
const MAX_BLOCK_RANGE: u64 = 5_000;
const MAX_SUB_TOPICS: usize = 1_000;
const MAX_RESULTS: usize = 10_000;
const MAX_BATCH: usize = 100;

// ---- CPU time ----

/// User + system CPU time from a `/proc/.../stat` file (a process or a thread).
fn cpu_of(path: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(path).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    // Fields 14 and 15 of the line (utime, stime), counted after the command name; 100 Hz.
    Some(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

fn process_cpu() -> Duration {
    cpu_of("/proc/self/stat").unwrap_or_default()
}

/// This thread's id, for reading its CPU time from another thread.
fn thread_id() -> Option<u32> {
    std::fs::read_link("/proc/thread-self")
        .ok()?
        .file_name()?
        .to_str()?
        .parse()
        .ok()
}

// ---- the stub node ----

/// Calls counted by method; the last slot is every other method.
const METHODS: [&str; 4] = [
    "eth_getLogs",
    "eth_getBlockByNumber",
    "eth_blockNumber",
    "eth_getTransactionReceipt",
];

#[derive(Default)]
struct Counters {
    http_requests: AtomicU64,
    rpc_calls: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    by_method: [AtomicU64; METHODS.len() + 1],
}

struct StubLog {
    topics: [[u8; 32]; 3],
    from: [u8; 20],
    /// The log, serialized as java-tron sends it.
    json: String,
}

struct Chain {
    head: AtomicU64,
    token: [u8; 20],
    /// The time of block `START`, in seconds.
    t0: u64,
    /// Blocks `START..START + CHAIN_BLOCKS`, their logs in order.
    blocks: Vec<Vec<StubLog>>,
    /// A transaction's block and position.
    txs: HashMap<B256, (u64, usize)>,
    counters: Counters,
}

type RpcError = (i64, String);

fn invalid(message: impl Into<String>) -> RpcError {
    (-32602, message.into())
}

/// TRON's block hash: the height in the first 8 bytes.
fn block_hash(n: u64) -> B256 {
    let mut hash = [0u8; 32];
    hash[..8].copy_from_slice(&n.to_be_bytes());
    hash[8..].copy_from_slice(&keccak256(n.to_be_bytes())[..24]);
    B256::from(hash)
}

fn word(address: &[u8; 20]) -> [u8; 32] {
    let mut w = [0u8; 32];
    w[12..].copy_from_slice(address);
    w
}

fn zeros(bytes: usize) -> String {
    "0".repeat(bytes * 2)
}

/// `0x` + 40 hex digits: java-tron refuses the `41…` form in filters.
fn parse_address(s: &str) -> Option<[u8; 20]> {
    let digits = s.strip_prefix("0x")?;
    let mut out = [0u8; 20];
    hex::decode_to_slice(digits, &mut out).ok()?;
    Some(out)
}

fn parse_word(s: &str) -> Option<[u8; 32]> {
    let digits = s.strip_prefix("0x")?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(digits, &mut out).ok()?;
    Some(out)
}

fn response(id: &Value, result: Result<String, RpcError>) -> String {
    match result {
        Ok(result) => format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{result}}}"#),
        Err((code, message)) => format!(
            r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":{code},"message":{},"data":"{{}}"}}}}"#,
            Value::String(message)
        ),
    }
}

impl Chain {
    /// 70 unrelated transfers per block, and `payments` (block, recipient) at random positions.
    fn new(rng: &mut StdRng, token: [u8; 20], payments: &[(u64, [u8; 20])], t0: u64) -> Self {
        let topic0 = parse_word(TRANSFER_TOPIC).expect("the Transfer topic");
        let mut blocks = Vec::with_capacity(CHAIN_BLOCKS as usize);
        let mut txs = HashMap::new();
        for b in START..START + CHAIN_BLOCKS {
            let mut transfers: Vec<([u8; 20], [u8; 20], u64)> = (0..UNRELATED_PER_BLOCK)
                .map(|_| {
                    (
                        rng.gen(),
                        rng.gen(),
                        rng.gen_range(1_000_000..50_000_000_000),
                    )
                })
                .collect();
            for (_, to) in payments.iter().filter(|(block, _)| *block == b) {
                let at = rng.gen_range(0..=transfers.len());
                transfers.insert(at, (rng.gen(), *to, PAYMENT_UNITS));
            }
            let hash = block_hash(b);
            let logs: Vec<StubLog> = transfers
                .into_iter()
                .enumerate()
                .map(|(i, (from, to, value))| {
                    let tx = keccak256([b.to_be_bytes(), (i as u64).to_be_bytes()].concat());
                    txs.insert(tx, (b, i));
                    let json = format!(
                        r#"{{"address":"0x{}","blockHash":"{hash}","blockNumber":"{}","data":"0x{value:064x}","logIndex":"{}","removed":false,"topics":["{TRANSFER_TOPIC}","0x{}","0x{}"],"transactionHash":"{tx}","transactionIndex":"{}"}}"#,
                        hex::encode(token),
                        quantity(b),
                        quantity(i as u64),
                        hex::encode(word(&from)),
                        hex::encode(word(&to)),
                        quantity(i as u64),
                    );
                    StubLog {
                        topics: [topic0, word(&from), word(&to)],
                        from,
                        json,
                    }
                })
                .collect();
            blocks.push(logs);
        }
        Self {
            head: AtomicU64::new(START - 1),
            token,
            t0,
            blocks,
            txs,
            counters: Counters::default(),
        }
    }

    /// In seconds, as java-tron 4.6+ answers.
    fn timestamp(&self, n: u64) -> u64 {
        match n.checked_sub(START) {
            Some(after) => self.t0 + after * BLOCK_SECONDS,
            None => self.t0.saturating_sub((START - n) * BLOCK_SECONDS),
        }
    }

    /// One HTTP request: a single call or a batch. Empty when nothing is to be answered.
    fn handle(&self, body: &[u8]) -> Vec<u8> {
        let c = &self.counters;
        c.http_requests.fetch_add(1, Ordering::Relaxed);
        c.bytes_in.fetch_add(body.len() as u64, Ordering::Relaxed);
        // One head for the whole request.
        let head = self.head.load(Ordering::SeqCst);
        let out = match serde_json::from_slice::<Value>(body) {
            Err(_) => Some(response(
                &Value::Null,
                Err((-32700, "Parse json error".into())),
            )),
            Ok(Value::Array(batch)) if batch.is_empty() => Some(response(
                &Value::Null,
                Err((-32600, "Invalid Request".into())),
            )),
            Ok(Value::Array(batch)) if batch.len() > MAX_BATCH => {
                let message = format!(
                    "Batch size {} exceeds the limit of {MAX_BATCH}",
                    batch.len()
                );
                Some(response(&Value::Null, Err((-32005, message))))
            }
            Ok(Value::Array(batch)) => {
                let answers: Vec<String> = batch.iter().filter_map(|r| self.one(r, head)).collect();
                (!answers.is_empty()).then(|| format!("[{}]", answers.join(",")))
            }
            Ok(request) => self.one(&request, head),
        };
        let out = out.unwrap_or_default().into_bytes();
        c.bytes_out.fetch_add(out.len() as u64, Ordering::Relaxed);
        out
    }

    /// One JSON-RPC call; `None` for a notification (no `id`).
    fn one(&self, request: &Value, head: u64) -> Option<String> {
        self.counters.rpc_calls.fetch_add(1, Ordering::Relaxed);
        let Some(request) = request.as_object() else {
            return Some(response(
                &Value::Null,
                Err((-32600, "Invalid Request".into())),
            ));
        };
        let params = request.get("params").unwrap_or(&Value::Null);
        let method = request.get("method").and_then(Value::as_str);
        let slot = METHODS
            .iter()
            .position(|m| Some(*m) == method)
            .unwrap_or(METHODS.len());
        self.counters.by_method[slot].fetch_add(1, Ordering::Relaxed);
        let result = match method {
            Some(method) => self.call(method, params, head),
            None => Err((-32600, "Invalid Request".into())),
        };
        request.get("id").map(|id| response(id, result))
    }

    fn call(&self, method: &str, params: &Value, head: u64) -> Result<String, RpcError> {
        let quoted = |s: String| format!("\"{s}\"");
        match method {
            "eth_chainId" => Ok(quoted(quantity(CHAIN_ID))),
            "eth_blockNumber" => Ok(quoted(quantity(head))),
            "eth_getBlockByNumber" => {
                let tag = params.get(0).and_then(Value::as_str).unwrap_or("");
                let n = self.block_number(tag, head)?;
                Ok(self.block(n, head))
            }
            "eth_getBlockByHash" => {
                let hash = params.get(0).and_then(Value::as_str).unwrap_or("");
                let hash = B256::from_str(hash).map_err(|_| invalid("invalid hash value"))?;
                let n = u64::from_be_bytes(hash[..8].try_into().expect("8 bytes"));
                Ok(if block_hash(n) == hash {
                    self.block(n, head)
                } else {
                    "null".into()
                })
            }
            "eth_getLogs" => self.logs(params.get(0).unwrap_or(&Value::Null), head),
            "eth_getTransactionReceipt" => {
                let hash = params.get(0).and_then(Value::as_str).unwrap_or("");
                let hash = B256::from_str(hash).map_err(|_| invalid("invalid hash value"))?;
                Ok(self.receipt(&hash, head))
            }
            _ => Err((-32601, format!("method {method} not found"))),
        }
    }

    /// A block number or tag; `finalized` is the solidified block.
    fn block_number(&self, tag: &str, head: u64) -> Result<u64, RpcError> {
        match tag {
            "latest" => Ok(head),
            "earliest" => Ok(0),
            "finalized" => Ok(head.saturating_sub(SOLIDIFIED_LAG)),
            "pending" | "safe" => Err(invalid(format!("TAG {tag} not supported"))),
            _ => parse_quantity(tag).ok_or_else(|| invalid("invalid block number")),
        }
    }

    /// A header as java-tron answers it (no transactions listed); `null` above the head.
    fn block(&self, n: u64, head: u64) -> String {
        if n > head {
            return "null".into();
        }
        let z32 = zeros(32);
        format!(
            r#"{{"number":"{}","hash":"{}","parentHash":"{}","miner":"0x{}","timestamp":"{}","size":"0x73d","transactionsRoot":"{}","stateRoot":"0x","transactions":[],"uncles":[],"gasLimit":"0x0","gasUsed":"0x0","difficulty":"0x0","totalDifficulty":"0x0","extraData":"0x","logsBloom":"0x{}","nonce":"0x0000000000000000","sha3Uncles":"0x{z32}","receiptsRoot":"0x{z32}","mixHash":"0x{z32}","baseFeePerGas":"0x0"}}"#,
            quantity(n),
            block_hash(n),
            block_hash(n.saturating_sub(1)),
            hex::encode(&keccak256((n % 27).to_be_bytes())[..20]),
            quantity(self.timestamp(n)),
            keccak256([n.to_be_bytes(), *b"txroot\0\0"].concat()),
            zeros(256),
        )
    }

    fn receipt(&self, hash: &B256, head: u64) -> String {
        let Some(&(b, i)) = self.txs.get(hash) else {
            return "null".into();
        };
        if b > head {
            return "null".into();
        }
        let log = &self.blocks[(b - START) as usize][i];
        format!(
            r#"{{"blockHash":"{}","blockNumber":"{}","contractAddress":null,"cumulativeGasUsed":"0x0","effectiveGasPrice":"0xd2","from":"0x{}","gasUsed":"0x0","logs":[{}],"logsBloom":"0x{}","status":"0x1","to":"0x{}","transactionHash":"{hash}","transactionIndex":"{}","type":"0x0"}}"#,
            block_hash(b),
            quantity(b),
            hex::encode(log.from),
            log.json,
            zeros(256),
            hex::encode(self.token),
            quantity(i as u64),
        )
    }

    /// `eth_getLogs` as java-tron's `LogFilterWrapper` and `LogFilter` read the filter.
    fn logs(&self, filter: &Value, head: u64) -> Result<String, RpcError> {
        let filter = filter
            .as_object()
            .ok_or_else(|| invalid("invalid filter"))?;
        let (from, to) = self.log_range(filter, head)?;
        let contracts: Vec<[u8; 20]> = match filter.get("address") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => {
                vec![parse_address(s).ok_or_else(|| invalid("invalid address: invalid hex"))?]
            }
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    a.as_str().and_then(parse_address).ok_or_else(|| {
                        invalid(format!("invalid address at index {i}: [invalid hex]"))
                    })
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(invalid("invalid addresses in query")),
        };
        // Per position: `None` matches anything.
        let topics: Vec<Option<HashSet<[u8; 32]>>> = match filter.get("topics") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(positions)) => {
                if positions.len() > 4 {
                    return Err(invalid("topics size should be <= 4"));
                }
                positions
                    .iter()
                    .map(|p| match p {
                        Value::Null => Ok(None),
                        Value::String(s) => parse_word(s)
                            .map(|w| Some(HashSet::from([w])))
                            .ok_or_else(|| invalid("invalid topic(s)")),
                        Value::Array(words) if words.len() > MAX_SUB_TOPICS => {
                            Err(invalid(format!("exceed max topics: {MAX_SUB_TOPICS}")))
                        }
                        Value::Array(words) => words
                            .iter()
                            .map(|w| w.as_str().and_then(parse_word))
                            .collect::<Option<HashSet<_>>>()
                            .map(|set| (!set.is_empty()).then_some(set))
                            .ok_or_else(|| invalid("invalid topic(s)")),
                        _ => Err(invalid("invalid topic(s)")),
                    })
                    .collect::<Result<_, _>>()?
            }
            Some(_) => return Err(invalid("invalid topic(s)")),
        };
        let mut out = String::from("[");
        let mut found = 0;
        if contracts.is_empty() || contracts.contains(&self.token) {
            let first = from.max(START);
            let last = to.min(head).min(START + CHAIN_BLOCKS - 1);
            for b in first..=last {
                for log in &self.blocks[(b - START) as usize] {
                    let matches = topics.iter().enumerate().all(|(i, wanted)| {
                        i < log.topics.len()
                            && wanted
                                .as_ref()
                                .is_none_or(|set| set.contains(&log.topics[i]))
                    });
                    if !matches {
                        continue;
                    }
                    found += 1;
                    if found > MAX_RESULTS {
                        let message = format!("query returned more than {MAX_RESULTS} results");
                        return Err((-32005, message));
                    }
                    if found > 1 {
                        out.push(',');
                    }
                    out.push_str(&log.json);
                }
            }
        }
        out.push(']');
        Ok(out)
    }

    /// `(from, to)`; `to` is `u64::MAX` for an open end ("latest" follows the head).
    fn log_range(&self, filter: &Map<String, Value>, head: u64) -> Result<(u64, u64), RpcError> {
        if let Some(hash) = filter.get("blockHash").and_then(Value::as_str) {
            if filter.contains_key("fromBlock") || filter.contains_key("toBlock") {
                return Err(invalid(
                    "cannot specify both BlockHash and FromBlock/ToBlock, choose one or the other",
                ));
            }
            let hash = B256::from_str(hash).map_err(|_| invalid("invalid blockHash"))?;
            let n = u64::from_be_bytes(hash[..8].try_into().expect("8 bytes"));
            if block_hash(n) != hash || n > head {
                return Err(invalid("invalid blockHash"));
            }
            return Ok((n, n));
        }
        let tag = |key: &str| {
            filter
                .get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        let (from, to) = match (tag("fromBlock"), tag("toBlock")) {
            (None, None) => (head, u64::MAX),
            (None, Some(to)) => {
                let to = match to {
                    "latest" => u64::MAX,
                    t => self.block_number(t, head)?,
                };
                (to.min(head), to)
            }
            (Some(from), None) => (self.block_number(from, head)?, u64::MAX),
            (Some(from), Some(to)) => {
                let from = self.block_number(from, head)?;
                let to = match to {
                    "latest" => u64::MAX,
                    t => self.block_number(t, head)?,
                };
                if from > to {
                    return Err(invalid("please verify: fromBlock <= toBlock"));
                }
                (from, to)
            }
        };
        // java-tron compares the difference, so 5,001 blocks still pass.
        if to.min(head).saturating_sub(from) > MAX_BLOCK_RANGE {
            return Err(invalid(format!(
                "exceed max block range: {MAX_BLOCK_RANGE}"
            )));
        }
        Ok((from, to))
    }
}

struct Stub {
    url: String,
    /// The stub's thread, whose CPU time is the node's share of the process's.
    tid: Option<u32>,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl Stub {
    fn cpu(&self) -> Duration {
        self.tid
            .and_then(|tid| cpu_of(&format!("/proc/self/task/{tid}/stat")))
            .unwrap_or_default()
    }
}

/// Serves `chain` on its own thread (a current-thread runtime), so its CPU time is measurable.
fn start_stub(chain: Arc<Chain>) -> anyhow::Result<Stub> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let url = format!("http://{}/", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tid_tx.send(thread_id());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("the stub's runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let app = axum::Router::new()
                .route(
                    "/",
                    axum::routing::post(move |body: Bytes| {
                        let chain = chain.clone();
                        async move {
                            (
                                [(axum::http::header::CONTENT_TYPE, "application/json")],
                                chain.handle(&body),
                            )
                        }
                    }),
                )
                // java-tron reads any body size.
                .layer(DefaultBodyLimit::disable());
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
    });
    let tid = tid_rx.recv().ok().flatten();
    Ok(Stub { url, tid, stop })
}

/// The stub answers batches and enforces java-tron's limits (the watcher is moving to batches
/// and block tags; this bench must not be what breaks).
async fn stub_self_check() -> anyhow::Result<()> {
    let mut rng = StdRng::seed_from_u64(SEED);
    let chain = Arc::new(Chain::new(&mut rng, [7; 20], &[], 1_700_000_000));
    chain.head.store(START + CHAIN_BLOCKS - 1, Ordering::SeqCst);
    let stub = start_stub(chain.clone())?;
    let http = reqwest::Client::new();
    let post = |body: Value| {
        let request = http.post(&stub.url).json(&body);
        async move { anyhow::Ok(request.send().await?.json::<Value>().await?) }
    };
    let call = |id: Value, method: &str, params: Value| serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    let logs = |from: u64, to: u64, topics: Value| {
        serde_json::json!([{"fromBlock": quantity(from), "toBlock": quantity(to),
            "address": [format!("0x{}", hex::encode([7u8; 20]))], "topics": topics}])
    };
    let error = |answer: &Value| answer["error"]["code"].as_i64();

    let batch = post(Value::Array(vec![
        call(1.into(), "eth_blockNumber", Value::Array(vec![])),
        call(
            "a".into(),
            "eth_getBlockByNumber",
            serde_json::json!(["finalized", false]),
        ),
        call(3.into(), "eth_foo", Value::Array(vec![])),
    ]))
    .await?;
    let by_id = |id: Value| {
        batch
            .as_array()
            .and_then(|a| a.iter().find(|r| r["id"] == id))
    };
    let head = START + CHAIN_BLOCKS - 1;
    anyhow::ensure!(
        by_id(1.into()).map(|r| r["result"].clone()) == Some(quantity(head).into()),
        "{batch}"
    );
    let finalized = by_id("a".into()).map(|r| r["result"]["number"].clone());
    anyhow::ensure!(
        finalized == Some(quantity(head - SOLIDIFIED_LAG).into()),
        "{batch}"
    );
    anyhow::ensure!(by_id(3.into()).and_then(error) == Some(-32601), "{batch}");

    let too_many = Value::Array(
        (0..=MAX_BATCH)
            .map(|i| call(i.into(), "eth_chainId", Value::Array(vec![])))
            .collect(),
    );
    anyhow::ensure!(error(&post(too_many).await?) == Some(-32005), "batch limit");
    let topic = Value::from(TRANSFER_TOPIC);
    let range = post(call(
        1.into(),
        "eth_getLogs",
        logs(START - 5_001, START, Value::Null),
    ))
    .await?;
    anyhow::ensure!(error(&range) == Some(-32602), "{range}");
    let words = Value::Array(vec![
        Value::from(format!("0x{}", zeros(32)));
        MAX_SUB_TOPICS + 1
    ]);
    let topics = post(call(
        1.into(),
        "eth_getLogs",
        logs(START, START, serde_json::json!([topic, null, words])),
    ))
    .await?;
    anyhow::ensure!(error(&topics) == Some(-32602), "{topics}");
    let results = post(call(
        1.into(),
        "eth_getLogs",
        logs(START, head, serde_json::json!([topic])),
    ))
    .await?;
    anyhow::ensure!(error(&results) == Some(-32005), "{}", results["error"]);
    let one = post(call(
        1.into(),
        "eth_getLogs",
        logs(START, START, serde_json::json!([topic])),
    ))
    .await?;
    let count = one["result"].as_array().map(Vec::len);
    anyhow::ensure!(count == Some(UNRELATED_PER_BLOCK), "{count:?}");
    let _ = stub.stop.send(());
    Ok(())
}

// ---- the database ----

async fn insert_sessions(
    db: &sqlx::PgPool,
    merchant: uuid::Uuid,
    contract: &str,
    addresses: &[[u8; 20]],
) -> anyhow::Result<()> {
    for (chunk_no, chunk) in addresses.chunks(20_000).enumerate() {
        let ids: Vec<String> = chunk
            .iter()
            .map(|_| format!("cs_{}", uuid::Uuid::new_v4().simple()))
            .collect();
        let texts: Vec<String> = chunk.iter().map(tron_base58).collect();
        let indexes: Vec<i64> = (0..chunk.len())
            .map(|i| (chunk_no * 20_000 + i) as i64)
            .collect();
        sqlx::query(
            "INSERT INTO checkout_sessions (id, merchant_id, livemode, amount, fee_rate, fee_floor,
                fee_amount, net_amount, currency, network, chain_family, currency_contract,
                token_decimals, pay_address, address_xpub, address_index, pricing_amount,
                pricing_currency, exchange_rate, success_url, cancel_url, merchant_name,
                created_at, expires_at)
             SELECT id, $1, false, 10, 0.005, 0.1, 0.1, 9.9, 'USDT', 'TRON', 'tron', $2, 6, addr,
                    'bench', idx, 10, 'USDT', 1, 'https://a.example/', 'https://a.example/',
                    'Bench', now(), now() + interval '1 day'
               FROM UNNEST($3::text[], $4::text[], $5::bigint[]) AS u(id, addr, idx)",
        )
        .bind(merchant)
        .bind(contract)
        .bind(&ids)
        .bind(&texts)
        .bind(&indexes)
        .execute(db)
        .await?;
    }
    sqlx::query("ANALYZE checkout_sessions").execute(db).await?;
    Ok(())
}

/// CPU time of the Postgres backends serving `database`, by pid (`None`: not readable here,
/// e.g. a server on another host).
async fn backend_cpu(admin: &sqlx::PgPool, database: &str) -> Option<HashMap<i32, Duration>> {
    let pids: Vec<i32> = sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE datname = $1")
        .bind(database)
        .fetch_all(admin)
        .await
        .ok()?;
    pids.into_iter()
        .map(|pid| Some((pid, cpu_of(&format!("/proc/{pid}/stat"))?)))
        .collect()
}

// ---- one run ----

struct Run {
    mode: &'static str,
    watched: usize,
    http_requests: u64,
    rpc_calls: u64,
    /// Bytes the watcher received (the stub's response bodies) and sent (request bodies).
    bytes_in: u64,
    bytes_out: u64,
    by_method: [u64; METHODS.len() + 1],
    cpu: Duration,
    stub_cpu: Duration,
    pg_cpu: Option<Duration>,
    wall: Duration,
    /// Sums of the cycles' reports.
    logs: usize,
    recorded: u64,
    credited: usize,
    watcher_requests: u64,
    paid_sessions: i64,
    errors: Vec<String>,
}

impl Run {
    fn per_hour(&self, n: u64) -> u64 {
        (n * BLOCKS_PER_HOUR + CHAIN_BLOCKS / 2) / CHAIN_BLOCKS
    }

    fn per_hour_f(&self, x: f64) -> f64 {
        x * BLOCKS_PER_HOUR as f64 / CHAIN_BLOCKS as f64
    }

    fn mb(&self) -> f64 {
        (self.bytes_in + self.bytes_out) as f64 / 1e6
    }

    fn problems(&self) -> Vec<String> {
        let mut out = self.errors.clone();
        if self.credited != PAYMENTS || self.paid_sessions != PAYMENTS as i64 {
            out.push(format!(
                "{} payments credited ({} sessions paid), {PAYMENTS} expected",
                self.credited, self.paid_sessions
            ));
        }
        out
    }
}

async fn run(
    admin_url: &str,
    admin: &sqlx::PgPool,
    mode: &'static str,
    watched: usize,
) -> anyhow::Result<Run> {
    let name = format!("csbench_{}", uuid::Uuid::new_v4().simple());
    let mut url = url::Url::parse(admin_url)?;
    url.set_path(&name);
    let db = checkout_server::db::prepare(url.as_str()).await?;
    let result = run_in(&db, admin, &name, mode, watched).await;
    db.close().await;
    if let Err(e) = sqlx::query(&format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#))
        .execute(admin)
        .await
    {
        eprintln!("could not drop {name}: {e}");
    }
    result
}

async fn run_in(
    db: &sqlx::PgPool,
    admin: &sqlx::PgPool,
    database: &str,
    mode: &'static str,
    watched: usize,
) -> anyhow::Result<Run> {
    // The same chain and sessions for both modes.
    let mut rng = StdRng::seed_from_u64(SEED ^ watched as u64);
    let merchant = merchants::create(
        db,
        &MerchantSpec {
            name: "Bench".into(),
            logo_url: None,
            tron_xpub: Some(PUBLIC_TEST_TRON_XPUB.into()),
            evm_xpub: None,
            fee_rate: None,
        },
    )
    .await?;
    let token: [u8; 20] = rng.gen();
    let addresses: Vec<[u8; 20]> = (0..watched).map(|_| rng.gen()).collect();
    insert_sessions(db, merchant.merchant.id, &tron_base58(&token), &addresses).await?;
    let payments: Vec<(u64, [u8; 20])> = rand::seq::index::sample(&mut rng, watched, PAYMENTS)
        .into_iter()
        .map(|i| (rng.gen_range(START..START + BLOCKS), addresses[i]))
        .collect();
    // The newest block is about now: payments fall within the sessions' lifetime.
    let now = chrono::Utc::now().timestamp().unsigned_abs();
    let chain = Arc::new(Chain::new(
        &mut rng,
        token,
        &payments,
        now - CHAIN_BLOCKS * BLOCK_SECONDS,
    ));
    let stub = start_stub(chain.clone())?;

    let toml = format!(
        r#"
[networks.TRON.test]
rpc_urls = ["{}"]
chain_id = {CHAIN_ID}
confirmations = {CONFIRMATIONS}
poll_interval_ms = 6000
scan = "{mode}"
tokens.USDT = {{ contract = "{}", decimals = 6 }}
"#,
        stub.url,
        tron_base58(&token)
    );
    let config = Config::from_toml(&toml)?;
    let net = config.network(Network::Tron, Mode::Test).clone();
    let state = checkout_server::state::AppState::new(db.clone(), config);
    let watcher = Watcher::new(&state, &net, RetryPolicy::default())?;

    let (cpu0, stub_cpu0, wall0) = (process_cpu(), stub.cpu(), Instant::now());
    let pg0 = backend_cpu(admin, database).await;
    let mut out = Run {
        mode,
        watched,
        http_requests: 0,
        rpc_calls: 0,
        bytes_in: 0,
        bytes_out: 0,
        by_method: [0; METHODS.len() + 1],
        cpu: Duration::ZERO,
        stub_cpu: Duration::ZERO,
        pg_cpu: None,
        wall: Duration::ZERO,
        logs: 0,
        recorded: 0,
        credited: 0,
        watcher_requests: 0,
        paid_sessions: 0,
        errors: Vec::new(),
    };
    // The first cycle starts at the head (START - 1); then one cycle per poll interval.
    let heads = std::iter::once(START - 1).chain(
        (START + BLOCKS_PER_CYCLE - 1..START + CHAIN_BLOCKS).step_by(BLOCKS_PER_CYCLE as usize),
    );
    for head in heads {
        chain.head.store(head, Ordering::SeqCst);
        match watcher.tick().await {
            Ok(report) => {
                out.logs += report.logs;
                out.recorded += report.recorded;
                out.credited += report.credited;
                out.watcher_requests += report.rpc_calls;
                if report.errors > 0 {
                    out.errors.push(format!(
                        "head {head}: {} transfer(s) not settled",
                        report.errors
                    ));
                }
            }
            Err(e) => out.errors.push(format!("head {head}: {e}")),
        }
    }
    out.wall = wall0.elapsed();
    out.cpu = process_cpu().saturating_sub(cpu0);
    out.stub_cpu = stub.cpu().saturating_sub(stub_cpu0);
    let pg1 = backend_cpu(admin, database).await;
    out.pg_cpu = pg0.zip(pg1).map(|(before, after)| {
        after
            .iter()
            .map(|(pid, t)| t.saturating_sub(before.get(pid).copied().unwrap_or_default()))
            .sum()
    });
    let c = &chain.counters;
    out.http_requests = c.http_requests.load(Ordering::Relaxed);
    out.rpc_calls = c.rpc_calls.load(Ordering::Relaxed);
    out.bytes_in = c.bytes_out.load(Ordering::Relaxed);
    out.bytes_out = c.bytes_in.load(Ordering::Relaxed);
    out.by_method = c.by_method.each_ref().map(|n| n.load(Ordering::Relaxed));
    out.paid_sessions = sqlx::query_scalar(
        "SELECT count(*) FROM checkout_sessions WHERE status = 'Paid' AND amount_received = 10",
    )
    .fetch_one(db)
    .await?;
    watcher.release().await;
    drop(watcher);
    let _ = stub.stop.send(());
    Ok(out)
}

// ---- printing ----

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(d);
    }
    out
}

fn print_header() {
    println!(
        "{:<10} {:>7} | {:>9} {:>9} {:>9} {:>9} {:>7} | {:>8} {:>8} {:>8} {:>8} {:>6} | {:>10} | {:>7}",
        "scan", "watched", "HTTP req", "RPC calls", "MB in", "MB out", "CPU s",
        "req/h", "calls/h", "MB in/h", "MB out/h", "CPU/h", "req/day", "paid"
    );
}

fn print_row(r: &Run) {
    let mb = |b: u64| b as f64 / 1e6;
    let cpu = r.cpu.as_secs_f64();
    println!(
        "{:<10} {:>7} | {:>9} {:>9} {:>9.1} {:>9.1} {:>7.1} | {:>8} {:>8} {:>8.1} {:>8.1} {:>6.1} | {:>10} | {:>3}/{PAYMENTS}",
        r.mode,
        thousands(r.watched as u64),
        thousands(r.http_requests),
        thousands(r.rpc_calls),
        mb(r.bytes_in),
        mb(r.bytes_out),
        cpu,
        thousands(r.per_hour(r.http_requests)),
        thousands(r.per_hour(r.rpc_calls)),
        r.per_hour_f(mb(r.bytes_in)),
        r.per_hour_f(mb(r.bytes_out)),
        r.per_hour_f(cpu),
        thousands(r.per_hour(r.http_requests) * 24),
        r.credited,
    );
}

fn print_details(r: &Run) {
    let pg = r
        .pg_cpu
        .map_or("n/a".to_string(), |d| format!("{:.1}", d.as_secs_f64()));
    let [logs, headers, heads, receipts, other] = r.by_method.map(thousands);
    println!(
        "{:<10} {:>7} | wall {:>6.1} s | stub CPU {:>5.1} s | Postgres backends CPU {:>5} s | logs parsed {:>9} | recorded {:>3} | watcher's own request count {:>9}",
        r.mode,
        thousands(r.watched as u64),
        r.wall.as_secs_f64(),
        r.stub_cpu.as_secs_f64(),
        pg,
        thousands(r.logs as u64),
        r.recorded,
        thousands(r.watcher_requests),
    );
    println!(
        "{:<10} {:>7} | calls: eth_getLogs {logs}, eth_getBlockByNumber {headers}, eth_blockNumber {heads}, eth_getTransactionReceipt {receipts}, other {other}",
        "", ""
    );
}

/// The goal read two ways: HTTP requests (what providers' quotas count) and bytes received,
/// and, stricter, every JSON-RPC call and bytes both ways.
fn verdict(r: &Run) -> String {
    let calls = r.per_hour(r.rpc_calls);
    let requests = r.per_hour(r.http_requests);
    let received = r.per_hour_f(r.bytes_in as f64 / 1e6);
    let both = r.per_hour_f(r.mb());
    let found = r.problems().is_empty();
    let mark = |ok: bool| if ok { "PASS" } else { "over" };
    format!(
        "{} by requests and bytes received ({} requests/h, {received:.1} MB/h); {} by calls and bytes both ways ({} calls/h, {both:.1} MB/h); {}/{PAYMENTS} found",
        mark(requests < 2_000 && received < 50.0 && found),
        thousands(requests),
        mark(calls < 2_000 && both < 50.0 && found),
        thousands(calls),
        r.credited
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let admin_url = std::env::var("BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&admin_url)
        .await?;
    println!(
        "TRON USDT: {UNRELATED_PER_BLOCK} unrelated transfers per block + {PAYMENTS} payments of 10 USDT \
         in the first {BLOCKS} blocks; {CHAIN_BLOCKS} blocks ({} min of chain), one watcher cycle per \
         {BLOCKS_PER_CYCLE} new blocks (TRON's default 6 s poll), finality by the solidified block \
         (head - 18); stub java-tron node",
        CHAIN_BLOCKS * BLOCK_SECONDS / 60
    );
    println!(
        "goal: at 10,000 watched addresses, under 2,000 calls and under 50 MB per hour of TRON \
         chain, every payment found"
    );
    println!(
        "MB in/out: received/sent by the watcher (HTTP bodies, 1 MB = 10^6 B); per hour: x {BLOCKS_PER_HOUR}/{CHAIN_BLOCKS} blocks; \
         CPU: this process (watcher + stub node + Postgres client)"
    );
    stub_self_check().await?;
    println!("stub node self-check: batches, tags and java-tron's limits answered as expected");
    println!();
    print_header();
    let mut runs = Vec::new();
    for mode in ["recipients", "contract", "auto"] {
        for watched in [1_000, 10_000, 100_000] {
            eprintln!("running scan = {mode}, {watched} watched ...");
            let r = run(&admin_url, &admin, mode, watched).await?;
            print_row(&r);
            runs.push(r);
        }
    }
    println!();
    for r in &runs {
        print_details(r);
    }
    println!();
    for r in runs.iter().filter(|r| r.watched == 10_000) {
        println!("goal at 10,000 watched, scan = {}: {}", r.mode, verdict(r));
    }
    let problems: Vec<String> = runs
        .iter()
        .flat_map(|r| {
            r.problems()
                .into_iter()
                .map(move |p| format!("scan = {}, {} watched: {p}", r.mode, r.watched))
        })
        .collect();
    if !problems.is_empty() {
        for p in problems.iter().take(50) {
            println!("FAILED: {p}");
        }
        anyhow::bail!(
            "{} problem(s): a payment was missed or a cycle failed",
            problems.len()
        );
    }
    Ok(())
}
