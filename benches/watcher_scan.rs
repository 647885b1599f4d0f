//! One watcher cycle over a 1,000-block range holding 10,000 transfers to pay addresses, with
//! 1,000 and then 100,000 open sessions in Postgres. Prints RPC calls, wall time, CPU time and
//! the heap the cycle needed, for the scan (detect and store) and the confirmation cycle
//! (receipts, crediting).
//!
//! The node is a stub JSON-RPC server in this process that answers from precomputed bytes, so
//! the figures are the watcher's own cost (plus Postgres), not a node's.
//!
//! `cargo bench --bench watcher_scan` (BENCH_DATABASE_URL: an admin URL, default
//! postgres://postgres@127.0.0.1:5432/postgres).

use alloy_primitives::{keccak256, B256};
use axum::body::Bytes;
use checkout_server::chain::rpc::{quantity, RetryPolicy, TRANSFER_TOPIC};
use checkout_server::chain::watcher::{TickReport, Watcher};
use checkout_server::config::Config;
use checkout_server::domain::address::{evm_checksum, PUBLIC_TEST_EVM_XPUB};
use checkout_server::domain::api_key::Mode;
use checkout_server::domain::network::Network;
use checkout_server::service::merchants::{self, MerchantSpec};
use serde_json::{json, Value};
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// ---- heap accounting ----

struct Counting;
static HEAP: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = HEAP.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        HEAP.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// User + system CPU time of this process.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Fields 14 and 15 of the line, counted after the command name.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

// ---- the stub node ----

const START: u64 = 1_000_000;
const BLOCKS: u64 = 1_000;
const TRANSFERS: usize = 10_000;
const CONFIRMATIONS: u32 = 15;

struct Chain {
    head: AtomicU64,
    token: [u8; 20],
    /// Per block: its logs, serialized, comma-separated.
    logs: Vec<String>,
    /// Receipts' results, serialized.
    receipts: HashMap<String, String>,
    /// `eth_getLogs` answers by id and params.
    cache: Mutex<HashMap<String, Bytes>>,
    calls: AtomicU64,
}

fn block_hash(n: u64) -> B256 {
    keccak256(n.to_be_bytes())
}

/// A response to the request with `id`; `result` is serialized JSON.
fn envelope(id: &Value, result: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"jsonrpc":"2.0","id":{id},"result":{result}}}"#
    ))
}

/// A block's timestamp on the stub chain.
fn timestamp(block: u64) -> u64 {
    1_700_000_000 + block * 3
}

impl Chain {
    /// `log_times`: logs carry `blockTimestamp` (recent EVM nodes do; TRON's do not).
    fn new(token: [u8; 20], recipients: &[[u8; 20]], log_times: bool) -> Self {
        let mut logs: Vec<Vec<String>> = vec![Vec::new(); BLOCKS as usize];
        let mut receipts = HashMap::new();
        let per_block = TRANSFERS / BLOCKS as usize;
        for (i, to) in recipients.iter().take(TRANSFERS).enumerate() {
            let block = START + (i / per_block) as u64;
            let tx = keccak256((i as u64).to_be_bytes());
            let log = json!({
                "address": format!("0x{}", hex::encode(token)),
                "topics": [
                    TRANSFER_TOPIC,
                    format!("0x{:0>64}", "ab"),
                    format!("0x{:0>64}", hex::encode(to)),
                ],
                "data": format!("0x{:064x}", 10_000_000_000_000_000_000u128),
                "blockNumber": quantity(block),
                "blockHash": block_hash(block).to_string(),
                "transactionHash": tx.to_string(),
                "logIndex": quantity((i % per_block) as u64),
                "removed": false,
            });
            let mut log = log;
            if log_times {
                log["blockTimestamp"] = json!(quantity(timestamp(block)));
            }
            receipts.insert(
                tx.to_string(),
                json!({
                    "status": "0x1",
                    "blockHash": block_hash(block).to_string(),
                    "blockNumber": quantity(block),
                    "logs": [log.clone()],
                })
                .to_string(),
            );
            logs[(block - START) as usize].push(log.to_string());
        }
        let logs = logs.into_iter().map(|l| l.join(",")).collect();
        Self {
            head: AtomicU64::new(START - 1),
            token,
            logs,
            receipts,
            cache: Mutex::new(HashMap::new()),
            calls: AtomicU64::new(0),
        }
    }

    /// One HTTP request: a single call or a JSON-RPC batch (an array, answered in kind).
    fn answer(&self, body: &[u8]) -> Bytes {
        match serde_json::from_slice::<Value>(body).unwrap() {
            Value::Array(batch) => {
                let mut out = b"[".to_vec();
                for (i, req) in batch.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(&self.answer_one(req));
                }
                out.push(b']');
                Bytes::from(out)
            }
            req => self.answer_one(&req),
        }
    }

    fn answer_one(&self, req: &Value) -> Bytes {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let id = &req["id"];
        let params = &req["params"];
        let head = self.head.load(Ordering::SeqCst);
        let number = |v: &Value| match v.as_str().unwrap_or("") {
            "latest" => head,
            // The newest block with its confirmations.
            "finalized" => head.saturating_sub(u64::from(CONFIRMATIONS) - 1),
            n => checkout_server::chain::rpc::parse_quantity(n).unwrap_or(0),
        };
        let reply = |result: Value| envelope(id, &result.to_string());
        match req["method"].as_str().unwrap_or("") {
            "eth_chainId" => reply(json!("0x38")),
            "eth_blockNumber" => reply(json!(quantity(head))),
            "eth_getBlockByNumber" => {
                let n = number(&params[0]);
                reply(json!({
                    "number": quantity(n),
                    "hash": block_hash(n).to_string(),
                    "timestamp": quantity(timestamp(n)),
                }))
            }
            "eth_getLogs" => {
                let key = format!("{id} {params}");
                if let Some(hit) = self.cache.lock().unwrap().get(&key) {
                    return hit.clone();
                }
                let (from, to) = (
                    number(&params[0]["fromBlock"]),
                    number(&params[0]["toBlock"]),
                );
                let asked = format!("0x{}", hex::encode(self.token));
                assert_eq!(params[0]["address"][0], json!(asked));
                let logs: Vec<&str> = (from..=to)
                    .filter(|b| (START..START + BLOCKS).contains(b))
                    .map(|b| self.logs[(b - START) as usize].as_str())
                    .filter(|l| !l.is_empty())
                    .collect();
                let bytes = envelope(id, &format!("[{}]", logs.join(",")));
                self.cache.lock().unwrap().insert(key, bytes.clone());
                bytes
            }
            "eth_getTransactionReceipt" => envelope(
                id,
                self.receipts
                    .get(params[0].as_str().unwrap_or(""))
                    .map_or("null", String::as_str),
            ),
            other => panic!("unexpected {other}"),
        }
    }
}

async fn serve_stub(chain: Arc<Chain>) -> String {
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move |body: Bytes| {
            let chain = chain.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    chain.answer(&body),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

// ---- the database ----

fn random_address() -> [u8; 20] {
    rand::random()
}

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
        let texts: Vec<String> = chunk.iter().map(evm_checksum).collect();
        let indexes: Vec<i64> = (0..chunk.len())
            .map(|i| (chunk_no * 20_000 + i) as i64)
            .collect();
        sqlx::query(
            "INSERT INTO checkout_sessions (id, merchant_id, livemode, amount, fee_rate, fee_floor,
                fee_amount, net_amount, currency, network, chain_family, currency_contract,
                token_decimals, pay_address, address_xpub, address_index, pricing_amount,
                pricing_currency, exchange_rate, success_url, cancel_url, merchant_name,
                created_at, expires_at)
             SELECT id, $1, false, 10, 0.005, 0.1, 0.1, 9.9, 'USDT', 'BSC', 'evm', $2, 18, addr,
                    'bench', idx, 10, 'USDT', 1, 'https://a.example/', 'https://a.example/',
                    'Bench', now(), now() + interval '30 min'
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

struct Measured {
    report: TickReport,
    wall: Duration,
    cpu: Duration,
    heap_peak: usize,
}

async fn measure(watcher: &Watcher) -> Measured {
    let heap_before = HEAP.load(Ordering::Relaxed);
    PEAK.store(heap_before, Ordering::Relaxed);
    let (cpu, t) = (cpu_time(), Instant::now());
    let report = watcher.tick().await.expect("cycle");
    let wall = t.elapsed();
    Measured {
        report,
        wall,
        cpu: cpu_time().saturating_sub(cpu),
        heap_peak: PEAK.load(Ordering::Relaxed).saturating_sub(heap_before),
    }
}

fn print(label: &str, sessions: usize, m: &Measured) {
    println!(
        "  {label:<8} {sessions:>7} sessions: {:>6} RPC calls, {:>8.1} ms wall, {:>6} ms CPU, {:>7.1} MiB heap peak  (logs {}, recorded {}, credited {})",
        m.report.rpc_calls,
        m.wall.as_secs_f64() * 1000.0,
        m.cpu.as_millis(),
        m.heap_peak as f64 / (1024.0 * 1024.0),
        m.report.logs,
        m.report.recorded,
        m.report.credited,
    );
}

async fn one_size(
    admin: &str,
    sessions: usize,
    log_times: bool,
) -> anyhow::Result<(Measured, Measured)> {
    let name = format!("csbench_{}", uuid::Uuid::new_v4().simple());
    let mut url = url::Url::parse(admin)?;
    url.set_path(&name);
    let db = checkout_server::db::prepare(url.as_str()).await?;
    let merchant = merchants::create(
        &db,
        &MerchantSpec {
            name: "Bench".into(),
            logo_url: None,
            tron_xpub: None,
            evm_xpub: Some(PUBLIC_TEST_EVM_XPUB.into()),
            fee_rate: None,
        },
    )
    .await?;
    let token: [u8; 20] = random_address();
    let addresses: Vec<[u8; 20]> = (0..sessions).map(|_| random_address()).collect();
    insert_sessions(&db, merchant.merchant.id, &evm_checksum(&token), &addresses).await?;
    // Transfers go to the first 10,000 sessions, spread evenly.
    let step = sessions / TRANSFERS;
    let recipients: Vec<[u8; 20]> = addresses.iter().step_by(step.max(1)).copied().collect();
    let chain = Arc::new(Chain::new(token, &recipients, log_times));
    let stub = serve_stub(chain.clone()).await;

    let toml = format!(
        r#"
[networks.BSC.test]
rpc_urls = ["{stub}"]
chain_id = 56
confirmations = {CONFIRMATIONS}
finality = "depth"
# The stub node answers every transfer of the token (it does not filter on topics).
scan = "contract"
tokens.USDT = {{ contract = "{}", decimals = 18 }}
"#,
        evm_checksum(&token)
    );
    let config = Config::from_toml(&toml)?;
    let net = config.network(Network::Bsc, Mode::Test);
    // The scan alone: a confirmation depth beyond the range, so nothing is due yet.
    let mut deep = net.clone();
    deep.confirmations = BLOCKS as u32 + 1;
    let state = checkout_server::state::AppState::new(db.clone(), config.clone());
    let scanner = Watcher::new(&state, &deep, RetryPolicy::default())?;
    // First cycle: starts at the head (START - 1). Then the chain grows by the 1,000 blocks.
    scanner.tick().await?;
    chain.head.store(START + BLOCKS - 1, Ordering::SeqCst);
    let scan = measure(&scanner).await;
    assert_eq!(
        scan.report.recorded as usize, TRANSFERS,
        "{:?}",
        scan.report
    );
    scanner.release().await;

    // The confirmations arrive: one more cycle (repeated while its batch limit leaves some).
    // The scanner's depth left every block below its final one; a watcher at the network's
    // depth would have made all but the last `CONFIRMATIONS` final: record that, so the
    // confirming cycle rescans only that window (as in steady state).
    sqlx::query("UPDATE chain_cursors SET final_number = $1")
        .bind((START + BLOCKS - u64::from(CONFIRMATIONS)) as i64)
        .execute(&db)
        .await?;
    let watcher = Watcher::new(&state, net, RetryPolicy::default())?;
    chain.head.store(
        START + BLOCKS - 1 + u64::from(CONFIRMATIONS),
        Ordering::SeqCst,
    );
    let mut confirm = measure(&watcher).await;
    // The confirmation batch is bounded per cycle; finish the rest, summing.
    while confirm.report.credited < TRANSFERS {
        let more = measure(&watcher).await;
        assert!(more.report.credited > 0, "no progress: {:?}", more.report);
        confirm.report.credited += more.report.credited;
        confirm.report.rpc_calls += more.report.rpc_calls;
        confirm.wall += more.wall;
        confirm.cpu += more.cpu;
        confirm.heap_peak = confirm.heap_peak.max(more.heap_peak);
    }
    db.close().await;
    Ok((scan, confirm))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let admin = std::env::var("BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    println!(
        "watcher cycle: {TRANSFERS} transfers to pay addresses in {BLOCKS} blocks (one token), stub node"
    );
    for sessions in [10_000, 100_000] {
        let (scan, confirm) = one_size(&admin, sessions, true).await?;
        print("scan", sessions, &scan);
        print("confirm", sessions, &confirm);
    }
    println!("logs without blockTimestamp (TRON): one header per block holding a payment");
    let (scan, _) = one_size(&admin, 10_000, false).await?;
    print("scan", 10_000, &scan);
    println!("(CPU is this process: watcher + stub node + Postgres client; Postgres server time is not included)");
    Ok(())
}
