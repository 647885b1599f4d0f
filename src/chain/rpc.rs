//! A JSON-RPC client for EVM-style nodes (and TRON's `/jsonrpc`): several URLs with failover,
//! per-call timeouts, exponential backoff with jitter on errors and HTTP 429, custom headers per
//! URL, and `eth_getLogs` ranges split to the provider's limit. Every value a node sends is
//! parsed defensively: a malformed answer is an error, never a panic.

use alloy_primitives::{B256, U256};
use futures_util::{stream, StreamExt};
use rand::Rng;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// ERC-20 `Transfer(address,address,uint256)`.
pub const TRANSFER_TOPIC: &str =
    "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef";

#[derive(Debug, Clone, thiserror::Error)]
pub enum RpcError {
    #[error("transport: {0}")]
    Transport(String),
    #[error("HTTP {0}")]
    Http(StatusCode),
    #[error("rate limited by the provider")]
    RateLimited { retry_after: Option<Duration> },
    #[error("node error {code}: {message}")]
    Node { code: i64, message: String },
    #[error("malformed answer to {method}: {detail}")]
    Malformed { method: String, detail: String },
    #[error("the answer is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the node does not take JSON-RPC batches")]
    BatchRefused,
    #[error("RPC URL #{url} serves chain id {found}, not the configured {expected}")]
    WrongChain {
        url: usize,
        found: u64,
        expected: u64,
    },
    #[error("every RPC URL is paused (rate limited, or its daily request budget is spent)")]
    AllPaused,
}

impl RpcError {
    /// A short name for the metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            RpcError::Transport(_) => "transport",
            RpcError::Http(_) => "http",
            RpcError::RateLimited { .. } => "rate_limited",
            RpcError::Node { .. } => "node",
            RpcError::Malformed { .. } => "malformed",
            RpcError::TooLarge { .. } => "too_large",
            RpcError::BatchRefused => "batch_refused",
            RpcError::WrongChain { .. } => "wrong_chain",
            RpcError::AllPaused => "all_paused",
        }
    }
}

/// JSON-RPC calls in one batch request at most (java-tron takes 100 by default).
pub const MAX_BATCH: usize = 100;
/// Batch requests sent at once when a batch has more calls than [`MAX_BATCH`].
const BATCH_CONCURRENCY: usize = 4;
/// How long calls go one by one after a node refused a batch, before batches are tried again.
const BATCH_RETRY: Duration = Duration::from_secs(3600);
/// How long a URL that serves another chain is left alone before it is asked again.
const WRONG_CHAIN_PAUSE: Duration = Duration::from_secs(300);

/// How long a URL that limited us is left alone when it does not say (TronGrid bans for 30 s).
pub const RATE_LIMIT_PAUSE: Duration = Duration::from_secs(30);

/// A node's error message that says a request or quota limit was hit (not a range limit).
fn says_rate_limited(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "rate limit",
        "rate-limit",
        "ratelimit",
        "too many requests",
        "request limit",
        "daily request",
        "quota",
        "capacity exceeded",
        // TronGrid: "The key exceeds the frequency limit(15), and the query server is
        // suspended for 30s".
        "frequency limit",
        "suspended",
    ]
    .iter()
    .any(|needle| m.contains(needle))
}

impl RpcError {
    /// Node errors that mean "ask for fewer blocks" rather than "this node is broken".
    fn asks_for_a_smaller_range(&self) -> bool {
        match self {
            RpcError::TooLarge { .. } => true,
            RpcError::Node { message, .. } if says_rate_limited(message) => false,
            RpcError::Node { message, .. } => {
                let m = message.to_ascii_lowercase();
                [
                    "range",
                    "limit",
                    "too many",
                    "exceed",
                    "too large",
                    "query returned more than",
                    "response size",
                ]
                .iter()
                .any(|needle| m.contains(needle))
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub timeout: Duration,
    pub attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            attempts: 6,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(15),
        }
    }
}

impl RetryPolicy {
    /// Full jitter: a random delay in [0, min(max, base·2^attempt)].
    fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self
            .base_delay
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max_delay);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::thread_rng().gen_range(0..=millis))
    }
}

/// One URL as the client is given it: its headers, and the rates it must stay under.
#[derive(Debug, Clone, Default)]
pub struct EndpointSpec {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub max_requests_per_second: Option<u32>,
    /// HTTP requests per UTC day; once spent, the URL is not asked until the next day.
    pub max_requests_per_day: Option<u64>,
}

struct Endpoint {
    url: String,
    /// The URL's host, as the metrics name it (never its path, which may hold a key).
    host: String,
    headers: HeaderMap,
    /// With a rate limit: the gap between two requests, and when the next one may start.
    pacing: Option<(Duration, tokio::sync::Mutex<tokio::time::Instant>)>,
    /// The provider limited us: other URLs are asked until then.
    paused_until: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// With a daily budget: the budget, and (UTC day number, requests sent that day).
    budget: Option<(u64, std::sync::Mutex<(u64, u64)>)>,
}

/// Today's UTC day number, and the time left until the next day starts.
fn utc_day() -> (u64, Duration) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let day = now.as_secs() / 86_400;
    let next = Duration::from_secs((day + 1) * 86_400);
    (day, next.saturating_sub(now))
}

impl Endpoint {
    /// Until when this URL is not asked: the provider limited us, or its daily budget is spent.
    fn paused(&self) -> Option<tokio::time::Instant> {
        let now = tokio::time::Instant::now();
        let limited = (*self.paused_until.lock().ok()?).filter(|until| *until > now);
        let spent = self.budget.as_ref().and_then(|(limit, used)| {
            let (day, count) = *used.lock().ok()?;
            let (today, left) = utc_day();
            (day == today && count >= *limit).then(|| now + left)
        });
        limited.max(spent)
    }

    /// Counts one request against the daily budget.
    fn spend(&self) {
        if let Some((_, used)) = &self.budget {
            if let Ok(mut used) = used.lock() {
                let (today, _) = utc_day();
                if used.0 != today {
                    *used = (today, 0);
                }
                used.1 += 1;
            }
        }
    }

    fn pause(&self, pause: Duration) {
        if let Ok(mut until) = self.paused_until.lock() {
            *until = Some(tokio::time::Instant::now() + pause);
        }
    }

    /// Waits for this URL's next request slot, if it has a rate limit.
    async fn wait_turn(&self) {
        let Some((gap, next)) = &self.pacing else {
            return;
        };
        let mut next = next.lock().await;
        let now = tokio::time::Instant::now();
        if *next > now {
            tokio::time::sleep_until(*next).await;
        }
        *next = (*next).max(now) + *gap;
    }
}

pub struct RpcClient {
    http: reqwest::Client,
    endpoints: Vec<Endpoint>,
    /// The endpoint that answered last; calls start there.
    preferred: AtomicUsize,
    policy: RetryPolicy,
    max_block_range: u64,
    /// Answers larger than this are refused (a log query then asks for half the range).
    max_response_bytes: usize,
    /// Several calls go in one JSON-RPC batch request.
    batches: AtomicBool,
    /// A node refused a batch: calls go one by one until then.
    batches_refused_until: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// With a chain id: each URL is checked before it serves, and again after each failover.
    chain_id: Option<u64>,
    /// The URL whose chain id was checked last (`usize::MAX`: none yet).
    checked: AtomicUsize,
    calls: AtomicU64,
    bytes: AtomicU64,
}

/// One call of a batch.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: &'static str,
    pub params: Value,
}

/// A block as `eth_getBlockByNumber` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockTag {
    /// The node's finalized block (TRON: the solidified block).
    Finalized,
    Number(u64),
}

impl Call {
    pub fn block_number() -> Self {
        Self {
            method: "eth_blockNumber",
            params: json!([]),
        }
    }

    pub fn header(tag: BlockTag) -> Self {
        let tag = match tag {
            BlockTag::Finalized => json!("finalized"),
            BlockTag::Number(n) => json!(quantity(n)),
        };
        Self {
            method: "eth_getBlockByNumber",
            params: json!([tag, false]),
        }
    }

    pub fn receipt(tx_hash: &B256) -> Self {
        Self {
            method: "eth_getTransactionReceipt",
            params: json!([tx_hash.to_string()]),
        }
    }
}

/// One call's answer within a batch: its raw result, or why there is none.
pub type Answer = Result<Box<RawValue>, RpcError>;

#[derive(Clone, Copy)]
enum Request<'a> {
    Single(&'a str, &'a Value),
    Batch(&'a [Call]),
}

enum Reply {
    Single(Box<RawValue>),
    Batch(Vec<Answer>),
}

/// The default bound on one answer's size.
pub const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

/// A log as the node reports it, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    pub address: [u8; 20],
    pub topics: Vec<B256>,
    pub data: Vec<u8>,
    pub block_number: u64,
    pub block_hash: B256,
    pub tx_hash: B256,
    pub log_index: u64,
    pub removed: bool,
    /// The block's time, where the node includes it in logs (recent EVM nodes do; TRON
    /// does not).
    pub block_timestamp: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockHeader {
    pub number: u64,
    pub hash: B256,
    pub timestamp: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub succeeded: bool,
    pub block_hash: B256,
    pub block_number: u64,
    pub logs: Vec<Log>,
}

#[derive(Deserialize)]
struct RawLog {
    address: String,
    topics: Vec<String>,
    data: String,
    #[serde(rename = "blockNumber")]
    block_number: Option<String>,
    #[serde(rename = "blockHash")]
    block_hash: Option<String>,
    #[serde(rename = "transactionHash")]
    transaction_hash: Option<String>,
    #[serde(rename = "logIndex")]
    log_index: Option<String>,
    #[serde(default)]
    removed: bool,
    #[serde(rename = "blockTimestamp", default)]
    block_timestamp: Option<String>,
}

#[derive(Deserialize)]
struct RawBlock {
    number: String,
    hash: String,
    timestamp: String,
}

#[derive(Deserialize)]
struct RawReceipt {
    status: Option<String>,
    #[serde(rename = "blockHash")]
    block_hash: String,
    #[serde(rename = "blockNumber")]
    block_number: String,
    #[serde(default)]
    logs: Vec<RawLog>,
}

pub fn parse_quantity(s: &str) -> Option<u64> {
    let digits = s.strip_prefix("0x")?;
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

pub fn quantity(n: u64) -> String {
    format!("{n:#x}")
}

fn parse_hash(s: &str) -> Option<B256> {
    if s.len() != 66 {
        return None;
    }
    B256::from_str(s).ok()
}

fn parse_bytes(s: &str) -> Option<Vec<u8>> {
    hex::decode(s.strip_prefix("0x")?).ok()
}

/// A node's 20-byte address, `0x` + 40 hex digits, or TRON's `41`-prefixed 21-byte form.
pub fn parse_address_hex(s: &str) -> Option<[u8; 20]> {
    let digits = s.strip_prefix("0x").unwrap_or(s);
    let digits = match digits.len() {
        40 => digits,
        42 if digits.starts_with("41") => &digits[2..],
        _ => return None,
    };
    let mut out = [0u8; 20];
    hex::decode_to_slice(digits, &mut out).ok()?;
    Some(out)
}

impl RawLog {
    fn parse(self) -> Option<Log> {
        Some(Log {
            address: parse_address_hex(&self.address)?,
            topics: self
                .topics
                .iter()
                .map(|t| parse_hash(t))
                .collect::<Option<_>>()?,
            data: parse_bytes(&self.data)?,
            block_number: parse_quantity(self.block_number.as_deref()?)?,
            block_hash: parse_hash(self.block_hash.as_deref()?)?,
            tx_hash: parse_hash(self.transaction_hash.as_deref()?)?,
            log_index: parse_quantity(self.log_index.as_deref()?)?,
            removed: self.removed,
            block_timestamp: match self.block_timestamp.as_deref() {
                None => None,
                Some(t) => Some(parse_quantity(t)?),
            },
        })
    }
}

/// A `Transfer` log decoded: the recipient and the raw value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferLog {
    pub token: [u8; 20],
    pub from: [u8; 20],
    pub to: [u8; 20],
    pub value: U256,
}

impl Log {
    /// `None` for anything that is not a well-formed ERC-20 `Transfer` log.
    pub fn as_transfer(&self) -> Option<TransferLog> {
        let topic0 = B256::from_str(TRANSFER_TOPIC).ok()?;
        if self.topics.len() != 3 || self.topics[0] != topic0 || self.data.len() != 32 {
            return None;
        }
        let word_address = |word: &B256| -> Option<[u8; 20]> {
            let (pad, tail) = word.0.split_at(12);
            pad.iter().all(|b| *b == 0).then(|| tail.try_into().ok())?
        };
        Some(TransferLog {
            token: self.address,
            from: word_address(&self.topics[1])?,
            to: word_address(&self.topics[2])?,
            value: U256::from_be_slice(&self.data),
        })
    }
}

/// A JSON-RPC answer. `result` is `None` only when absent; a present `null` is `T`'s own.
#[derive(Deserialize)]
#[serde(bound(deserialize = "T: Deserialize<'de>"))]
struct Envelope<T> {
    #[serde(default, deserialize_with = "present")]
    result: Option<T>,
    #[serde(default)]
    error: Option<Value>,
    /// java-tron's own limiter answers `{"Error": "lack of computing resources"}`, no envelope.
    #[serde(default, rename = "Error")]
    bare_error: Option<Value>,
}

/// A body with no JSON-RPC envelope but java-tron's `{"Error": …}`: its limiter, or a
/// failure of that node (never read as a range error: the next URL is asked).
fn bare_error(error: &Value) -> RpcError {
    let text = error
        .as_str()
        .map_or_else(|| error.to_string(), str::to_owned);
    if says_rate_limited(&text) || text.to_ascii_lowercase().contains("computing resources") {
        return RpcError::RateLimited { retry_after: None };
    }
    RpcError::Transport(text.chars().take(300).collect())
}

fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

fn malformed(method: &str, detail: impl Into<String>) -> RpcError {
    RpcError::Malformed {
        method: method.to_owned(),
        detail: detail.into(),
    }
}

impl RpcClient {
    /// `endpoints` in order of preference; each gets only its own headers (an API key for one
    /// provider never reaches another).
    pub fn new(
        endpoints: &[EndpointSpec],
        policy: RetryPolicy,
        max_block_range: u64,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(!endpoints.is_empty(), "no RPC URL");
        let endpoints = endpoints
            .iter()
            .map(|spec| {
                let mut headers = HeaderMap::new();
                for (name, value) in &spec.headers {
                    headers.insert(
                        HeaderName::from_bytes(name.as_bytes())?,
                        HeaderValue::from_str(value)?,
                    );
                }
                let pacing = spec.max_requests_per_second.map(|rate| {
                    let gap = Duration::from_secs(1) / rate.max(1);
                    (gap, tokio::sync::Mutex::new(tokio::time::Instant::now()))
                });
                let host = url::Url::parse(&spec.url)
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_owned))
                    .unwrap_or_default();
                Ok(Endpoint {
                    url: spec.url.clone(),
                    host,
                    headers,
                    pacing,
                    paused_until: std::sync::Mutex::new(None),
                    budget: spec
                        .max_requests_per_day
                        .map(|limit| (limit, std::sync::Mutex::new((0, 0)))),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(policy.timeout)
            .connect_timeout(policy.timeout.min(Duration::from_secs(5)))
            .build()?;
        Ok(Self {
            http,
            endpoints,
            preferred: AtomicUsize::new(0),
            policy,
            max_block_range: max_block_range.max(1),
            max_response_bytes: MAX_RESPONSE_BYTES,
            batches: AtomicBool::new(true),
            batches_refused_until: std::sync::Mutex::new(None),
            chain_id: None,
            checked: AtomicUsize::new(usize::MAX),
            calls: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        })
    }

    /// Bounds the size of one answer (default [`MAX_RESPONSE_BYTES`]).
    pub fn with_max_response_bytes(mut self, limit: usize) -> Self {
        self.max_response_bytes = limit.max(1024);
        self
    }

    /// Whether several calls go in one JSON-RPC batch request (default: yes).
    pub fn with_batches(self, enabled: bool) -> Self {
        self.batches.store(enabled, Ordering::Relaxed);
        self
    }

    /// Checks each URL's `eth_chainId` against `chain_id` before it serves a call, and again
    /// whenever calls move to another URL (failover).
    pub fn with_chain_id(mut self, chain_id: Option<u64>) -> Self {
        self.chain_id = chain_id;
        self
    }

    /// Calls start at the next URL from now on (the preferred one lags or misbehaves in a way
    /// its answers do not show as errors).
    pub fn prefer_next(&self) {
        let n = self.endpoints.len();
        let current = self.preferred.load(Ordering::Relaxed);
        self.preferred.store((current + 1) % n, Ordering::Relaxed);
    }

    /// HTTP requests sent so far (a batch is one), for benchmarks and lag reports.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Bytes of answers received so far.
    pub fn bytes_received(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Sends one request body to `endpoint`: its pacing and budget, HTTP status, size bound.
    async fn post(&self, endpoint: &Endpoint, body: &Value) -> Result<Vec<u8>, RpcError> {
        endpoint.wait_turn().await;
        endpoint.spend();
        self.calls.fetch_add(1, Ordering::Relaxed);
        let calls = body
            .as_array()
            .map_or(std::slice::from_ref(body), Vec::as_slice);
        for call in calls {
            let method = call["method"].as_str().unwrap_or("?");
            crate::metrics::rpc_call(&endpoint.host, method);
        }
        let result = self.send(endpoint, body).await;
        if let Err(e) = &result {
            crate::metrics::rpc_error(&endpoint.host, e.kind());
        }
        result
    }

    async fn send(&self, endpoint: &Endpoint, body: &Value) -> Result<Vec<u8>, RpcError> {
        let response = self
            .http
            .post(&endpoint.url)
            .headers(endpoint.headers.clone())
            .json(body)
            .send()
            .await
            .map_err(|e| RpcError::Transport(e.without_url().to_string()))?;
        let status = response.status();
        // TronGrid answers 403 or 503 over its quota, others 429.
        if matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::FORBIDDEN | StatusCode::SERVICE_UNAVAILABLE
        ) {
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|s| Duration::from_secs(s.min(60)));
            return Err(RpcError::RateLimited { retry_after });
        }
        if !status.is_success() {
            return Err(RpcError::Http(status));
        }
        let body = self.read_bounded(response).await?;
        self.bytes.fetch_add(
            u64::try_from(body.len()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        Ok(body)
    }

    async fn call_once<T: DeserializeOwned>(
        &self,
        endpoint: &Endpoint,
        method: &str,
        params: &Value,
    ) -> Result<T, RpcError> {
        let body = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
        let body = self.post(endpoint, &body).await?;
        // Straight into the caller's type: a large eth_getLogs answer is never held as a tree.
        let envelope: Envelope<T> =
            serde_json::from_slice(&body).map_err(|e| malformed(method, e.to_string()))?;
        if let Some(error) = envelope.error.filter(|e| !e.is_null()) {
            return Err(node_error(&error));
        }
        if let (None, Some(error)) = (&envelope.result, &envelope.bare_error) {
            return Err(bare_error(error));
        }
        envelope
            .result
            .ok_or_else(|| malformed(method, "no result"))
    }

    /// The body, refused as soon as it outgrows the bound (before it is all in memory).
    async fn read_bounded(&self, mut response: reqwest::Response) -> Result<Vec<u8>, RpcError> {
        let limit = self.max_response_bytes;
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Err(RpcError::TooLarge { limit });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| RpcError::Transport(e.without_url().to_string()))?
        {
            if body.len() + chunk.len() > limit {
                return Err(RpcError::TooLarge { limit });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Calls `method`, with failover (see [`Self::with_failover`]).
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        self.call_as(method, params).await
    }

    /// `call`, decoding the result as `T`.
    pub async fn call_as<T: DeserializeOwned>(
        &self,
        method: &str,
        params: Value,
    ) -> Result<T, RpcError> {
        let raw = match self.with_failover(Request::Single(method, &params)).await? {
            Reply::Single(raw) => raw,
            Reply::Batch(_) => return Err(malformed(method, "a batch answer")),
        };
        serde_json::from_str(raw.get()).map_err(|e| malformed(method, e.to_string()))
    }

    /// A batch request, with failover; one whose answer is too large is sent in halves.
    fn batch_request<'a>(
        &'a self,
        calls: &'a [Call],
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Vec<Answer>, RpcError>> + Send + 'a>,
    > {
        Box::pin(async move {
            match self.with_failover(Request::Batch(calls)).await {
                Ok(Reply::Batch(answers)) => Ok(answers),
                Ok(Reply::Single(_)) => Err(malformed("batch", "a single answer")),
                // The answer, or (413) the request, too large: sent in halves.
                Err(RpcError::TooLarge { .. } | RpcError::Http(StatusCode::PAYLOAD_TOO_LARGE))
                    if calls.len() > 1 =>
                {
                    let (first, second) = calls.split_at(calls.len() / 2);
                    let mut answers = self.batch_request(first).await?;
                    answers.extend(self.batch_request(second).await?);
                    Ok(answers)
                }
                // One call is still too large a request: this node does not take batches.
                Err(RpcError::Http(StatusCode::PAYLOAD_TOO_LARGE)) => Err(RpcError::BatchRefused),
                Err(e) => Err(e),
            }
        })
    }

    /// Runs `request` against the preferred URL, failing over to the next one on every error;
    /// after each failed attempt it backs off with jitter. A URL that limits us (403, 429,
    /// 503, or an error that says so) is left alone for its `Retry-After`, else
    /// [`RATE_LIMIT_PAUSE`], and the next URL is asked at once meanwhile; so is a URL whose
    /// daily budget is spent. An answer that asks for a smaller range, or a refused batch, is
    /// returned at once (the caller splits). With a chain id, a URL other than the one checked
    /// last is checked first.
    async fn with_failover(&self, request: Request<'_>) -> Result<Reply, RpcError> {
        let method = match request {
            Request::Single(method, _) => method,
            Request::Batch(_) => "batch",
        };
        let mut last = None;
        let mut next = self.preferred.load(Ordering::Relaxed);
        for attempt in 0..self.policy.attempts {
            let index = match self.unpaused_from(next) {
                Some(index) => index,
                None => {
                    // Every URL is paused: wait for the first to come back, if soon enough.
                    let (index, until) = self.first_back();
                    if until.saturating_duration_since(tokio::time::Instant::now())
                        > self.policy.max_delay
                    {
                        break;
                    }
                    tokio::time::sleep_until(until).await;
                    index
                }
            };
            next = index + 1;
            let endpoint = &self.endpoints[index];
            let outcome = match self.check_chain(index).await {
                Err(e) => Err(e),
                Ok(()) => match request {
                    Request::Single(method, params) => self
                        .call_once::<Box<RawValue>>(endpoint, method, params)
                        .await
                        .map(Reply::Single),
                    Request::Batch(calls) => {
                        self.batch_once(endpoint, calls).await.map(Reply::Batch)
                    }
                },
            };
            match outcome {
                Ok(value) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok(value);
                }
                Err(e)
                    if e.asks_for_a_smaller_range()
                        || matches!(
                            e,
                            RpcError::BatchRefused | RpcError::Http(StatusCode::PAYLOAD_TOO_LARGE)
                        ) =>
                {
                    return Err(e)
                }
                Err(RpcError::RateLimited { retry_after }) => {
                    let pause = retry_after.unwrap_or(RATE_LIMIT_PAUSE);
                    tracing::warn!(
                        method,
                        url = index,
                        pause_s = pause.as_secs(),
                        "RPC provider limited us; asking the next URL meanwhile"
                    );
                    endpoint.pause(pause);
                    last = Some(RpcError::RateLimited { retry_after });
                }
                Err(e @ RpcError::WrongChain { .. }) => {
                    // A concurrent call may have passed this URL meanwhile: it is checked again.
                    let _ = self.checked.compare_exchange(
                        index,
                        usize::MAX,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    tracing::error!(method, url = index, error = %e, "RPC URL serves another chain; not asked for {} s", WRONG_CHAIN_PAUSE.as_secs());
                    endpoint.pause(WRONG_CHAIN_PAUSE);
                    last = Some(e);
                }
                Err(e) => {
                    tracing::debug!(method, url = index, error = %e, "RPC call failed");
                    last = Some(e);
                    if attempt + 1 < self.policy.attempts {
                        tokio::time::sleep(self.policy.delay(attempt)).await;
                    }
                }
            }
        }
        Err(last.unwrap_or(RpcError::AllPaused))
    }

    /// With a chain id: checks URL `index` unless it is the one checked last (so every
    /// failover, and every return to a URL after another served, checks again).
    async fn check_chain(&self, index: usize) -> Result<(), RpcError> {
        let Some(expected) = self.chain_id else {
            return Ok(());
        };
        if self.checked.load(Ordering::Relaxed) == index {
            return Ok(());
        }
        let found = self.chain_id_of(&self.endpoints[index]).await?;
        if found != expected {
            return Err(RpcError::WrongChain {
                url: index + 1,
                found,
                expected,
            });
        }
        self.checked.store(index, Ordering::Relaxed);
        Ok(())
    }

    async fn chain_id_of(&self, endpoint: &Endpoint) -> Result<u64, RpcError> {
        let v: Value = self.call_once(endpoint, "eth_chainId", &json!([])).await?;
        v.as_str()
            .and_then(parse_quantity)
            .ok_or_else(|| malformed("eth_chainId", v.to_string()))
    }

    /// The first URL not paused, from `start` on (round the list).
    fn unpaused_from(&self, start: usize) -> Option<usize> {
        let n = self.endpoints.len();
        (0..n)
            .map(|i| (start + i) % n)
            .find(|&i| self.endpoints[i].paused().is_none())
    }

    /// The URL whose pause ends first, and when.
    fn first_back(&self) -> (usize, tokio::time::Instant) {
        self.endpoints
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.paused().map(|until| (i, until)))
            .min_by_key(|(_, until)| *until)
            .unwrap_or((0, tokio::time::Instant::now()))
    }

    /// `eth_chainId` of every URL that answers (a wrong URL in the list must not go unseen
    /// until failover reaches it). `(url index, chain id)`.
    pub async fn chain_ids(&self) -> Vec<(usize, Result<u64, RpcError>)> {
        let mut out = Vec::new();
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            let mut answer = Err(RpcError::Transport("not asked".into()));
            // Two tries: one transient failure does not hide a URL.
            for attempt in 0..2 {
                answer = self.chain_id_of(endpoint).await;
                if answer.is_ok() {
                    break;
                }
                if attempt == 0 {
                    tokio::time::sleep(self.policy.delay(0)).await;
                }
            }
            out.push((i, answer));
        }
        out
    }

    pub async fn block_number(&self) -> Result<u64, RpcError> {
        let raw: Box<RawValue> = self.call_as("eth_blockNumber", json!([])).await?;
        parse_block_number(&raw)
    }

    pub async fn block(&self, number: u64) -> Result<Option<BlockHeader>, RpcError> {
        let call = Call::header(BlockTag::Number(number));
        let raw: Box<RawValue> = self.call_as(call.method, call.params).await?;
        parse_header(&raw)
    }

    pub async fn receipt(&self, tx_hash: &B256) -> Result<Option<Receipt>, RpcError> {
        let call = Call::receipt(tx_hash);
        let raw: Box<RawValue> = self.call_as(call.method, call.params).await?;
        parse_receipt(&raw)
    }

    /// Headers of `numbers` (`None` where the node does not have the block), in one batch.
    pub async fn headers(
        &self,
        numbers: &[u64],
    ) -> Result<Vec<Result<Option<BlockHeader>, RpcError>>, RpcError> {
        let calls: Vec<Call> = numbers
            .iter()
            .map(|n| Call::header(BlockTag::Number(*n)))
            .collect();
        self.batch_parsed(&calls, parse_header).await
    }

    /// Receipts of `hashes` (`None` where the node knows no such transaction), in batches.
    pub async fn receipts(
        &self,
        hashes: &[B256],
    ) -> Result<Vec<Result<Option<Receipt>, RpcError>>, RpcError> {
        let calls: Vec<Call> = hashes.iter().map(Call::receipt).collect();
        self.batch_parsed(&calls, parse_receipt).await
    }

    /// [`Self::batch`], each answer parsed with `parse`.
    async fn batch_parsed<T>(
        &self,
        calls: &[Call],
        parse: fn(&RawValue) -> Result<T, RpcError>,
    ) -> Result<Vec<Result<T, RpcError>>, RpcError> {
        Ok(self
            .batch(calls)
            .await?
            .into_iter()
            .map(|a| a.and_then(|raw| parse(&raw)))
            .collect())
    }

    /// `calls` in JSON-RPC batch requests of at most [`MAX_BATCH`], each to one URL (with the
    /// same failover as single calls); one by one where the node does not take batches. An
    /// error of the request itself is the `Err`; each call's own error is in its answer.
    pub async fn batch(&self, calls: &[Call]) -> Result<Vec<Answer>, RpcError> {
        if calls.len() > 1 && self.batching() {
            // Futures collected first: a stream over a borrowing closure would not be `Send`.
            let requests: Vec<_> = calls
                .chunks(MAX_BATCH)
                .map(|group| self.batch_request(group))
                .collect();
            let groups: Vec<Result<Vec<Answer>, RpcError>> = stream::iter(requests)
                .buffered(BATCH_CONCURRENCY)
                .collect()
                .await;
            let mut out = Vec::with_capacity(calls.len());
            for group in groups {
                match group {
                    Ok(answers) => out.extend(answers),
                    // Refused, or answered with something that is not JSON-RPC on every try.
                    Err(RpcError::BatchRefused) => self.refuse_batches(),
                    Err(RpcError::Malformed { method, .. }) if method == "batch" => {
                        self.refuse_batches()
                    }
                    Err(e) => return Err(e),
                }
            }
            if self.batching() {
                return Ok(out);
            }
        }
        self.one_by_one(calls).await
    }

    fn refuse_batches(&self) {
        tracing::warn!(hours = BATCH_RETRY.as_secs() / 3600, "the RPC node refused a JSON-RPC batch: sending calls one by one meanwhile (batch = false skips the try)");
        if let Ok(mut until) = self.batches_refused_until.lock() {
            *until = Some(tokio::time::Instant::now() + BATCH_RETRY);
        }
    }

    /// Whether calls go in batch requests now (configured, and not refused lately).
    pub fn batching(&self) -> bool {
        self.batches.load(Ordering::Relaxed)
            && self.batches_refused_until.lock().map_or(true, |until| {
                until.is_none_or(|u| u <= tokio::time::Instant::now())
            })
    }

    async fn one_by_one(&self, calls: &[Call]) -> Result<Vec<Answer>, RpcError> {
        let requests: Vec<_> = calls
            .iter()
            .map(|c| self.call_as::<Box<RawValue>>(c.method, c.params.clone()))
            .collect();
        Ok(stream::iter(requests)
            .buffered(BATCH_CONCURRENCY)
            .collect()
            .await)
    }

    /// One batch request to `endpoint`; the answers in the order of `calls`.
    async fn batch_once(
        &self,
        endpoint: &Endpoint,
        calls: &[Call],
    ) -> Result<Vec<Answer>, RpcError> {
        #[derive(Deserialize)]
        struct Item {
            #[serde(default)]
            id: Value,
            #[serde(default, deserialize_with = "present")]
            result: Option<Box<RawValue>>,
            #[serde(default)]
            error: Option<Value>,
        }
        let body: Vec<Value> = calls
            .iter()
            .enumerate()
            .map(|(i, c)| json!({ "jsonrpc": "2.0", "id": i, "method": c.method, "params": c.params }))
            .collect();
        let bytes = match self.post(endpoint, &Value::Array(body)).await {
            // Some nodes and proxies answer a batch they do not take with one of these.
            Err(RpcError::Http(
                StatusCode::BAD_REQUEST
                | StatusCode::NOT_FOUND
                | StatusCode::METHOD_NOT_ALLOWED
                | StatusCode::UNSUPPORTED_MEDIA_TYPE
                | StatusCode::NOT_IMPLEMENTED,
            )) => return Err(RpcError::BatchRefused),
            other => other?,
        };
        let items: Vec<Item> = match serde_json::from_slice(&bytes) {
            Ok(items) => items,
            Err(e) => {
                // One JSON-RPC error object instead of a list: the node does not take batches,
                // or it limits us. Anything else is a failed answer, tried again as any other.
                let single: Envelope<Value> = serde_json::from_slice(&bytes)
                    .map_err(|_| malformed("batch", e.to_string()))?;
                return Err(
                    match (single.error.filter(|e| !e.is_null()), single.bare_error) {
                        (Some(error), _) => match node_error(&error) {
                            limited @ RpcError::RateLimited { .. } => limited,
                            _ => RpcError::BatchRefused,
                        },
                        (None, Some(error)) => bare_error(&error),
                        (None, None) => malformed("batch", "neither a list nor an error"),
                    },
                );
            }
        };
        let mut out: Vec<Answer> = calls
            .iter()
            .map(|c| Err(malformed(c.method, "no answer in the batch")))
            .collect();
        for item in items {
            // Some proxies answer ids as strings.
            let Some(slot) = item
                .id
                .as_u64()
                .or_else(|| item.id.as_str().and_then(|t| t.parse().ok()))
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| out.get_mut(i))
            else {
                continue;
            };
            *slot = match (item.error.filter(|e| !e.is_null()), item.result) {
                (Some(error), _) => match node_error(&error) {
                    // One call limited: the whole request counts as limited.
                    RpcError::RateLimited { .. } => {
                        return Err(RpcError::RateLimited { retry_after: None })
                    }
                    e => Err(e),
                },
                (None, Some(result)) => Ok(result),
                (None, None) => Err(malformed("batch", "no result")),
            };
        }
        Ok(out)
    }

    /// Transfer logs in each of `ranges` (as [`Self::transfer_logs`]) and the headers of
    /// `headers`, in one batch request where every range fits one query: the headers then
    /// come with the logs (one node, where the provider sends a batch to one), so a node
    /// lagging behind a range shows as a missing header rather than as an empty answer taken
    /// for "nothing there".
    pub async fn logs_and_headers(
        &self,
        contracts: &[[u8; 20]],
        recipients: Option<(&[[u8; 20]], usize)>,
        ranges: &[(u64, u64)],
        headers: &[u64],
    ) -> Result<(Vec<Log>, Vec<Result<Option<BlockHeader>, RpcError>>), RpcError> {
        let filters = log_filters(contracts, recipients);
        if ranges
            .iter()
            .all(|(from, to)| to.saturating_sub(*from) < self.max_block_range)
        {
            let asked: Vec<(u64, u64, Call)> = ranges
                .iter()
                .flat_map(|&(from, to)| {
                    filters
                        .iter()
                        .map(move |filter| (from, to, logs_call(filter, from, to)))
                })
                .collect();
            let mut calls: Vec<Call> = asked.iter().map(|(_, _, call)| call.clone()).collect();
            calls.extend(headers.iter().map(|n| Call::header(BlockTag::Number(*n))));
            match self.batch(&calls).await {
                Ok(mut answers) => {
                    let header_answers = answers.split_off(asked.len());
                    let smaller = answers
                        .iter()
                        .any(|a| a.as_ref().is_err_and(RpcError::asks_for_a_smaller_range));
                    if !smaller {
                        let mut logs = Vec::new();
                        for ((from, to, _), answer) in asked.iter().zip(answers) {
                            logs.extend(parse_logs(&answer?, *from, *to)?);
                        }
                        let headers = header_answers
                            .into_iter()
                            .map(|a| a.and_then(|raw| parse_header(&raw)))
                            .collect();
                        return Ok((logs, headers));
                    }
                }
                Err(e) if e.asks_for_a_smaller_range() => {}
                Err(e) => return Err(e),
            }
        }
        // Too wide or too heavy for one query: split, then the headers.
        let mut logs = Vec::new();
        for &(from, to) in ranges {
            logs.extend(self.transfer_logs(contracts, recipients, from, to).await?);
        }
        Ok((logs, self.headers(headers).await?))
    }

    /// Transfer logs of the token `contracts` in `[from, to]`; with `recipients`, only those to
    /// them, asking for at most `per_call` recipients at a time (`topics[2]`). A range the node
    /// refuses as too large or too heavy is asked for in halves.
    pub async fn transfer_logs(
        &self,
        contracts: &[[u8; 20]],
        recipients: Option<(&[[u8; 20]], usize)>,
        from: u64,
        to: u64,
    ) -> Result<Vec<Log>, RpcError> {
        let mut out = Vec::new();
        for filter in log_filters(contracts, recipients) {
            out.extend(self.logs_in_range(&filter, from, to).await?);
        }
        Ok(out)
    }

    async fn logs_in_range(
        &self,
        filter: &Value,
        from: u64,
        to: u64,
    ) -> Result<Vec<Log>, RpcError> {
        let mut out = Vec::new();
        let mut start = from;
        let mut span = self.max_block_range;
        while start <= to {
            let end = to.min(start.saturating_add(span - 1));
            let call = logs_call(filter, start, end);
            match self
                .call_as::<Box<RawValue>>(call.method, call.params)
                .await
            {
                Ok(raw) => {
                    out.extend(parse_logs(&raw, start, end)?);
                    start = end + 1;
                }
                Err(e) if e.asks_for_a_smaller_range() && span > 1 => span = (span / 2).max(1),
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

/// The `eth_getLogs` filters (without the range) for transfers of `contracts`: one for all,
/// or one per `per_call` recipients.
fn log_filters(contracts: &[[u8; 20]], recipients: Option<(&[[u8; 20]], usize)>) -> Vec<Value> {
    let addresses: Vec<String> = contracts
        .iter()
        .map(|c| format!("0x{}", hex::encode(c)))
        .collect();
    let Some((recipients, per_call)) = recipients else {
        return vec![json!({ "address": addresses, "topics": [TRANSFER_TOPIC] })];
    };
    recipients
        .chunks(per_call.max(1))
        .map(|chunk| {
            let words: Vec<String> = chunk
                .iter()
                .map(|a| format!("0x{}{}", "00".repeat(12), hex::encode(a)))
                .collect();
            json!({ "address": addresses, "topics": [TRANSFER_TOPIC, null, words] })
        })
        .collect()
}

fn logs_call(filter: &Value, from: u64, to: u64) -> Call {
    let mut filter = filter.clone();
    filter["fromBlock"] = json!(quantity(from));
    filter["toBlock"] = json!(quantity(to));
    Call {
        method: "eth_getLogs",
        params: json!([filter]),
    }
}

/// An `eth_getLogs` result, every log checked to lie in `[from, to]`.
fn parse_logs(raw: &RawValue, from: u64, to: u64) -> Result<Vec<Log>, RpcError> {
    const METHOD: &str = "eth_getLogs";
    let items: Vec<RawLog> =
        serde_json::from_str(raw.get()).map_err(|e| malformed(METHOD, e.to_string()))?;
    items
        .into_iter()
        .map(|raw| {
            let log = raw.parse().ok_or_else(|| malformed(METHOD, "log fields"))?;
            if log.block_number < from || log.block_number > to {
                return Err(malformed(METHOD, "log outside the asked range"));
            }
            Ok(log)
        })
        .collect()
}

pub fn parse_block_number(raw: &RawValue) -> Result<u64, RpcError> {
    let text: String =
        serde_json::from_str(raw.get()).map_err(|e| malformed("eth_blockNumber", e.to_string()))?;
    parse_quantity(&text).ok_or_else(|| malformed("eth_blockNumber", text))
}

/// `raw` as `T`, or `None` for `null` (the node does not have the block or transaction).
fn parse_nullable<T: serde::de::DeserializeOwned>(
    method: &str,
    raw: &RawValue,
) -> Result<Option<T>, RpcError> {
    serde_json::from_str(raw.get()).map_err(|e| malformed(method, e.to_string()))
}

/// A block header, or `None` for `null` (the node does not have the block).
pub fn parse_header(raw: &RawValue) -> Result<Option<BlockHeader>, RpcError> {
    const METHOD: &str = "eth_getBlockByNumber";
    let quantity = |text: &str, field| parse_quantity(text).ok_or_else(|| malformed(METHOD, field));
    parse_nullable::<RawBlock>(METHOD, raw)?
        .map(|raw| {
            Ok(BlockHeader {
                number: quantity(&raw.number, "number")?,
                hash: parse_hash(&raw.hash).ok_or_else(|| malformed(METHOD, "hash"))?,
                timestamp: quantity(&raw.timestamp, "timestamp")?,
            })
        })
        .transpose()
}

/// A receipt, or `None` for `null` (no such transaction, or not yet).
pub fn parse_receipt(raw: &RawValue) -> Result<Option<Receipt>, RpcError> {
    const METHOD: &str = "eth_getTransactionReceipt";
    let Some(raw) = parse_nullable::<RawReceipt>(METHOD, raw)? else {
        return Ok(None);
    };
    Ok(Some(Receipt {
        // Pre-Byzantium receipts have no status; every chain we serve has it.
        succeeded: raw.status.as_deref().and_then(parse_quantity) == Some(1),
        block_hash: parse_hash(&raw.block_hash).ok_or_else(|| malformed(METHOD, "blockHash"))?,
        block_number: parse_quantity(&raw.block_number)
            .ok_or_else(|| malformed(METHOD, "blockNumber"))?,
        logs: raw
            .logs
            .into_iter()
            .map(|l| l.parse().ok_or_else(|| malformed(METHOD, "log")))
            .collect::<Result<_, _>>()?,
    }))
}

/// A JSON-RPC `error` object as an error: a rate limit when its message says so.
fn node_error(error: &Value) -> RpcError {
    let message: String = error
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("(no message)")
        .chars()
        .take(300)
        .collect();
    if says_rate_limited(&message) {
        return RpcError::RateLimited { retry_after: None };
    }
    RpcError::Node {
        code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("0x0"), Some(0));
        assert_eq!(parse_quantity("0x1b4"), Some(436));
        assert_eq!(parse_quantity("0xffffffffffffffff"), Some(u64::MAX));
        for bad in ["", "0x", "1b4", "0x1g", "0x10000000000000000", "-0x1"] {
            assert_eq!(parse_quantity(bad), None, "{bad}");
        }
        assert_eq!(quantity(436), "0x1b4");
    }

    #[test]
    fn addresses_in_evm_and_tron_hex_forms() {
        let evm = parse_address_hex("0x00000000000000000000000000000000000000ff").unwrap();
        assert_eq!(evm[19], 0xff);
        let tron = parse_address_hex("4100000000000000000000000000000000000000ff").unwrap();
        assert_eq!(tron, evm);
        assert!(parse_address_hex("0x00ff").is_none());
        assert!(parse_address_hex("0xzz000000000000000000000000000000000000ff").is_none());
    }

    fn log_json(topics: Vec<String>, data: &str) -> Value {
        json!({
            "address": "0x00000000000000000000000000000000000000aa",
            "topics": topics,
            "data": data,
            "blockNumber": "0x10",
            "blockHash": format!("0x{}", "11".repeat(32)),
            "transactionHash": format!("0x{}", "22".repeat(32)),
            "logIndex": "0x3",
        })
    }

    #[test]
    fn transfer_logs_decode_and_anything_else_is_not_a_transfer() {
        let word = |byte: &str| format!("0x{}{}", "00".repeat(12), byte.repeat(20));
        let value = format!("0x{:064x}", 10_500_000u64);
        let raw: RawLog = serde_json::from_value(log_json(
            vec![TRANSFER_TOPIC.into(), word("01"), word("02")],
            &value,
        ))
        .unwrap();
        let log = raw.parse().unwrap();
        assert_eq!((log.block_number, log.log_index), (16, 3));
        assert_eq!(log.block_timestamp, None);
        let mut with_time = log_json(vec![TRANSFER_TOPIC.into(), word("01"), word("02")], &value);
        with_time["blockTimestamp"] = json!("0x6b07ef82");
        let raw: RawLog = serde_json::from_value(with_time.clone()).unwrap();
        assert_eq!(raw.parse().unwrap().block_timestamp, Some(0x6b07ef82));
        with_time["blockTimestamp"] = json!("soon");
        let raw: RawLog = serde_json::from_value(with_time).unwrap();
        assert!(
            raw.parse().is_none(),
            "a malformed block time is a malformed log"
        );
        let t = log.as_transfer().unwrap();
        assert_eq!(t.to, [2u8; 20]);
        assert_eq!(t.from, [1u8; 20]);
        assert_eq!(t.value, U256::from(10_500_000u64));

        // Dirty padding in an address word, missing topics, wrong data length: not transfers.
        let dirty = format!("0x{}{}", "ff".repeat(12), "02".repeat(20));
        for (topics, data) in [
            (
                vec![TRANSFER_TOPIC.to_string(), word("01"), dirty],
                value.clone(),
            ),
            (vec![TRANSFER_TOPIC.to_string(), word("01")], value.clone()),
            (
                vec![TRANSFER_TOPIC.to_string(), word("01"), word("02")],
                "0x01".into(),
            ),
        ] {
            let raw: RawLog = serde_json::from_value(log_json(topics, &data)).unwrap();
            assert!(raw.parse().unwrap().as_transfer().is_none());
        }
        // The largest U256 decodes (the caller decides whether it fits).
        let max = format!("0x{}", "ff".repeat(32));
        let raw: RawLog = serde_json::from_value(log_json(
            vec![TRANSFER_TOPIC.into(), word("01"), word("02")],
            &max,
        ))
        .unwrap();
        assert_eq!(raw.parse().unwrap().as_transfer().unwrap().value, U256::MAX);
    }

    #[test]
    fn malformed_logs_are_rejected_not_panicked_on() {
        let mut pending = log_json(vec![TRANSFER_TOPIC.into()], "0x");
        pending["blockNumber"] = Value::Null;
        let raw: RawLog = serde_json::from_value(pending).unwrap();
        assert!(raw.parse().is_none());
        let raw: RawLog = serde_json::from_value(log_json(vec!["0x12".into()], "0x")).unwrap();
        assert!(raw.parse().is_none());
    }

    #[test]
    fn backoff_is_jittered_and_capped() {
        let p = RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            ..RetryPolicy::default()
        };
        for attempt in 0..40 {
            assert!(p.delay(attempt) <= Duration::from_secs(1));
        }
        assert!(p.delay(0) <= Duration::from_millis(100));
    }

    #[test]
    fn a_null_result_is_an_answer_and_a_missing_one_is_not() {
        let null: Envelope<Value> = serde_json::from_str(r#"{"id":1,"result":null}"#).unwrap();
        assert_eq!(null.result, Some(Value::Null));
        let missing: Envelope<Value> = serde_json::from_str(r#"{"id":1}"#).unwrap();
        assert_eq!(missing.result, None);
        let logs: Result<Envelope<Vec<RawLog>>, _> =
            serde_json::from_str(r#"{"id":1,"result":[{"address":5}]}"#);
        assert!(logs.is_err(), "a wrong shape is an error, not a panic");
    }

    #[test]
    fn limit_messages_are_rate_limits_not_range_errors() {
        for message in [
            "daily request count exceeded, request rate limited",
            "Too Many Requests",
            "you have exceeded your quota",
        ] {
            assert!(says_rate_limited(message), "{message}");
            let e = RpcError::Node {
                code: -32005,
                message: message.into(),
            };
            assert!(!e.asks_for_a_smaller_range(), "{message}");
        }
        for message in [
            "exceed max block range: 5000",
            "query returned more than 10000 results",
        ] {
            assert!(!says_rate_limited(message), "{message}");
        }
    }

    #[test]
    fn range_errors_are_recognised() {
        let e = RpcError::Node {
            code: -32005,
            message: "query returned more than 10000 results".into(),
        };
        assert!(e.asks_for_a_smaller_range());
        let e = RpcError::Node {
            code: -32000,
            message: "exceed maximum block range: 5000".into(),
        };
        assert!(e.asks_for_a_smaller_range());
        assert!(!RpcError::Http(StatusCode::BAD_GATEWAY).asks_for_a_smaller_range());
        assert!(RpcError::TooLarge { limit: 1024 }.asks_for_a_smaller_range());
    }
}
