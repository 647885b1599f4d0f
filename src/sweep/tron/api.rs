//! The node's HTTP API (`/wallet/...`; TronGrid serves it next to `/jsonrpc`), for what
//! JSON-RPC cannot do: accounts, resources, chain parameters, broadcasting, results.
//! Each URL gets its own headers (an API key) and, if set, its request rate.

use super::protocol::{
    ContractType, DelegateResourceContract, Raw, Transaction, TransferContract,
    TriggerSmartContract, UnDelegateResourceContract,
};
use crate::config::RpcUrl;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use prost::Message;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Larger answers are refused.
const MAX_ANSWER_BYTES: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{path}: no URL answered ({detail})")]
    Unreachable { path: String, detail: String },
    #[error("{path}: unexpected answer: {detail}")]
    Malformed { path: String, detail: String },
}

struct Endpoint {
    base: String,
    /// For messages: never the path, which may hold a key.
    host: String,
    headers: HeaderMap,
    /// With a rate limit: the gap between two requests, and when the next may start.
    pacing: Option<(Duration, tokio::sync::Mutex<tokio::time::Instant>)>,
}

pub struct TronApi {
    http: reqwest::Client,
    endpoints: Vec<Endpoint>,
    preferred: AtomicUsize,
}

/// An account's energy, and the network's (to size delegations).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccountResource {
    pub energy_limit: i64,
    pub energy_used: i64,
    pub total_energy_limit: i64,
    pub total_energy_weight: i64,
}

/// What the node said to a broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broadcast {
    /// Accepted now, or already known to the node (`DUP_TRANSACTION_ERROR`).
    Accepted,
    /// The node is busy or badly connected: try again later.
    Busy { code: String, message: String },
    /// Refused for good (expired, bad signature, failed validation...).
    Refused { code: String, message: String },
}

/// A transaction's result, once it is in a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionInfo {
    pub block_number: u64,
    /// TRX burned, in sun.
    pub fee: i64,
    pub energy_used: i64,
    /// Whether it executed: a contract call's `receipt.result` is `SUCCESS`, and the
    /// transaction is not marked `FAILED`.
    pub succeeded: bool,
    /// `receipt.result` (or `result`) when it did not.
    pub failure: Option<String>,
    pub logs: Vec<InfoLog>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoLog {
    pub address: [u8; 20],
    pub topics: Vec<[u8; 32]>,
    pub data: Vec<u8>,
}

fn malformed(path: &str, detail: impl Into<String>) -> ApiError {
    ApiError::Malformed {
        path: path.to_owned(),
        detail: detail.into(),
    }
}

/// `41…` hex of an account, as the API takes it with `visible: false`.
pub fn hex41(account: &[u8; 20]) -> String {
    hex::encode(super::protocol_address(account))
}

fn int(value: &Value) -> i64 {
    value
        .as_i64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

/// Hex of a 20-byte account, with or without TRON's `41` prefix.
fn account_hex(text: &str) -> Option<[u8; 20]> {
    let bytes = hex::decode(text.strip_prefix("0x").unwrap_or(text)).ok()?;
    let tail = match bytes.len() {
        21 if bytes[0] == 0x41 => &bytes[1..],
        20 => &bytes[..],
        _ => return None,
    };
    tail.try_into().ok()
}

impl TronApi {
    pub fn new(urls: &[RpcUrl], timeout: Duration) -> anyhow::Result<Self> {
        anyhow::ensure!(!urls.is_empty(), "no HTTP API URL");
        let endpoints = urls
            .iter()
            .map(|u| {
                let mut headers = HeaderMap::new();
                for (name, value) in &u.headers {
                    headers.insert(
                        HeaderName::from_bytes(name.as_bytes())?,
                        HeaderValue::from_str(value.expose())?,
                    );
                }
                Ok(Endpoint {
                    base: u.url.trim_end_matches('/').to_owned(),
                    host: url::Url::parse(&u.url)
                        .ok()
                        .and_then(|p| p.host_str().map(str::to_owned))
                        .unwrap_or_default(),
                    headers,
                    pacing: u.max_requests_per_second.map(|rate| {
                        let gap = Duration::from_secs(1) / rate.max(1);
                        (gap, tokio::sync::Mutex::new(tokio::time::Instant::now()))
                    }),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()?;
        Ok(Self {
            http,
            endpoints,
            preferred: AtomicUsize::new(0),
        })
    }

    /// POSTs `body` to `path`, trying each URL in turn (from the one that answered last) on a
    /// connection failure, a 429 or a 5xx.
    async fn post(&self, path: &str, body: &Value) -> Result<Value, ApiError> {
        let count = self.endpoints.len();
        let start = self.preferred.load(Ordering::Relaxed);
        let mut last = String::new();
        for attempt in 0..count * 2 {
            let index = (start + attempt) % count;
            let endpoint = &self.endpoints[index];
            if let Some((gap, next)) = &endpoint.pacing {
                let mut next = next.lock().await;
                let now = tokio::time::Instant::now();
                if *next > now {
                    tokio::time::sleep_until(*next).await;
                }
                *next = (*next).max(now) + *gap;
            }
            if attempt >= count {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let sent = self
                .http
                .post(format!("{}{path}", endpoint.base))
                .headers(endpoint.headers.clone())
                .json(body)
                .send()
                .await;
            let mut response = match sent {
                Ok(r) => r,
                Err(e) => {
                    last = format!("{}: {}", endpoint.host, e.without_url());
                    continue;
                }
            };
            let status = response.status();
            if status.as_u16() == 429 || status.is_server_error() {
                last = format!("{}: HTTP {status}", endpoint.host);
                continue;
            }
            let mut bytes = Vec::new();
            loop {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        bytes.extend_from_slice(&chunk);
                        if bytes.len() > MAX_ANSWER_BYTES {
                            return Err(malformed(path, "the answer is too large"));
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        last = format!("{}: {}", endpoint.host, e.without_url());
                        bytes.clear();
                        break;
                    }
                }
            }
            if bytes.is_empty() && !last.is_empty() {
                continue;
            }
            if !status.is_success() {
                return Err(malformed(path, format!("HTTP {status}")));
            }
            self.preferred.store(index, Ordering::Relaxed);
            return serde_json::from_slice(&bytes).map_err(|_| malformed(path, "not JSON"));
        }
        Err(ApiError::Unreachable {
            path: path.to_owned(),
            detail: last,
        })
    }

    /// The account's TRX balance in sun, or `None` when it was never activated (the node
    /// answers `{}`).
    pub async fn account(&self, account: &[u8; 20]) -> Result<Option<i64>, ApiError> {
        let path = "/wallet/getaccount";
        let answer = self
            .post(
                path,
                &json!({ "address": hex41(account), "visible": false }),
            )
            .await?;
        let object = answer
            .as_object()
            .ok_or_else(|| malformed(path, "not an object"))?;
        if object.get("address").is_none() && object.get("create_time").is_none() {
            return Ok(None);
        }
        Ok(Some(object.get("balance").map(int).unwrap_or(0)))
    }

    pub async fn account_resource(&self, account: &[u8; 20]) -> Result<AccountResource, ApiError> {
        let path = "/wallet/getaccountresource";
        let answer = self
            .post(
                path,
                &json!({ "address": hex41(account), "visible": false }),
            )
            .await?;
        if !answer.is_object() {
            return Err(malformed(path, "not an object"));
        }
        let field = |name: &str| answer.get(name).map(int).unwrap_or(0);
        Ok(AccountResource {
            energy_limit: field("EnergyLimit"),
            energy_used: field("EnergyUsed"),
            total_energy_limit: field("TotalEnergyLimit"),
            total_energy_weight: field("TotalEnergyWeight"),
        })
    }

    /// The most staked TRX (in sun) whose energy `owner` can delegate now.
    pub async fn can_delegate_energy(&self, owner: &[u8; 20]) -> Result<i64, ApiError> {
        let path = "/wallet/getcandelegatedmaxsize";
        let answer = self
            .post(
                path,
                &json!({ "owner_address": hex41(owner), "type": super::ENERGY, "visible": false }),
            )
            .await?;
        if !answer.is_object() {
            return Err(malformed(path, "not an object"));
        }
        Ok(answer.get("max_size").map(int).unwrap_or(0))
    }

    /// The network's parameters (`getEnergyFee`, ...), by key.
    pub async fn chain_parameters(&self) -> Result<BTreeMap<String, i64>, ApiError> {
        let path = "/wallet/getchainparameters";
        let answer = self.post(path, &json!({})).await?;
        let list = answer
            .get("chainParameter")
            .and_then(Value::as_array)
            .ok_or_else(|| malformed(path, "no chainParameter list"))?;
        Ok(list
            .iter()
            .filter_map(|p| {
                let key = p.get("key")?.as_str()?.to_owned();
                Some((key, p.get("value").map(int).unwrap_or(0)))
            })
            .collect())
    }

    /// Broadcasts a signed transaction (`/wallet/broadcasttransaction`, in its JSON form).
    pub async fn broadcast(&self, transaction: &Transaction) -> Result<Broadcast, ApiError> {
        let path = "/wallet/broadcasttransaction";
        let body = transaction_json(transaction).map_err(|m| malformed(path, m))?;
        let answer = self.post(path, &body).await?;
        Ok(broadcast_outcome(&answer))
    }

    /// The transaction's result, or `None` while it is in no block.
    pub async fn transaction_info(
        &self,
        id: &[u8; 32],
    ) -> Result<Option<TransactionInfo>, ApiError> {
        let path = "/wallet/gettransactioninfobyid";
        let answer = self
            .post(path, &json!({ "value": hex::encode(id) }))
            .await?;
        transaction_info(&answer).map_err(|m| malformed(path, m))
    }
}

/// Reads `/wallet/broadcasttransaction`'s answer.
pub fn broadcast_outcome(answer: &Value) -> Broadcast {
    if answer.get("result").and_then(Value::as_bool) == Some(true) {
        return Broadcast::Accepted;
    }
    let code = answer
        .get("code")
        .and_then(Value::as_str)
        .unwrap_or("UNKNOWN")
        .to_owned();
    // The message is hex of UTF-8 text.
    let message = answer
        .get("message")
        .and_then(Value::as_str)
        .map(|m| {
            hex::decode(m)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .unwrap_or_else(|| m.to_owned())
        })
        .unwrap_or_default();
    match code.as_str() {
        "DUP_TRANSACTION_ERROR" => Broadcast::Accepted,
        "SERVER_BUSY"
        | "NO_CONNECTION"
        | "NOT_ENOUGH_EFFECTIVE_CONNECTION"
        | "BLOCK_UNSOLIDIFIED" => Broadcast::Busy { code, message },
        _ => Broadcast::Refused { code, message },
    }
}

/// Reads `/wallet/gettransactioninfobyid`'s answer (`{}` while the transaction is in no block).
pub fn transaction_info(answer: &Value) -> Result<Option<TransactionInfo>, String> {
    let object = answer.as_object().ok_or("not an object")?;
    let Some(block) = object.get("blockNumber") else {
        return Ok(None);
    };
    let block_number = u64::try_from(int(block)).map_err(|_| "a negative blockNumber")?;
    let receipt = object.get("receipt").cloned().unwrap_or(json!({}));
    let receipt_result = receipt.get("result").and_then(Value::as_str);
    let marked_failed = object.get("result").and_then(Value::as_str) == Some("FAILED");
    let succeeded = !marked_failed && receipt_result.is_none_or(|r| r == "SUCCESS");
    let failure = (!succeeded).then(|| {
        receipt_result
            .filter(|r| *r != "SUCCESS")
            .or(object.get("result").and_then(Value::as_str))
            .unwrap_or("FAILED")
            .to_owned()
    });
    let mut logs = Vec::new();
    for log in object
        .get("log")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let address = log
            .get("address")
            .and_then(Value::as_str)
            .and_then(account_hex)
            .ok_or("a log without an address")?;
        let topics = log
            .get("topics")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|t| {
                t.as_str()
                    .and_then(|t| hex::decode(t.strip_prefix("0x").unwrap_or(t)).ok())
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .ok_or("a log topic that is not 32 bytes of hex")
            })
            .collect::<Result<Vec<_>, _>>()?;
        let data = match log.get("data").and_then(Value::as_str) {
            Some(d) => hex::decode(d.strip_prefix("0x").unwrap_or(d))
                .map_err(|_| "log data that is not hex")?,
            None => Vec::new(),
        };
        logs.push(InfoLog {
            address,
            topics,
            data,
        });
    }
    Ok(Some(TransactionInfo {
        block_number,
        fee: object.get("fee").map(int).unwrap_or(0),
        energy_used: receipt.get("energy_usage_total").map(int).unwrap_or(0),
        succeeded,
        failure,
        logs,
    }))
}

/// The JSON form `/wallet/broadcasttransaction` takes (`visible: false`: addresses and bytes
/// as hex). The node rebuilds the protobuf from `raw_data`, so every field is written as
/// encoded; `raw_data_hex` and `txID` go along.
pub fn transaction_json(transaction: &Transaction) -> Result<Value, String> {
    let raw = transaction.raw_data.as_ref().ok_or("no raw_data")?;
    let mut raw_json = Map::new();
    raw_json.insert("contract".into(), json!(contracts_json(raw)?));
    raw_json.insert(
        "ref_block_bytes".into(),
        json!(hex::encode(&raw.ref_block_bytes)),
    );
    raw_json.insert(
        "ref_block_hash".into(),
        json!(hex::encode(&raw.ref_block_hash)),
    );
    raw_json.insert("expiration".into(), json!(raw.expiration));
    if raw.fee_limit != 0 {
        raw_json.insert("fee_limit".into(), json!(raw.fee_limit));
    }
    if !raw.data.is_empty() {
        raw_json.insert("data".into(), json!(hex::encode(&raw.data)));
    }
    raw_json.insert("timestamp".into(), json!(raw.timestamp));
    Ok(json!({
        "visible": false,
        "txID": hex::encode(super::tx_id(raw)),
        "raw_data": raw_json,
        "raw_data_hex": hex::encode(raw.encode_to_vec()),
        "signature": transaction.signature.iter().map(hex::encode).collect::<Vec<_>>(),
    }))
}

fn contracts_json(raw: &Raw) -> Result<Vec<Value>, String> {
    raw.contract
        .iter()
        .map(|contract| {
            let parameter = contract
                .parameter
                .as_ref()
                .ok_or("a contract without a parameter")?;
            let bytes = parameter.value.as_slice();
            let bad = |_| "a contract parameter that does not decode".to_owned();
            let (name, value) = match contract.r#type {
                t if t == ContractType::Transfer as i32 => {
                    let c = TransferContract::decode(bytes).map_err(bad)?;
                    let mut v = Map::new();
                    v.insert("owner_address".into(), json!(hex::encode(&c.owner_address)));
                    v.insert("to_address".into(), json!(hex::encode(&c.to_address)));
                    v.insert("amount".into(), json!(c.amount));
                    ("TransferContract", v)
                }
                t if t == ContractType::TriggerSmartContract as i32 => {
                    let c = TriggerSmartContract::decode(bytes).map_err(bad)?;
                    let mut v = Map::new();
                    v.insert("owner_address".into(), json!(hex::encode(&c.owner_address)));
                    v.insert(
                        "contract_address".into(),
                        json!(hex::encode(&c.contract_address)),
                    );
                    if c.call_value != 0 {
                        v.insert("call_value".into(), json!(c.call_value));
                    }
                    v.insert("data".into(), json!(hex::encode(&c.data)));
                    ("TriggerSmartContract", v)
                }
                t if t == ContractType::DelegateResource as i32 => {
                    let c = DelegateResourceContract::decode(bytes).map_err(bad)?;
                    let mut v = resource_json(
                        &c.owner_address,
                        c.resource,
                        c.balance,
                        &c.receiver_address,
                    )?;
                    if c.lock {
                        v.insert("lock".into(), json!(true));
                        v.insert("lock_period".into(), json!(c.lock_period));
                    }
                    ("DelegateResourceContract", v)
                }
                t if t == ContractType::UnDelegateResource as i32 => {
                    let c = UnDelegateResourceContract::decode(bytes).map_err(bad)?;
                    let v = resource_json(
                        &c.owner_address,
                        c.resource,
                        c.balance,
                        &c.receiver_address,
                    )?;
                    ("UnDelegateResourceContract", v)
                }
                other => return Err(format!("contract type {other} is not one a sweep sends")),
            };
            Ok(json!({
                "parameter": { "value": value, "type_url": parameter.type_url },
                "type": name,
            }))
        })
        .collect()
}

/// The fields `DelegateResourceContract` and `UnDelegateResourceContract` share.
fn resource_json(
    owner: &[u8],
    resource: i32,
    balance: i64,
    receiver: &[u8],
) -> Result<Map<String, Value>, String> {
    let mut v = Map::new();
    v.insert("owner_address".into(), json!(hex::encode(owner)));
    v.insert("resource".into(), json!(resource_name(resource)?));
    v.insert("balance".into(), json!(balance));
    v.insert("receiver_address".into(), json!(hex::encode(receiver)));
    Ok(v)
}

fn resource_name(code: i32) -> Result<&'static str, String> {
    match code {
        0 => Ok("BANDWIDTH"),
        1 => Ok("ENERGY"),
        other => Err(format!("resource {other} is not one a sweep delegates")),
    }
}
