//! `[networks.<NAME>.<mode>]`: RPC access, tokens and watcher limits, over built-in defaults.

use super::{bounded, err, ConfigError, Secret};
use crate::domain::address::canonical_contract;
use crate::domain::api_key::Mode;
use crate::domain::money::Token;
use crate::domain::network::{ChainFamily, Finality, Network, TokenDefault};
use crate::domain::urls::HttpUrl;
use axum::http::{HeaderName, HeaderValue};
use rust_decimal::Decimal;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct TokenConfig {
    pub token: Token,
    /// Canonical text form: TRON base58, EVM EIP-55.
    pub contract: String,
    pub decimals: u8,
    /// Smaller transfers are dust: not credited, only counted on the session.
    pub min_amount: Decimal,
}

impl From<&TokenDefault> for TokenConfig {
    fn from(default: &TokenDefault) -> Self {
        Self {
            token: default.token,
            contract: default.contract.to_owned(),
            decimals: default.decimals,
            min_amount: DEFAULT_MIN_AMOUNT,
        }
    }
}

/// The default minimum creditable amount: 0.01 token units.
pub const DEFAULT_MIN_AMOUNT: Decimal = Decimal::from_parts(1, 0, 0, false, 2);

#[derive(Debug, Clone)]
pub struct NetworkConfig {
    pub network: Network,
    pub mode: Mode,
    pub chain_id: Option<u64>,
    pub confirmations: u32,
    /// When a block is final: the node's `finalized` block, or `confirmations` deep.
    pub finality: Finality,
    pub rpc_urls: Vec<RpcUrl>,
    /// Sent to every URL; a URL's own `headers` go to it alone (an API key belongs there).
    pub rpc_headers: BTreeMap<String, Secret>,
    pub public_rpc_url: Option<String>,
    pub poll_interval: Duration,
    pub simulated: bool,
    pub tokens: Vec<TokenConfig>,
    /// Largest `eth_getLogs` range this network's provider accepts.
    pub max_block_range: u64,
    /// Blocks scanned per watcher cycle at most (backfill proceeds in steps of this size).
    pub max_blocks_per_scan: u64,
    /// The watcher is stale (unready, creates refused) when its last successful cycle is older.
    pub max_lag: Duration,
    /// ... or when it is this many blocks behind the head.
    pub max_lag_blocks: u64,
    /// One RPC answer's size limit; a larger log answer makes the watcher ask for half the range.
    pub max_response_bytes: usize,
    /// Which transfers `eth_getLogs` asks for.
    pub scan: Scan,
    /// Recipient addresses per `eth_getLogs` call in `Scan::Recipients` (java-tron's
    /// `maxSubTopics` is 1,000 by default).
    pub max_addresses_per_call: usize,
    /// Several calls go in one JSON-RPC batch request (turned off at run time if refused).
    pub batch: bool,
}

/// One RPC URL and what goes with it alone: in `rpc_urls`, a URL or a table `{ url, headers,
/// max_requests_per_second, max_requests_per_day }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpcUrl {
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Requests to this URL are spaced to stay under this rate.
    pub max_requests_per_second: Option<u32>,
    /// Requests to this URL per UTC day at most; then the other URLs serve until midnight.
    pub max_requests_per_day: Option<u64>,
}

impl From<String> for RpcUrl {
    fn from(url: String) -> Self {
        Self {
            url,
            headers: BTreeMap::new(),
            max_requests_per_second: None,
            max_requests_per_day: None,
        }
    }
}

impl From<&str> for RpcUrl {
    fn from(url: &str) -> Self {
        url.to_owned().into()
    }
}

/// A URL as the file gives it: a string, or a table with its headers.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawRpcUrl {
    Plain(String),
    Table(RpcUrl),
}

impl From<RawRpcUrl> for RpcUrl {
    fn from(raw: RawRpcUrl) -> Self {
        match raw {
            RawRpcUrl::Plain(url) => RpcUrl::from(url),
            RawRpcUrl::Table(rpc) => rpc,
        }
    }
}

/// How the watcher asks a node for transfers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scan {
    /// Only transfers to watched pay addresses (`topics[2]`): the node filters.
    Recipients,
    /// Every transfer of the token contracts, matched here: for nodes that cannot filter on
    /// topics.
    Contract,
    /// `Recipients` while the watched addresses fit in one call (`max_addresses_per_call`),
    /// `Contract` beyond: past that, sending the list each cycle costs more than receiving
    /// every transfer on a busy token (TRON USDT: about 1,300 addresses).
    Auto,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNetwork {
    rpc_urls: Option<Vec<RawRpcUrl>>,
    rpc_headers: Option<BTreeMap<String, Secret>>,
    public_rpc_url: Option<String>,
    chain_id: Option<u64>,
    confirmations: Option<u32>,
    poll_interval_ms: Option<u64>,
    simulated: Option<bool>,
    #[serde(default)]
    tokens: BTreeMap<String, RawToken>,
    max_block_range: Option<u64>,
    max_blocks_per_scan: Option<u64>,
    max_lag_seconds: Option<u64>,
    max_lag_blocks: Option<u64>,
    max_response_kib: Option<u64>,
    scan: Option<Scan>,
    max_addresses_per_call: Option<usize>,
    finality: Option<Finality>,
    batch: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    contract: String,
    decimals: Option<u8>,
    min_amount: Option<String>,
}

/// Every (network, mode) pair: the built-in defaults with the file's sections applied.
pub(super) fn parse(
    raw: BTreeMap<String, BTreeMap<String, RawNetwork>>,
) -> Result<HashMap<(Network, Mode), NetworkConfig>, ConfigError> {
    let mut out: HashMap<_, _> = Network::ALL
        .into_iter()
        .flat_map(|n| Mode::ALL.map(|m| ((n, m), NetworkConfig::defaults(n, m))))
        .collect();
    for (name, modes) in raw {
        let network = name
            .parse::<Network>()
            .map_err(|e| err(format!("networks.{name}"), e.to_string()))?;
        for (mode_name, raw_net) in modes {
            let prefix = format!("networks.{name}.{mode_name}");
            let mode = mode_name
                .parse::<Mode>()
                .map_err(|m| err(&prefix, m.to_string()))?;
            let net = out
                .entry((network, mode))
                .or_insert_with(|| NetworkConfig::defaults(network, mode));
            net.apply(&prefix, raw_net)?;
            // Blocks wait `confirmations` deep to be final: a smaller step never catches up.
            if net.max_blocks_per_scan < u64::from(net.confirmations) {
                return Err(err(
                    format!("{prefix}.max_blocks_per_scan"),
                    format!("must be at least the confirmations ({})", net.confirmations),
                ));
            }
            if net.simulated {
                net.simulate();
            }
            if net.watched() && net.tokens.is_empty() {
                let message = format!(
                    "{network}'s {} network has no documented USDT or USDC contract: set tokens.USDT = {{ contract = \"…\", decimals = … }}",
                    if mode == Mode::Test { "test" } else { "main" }
                );
                return Err(err(format!("{prefix}.tokens"), message));
            }
            if net.enabled() && network.family() == ChainFamily::Solana {
                let message = "SOLANA is not supported yet (no watch-only address scheme)";
                return Err(err(prefix, message));
            }
        }
    }
    Ok(out)
}

impl NetworkConfig {
    /// A network is usable in a mode when it has RPC URLs or is simulated (test mode only).
    pub fn enabled(&self) -> bool {
        self.simulated || !self.rpc_urls.is_empty()
    }

    /// Enabled and read from a chain (not simulated): a watcher runs for it.
    pub fn watched(&self) -> bool {
        !self.simulated && !self.rpc_urls.is_empty()
    }

    /// Makes this (test-mode) network simulated: no chain is read, and mainnet's tokens stand
    /// in where the testnet documents none.
    pub fn simulate(&mut self) {
        self.simulated = true;
        for default in self.network.mainnet().tokens {
            if self.token(default.token).is_none() {
                self.tokens.push(TokenConfig::from(default));
            }
        }
    }

    pub fn token(&self, token: Token) -> Option<&TokenConfig> {
        self.tokens.iter().find(|t| t.token == token)
    }

    fn defaults(network: Network, mode: Mode) -> Self {
        let defaults = match mode {
            Mode::Live => network.mainnet(),
            Mode::Test => network.testnet(),
        };
        Self {
            network,
            mode,
            chain_id: defaults.chain_id,
            confirmations: defaults.confirmations,
            finality: defaults.finality,
            rpc_urls: Vec::new(),
            rpc_headers: BTreeMap::new(),
            public_rpc_url: None,
            // TRON: 2 requests a cycle (5 where batches are refused or counted per call) stay
            // far under TronGrid's 100,000 a day.
            poll_interval: Duration::from_secs(if network == Network::Tron { 6 } else { 3 }),
            simulated: false,
            max_block_range: if network == Network::Tron { 5000 } else { 2000 },
            max_blocks_per_scan: 10_000,
            max_lag: Duration::from_secs(120),
            max_lag_blocks: 500,
            max_response_bytes: crate::chain::rpc::MAX_RESPONSE_BYTES,
            scan: Scan::Recipients,
            max_addresses_per_call: 1000,
            batch: true,
            tokens: defaults.tokens.iter().map(TokenConfig::from).collect(),
        }
    }

    /// Overrides the values `raw` sets; `prefix` is the section's key (`networks.BSC.test`).
    fn apply(&mut self, prefix: &str, raw: RawNetwork) -> Result<(), ConfigError> {
        let key = |name: &str| format!("{prefix}.{name}");
        if let Some(urls) = raw.rpc_urls {
            let mut parsed = Vec::with_capacity(urls.len());
            for (i, item) in urls.into_iter().enumerate() {
                let item_key = key(&format!("rpc_urls[{i}]"));
                let rpc = match item {
                    RawRpcUrl::Plain(url) => RpcUrl::from(url),
                    RawRpcUrl::Table(rpc) => rpc,
                };
                HttpUrl::parse(&rpc.url).map_err(|m| err(&item_key, m))?;
                check_headers(&format!("{item_key}.headers"), &rpc.headers)?;
                if let Some(rate) = rpc.max_requests_per_second {
                    let rate_key = format!("{item_key}.max_requests_per_second");
                    bounded(&rate_key, rate, 1..=100_000)?;
                }
                if let Some(budget) = rpc.max_requests_per_day {
                    let budget_key = format!("{item_key}.max_requests_per_day");
                    bounded(&budget_key, budget, 100..)?;
                }
                parsed.push(rpc);
            }
            self.rpc_urls = parsed;
        }
        if let Some(headers) = raw.rpc_headers {
            check_headers(&key("rpc_headers"), &headers)?;
            self.rpc_headers = headers;
        }
        if let Some(url) = raw.public_rpc_url {
            HttpUrl::parse(&url).map_err(|m| err(key("public_rpc_url"), m))?;
            self.public_rpc_url = Some(url);
        }
        if let Some(id) = raw.chain_id {
            if self.network.family() == ChainFamily::Solana {
                return Err(err(key("chain_id"), "SOLANA has no chain id"));
            }
            self.chain_id = Some(id);
        }
        self.confirmations = raw.confirmations.unwrap_or(self.confirmations);
        if let Some(ms) = raw.poll_interval_ms {
            self.poll_interval =
                Duration::from_millis(bounded(&key("poll_interval_ms"), ms, 50..)?);
        }
        if let Some(n) = raw.max_block_range {
            self.max_block_range = bounded(&key("max_block_range"), n, 1..=100_000)?;
        }
        if let Some(n) = raw.max_blocks_per_scan {
            self.max_blocks_per_scan = bounded(&key("max_blocks_per_scan"), n, 1..=1_000_000)?;
        }
        if let Some(secs) = raw.max_lag_seconds {
            self.max_lag = Duration::from_secs(bounded(&key("max_lag_seconds"), secs, 1..)?);
        }
        self.max_lag_blocks = raw.max_lag_blocks.unwrap_or(self.max_lag_blocks);
        if let Some(kib) = raw.max_response_kib {
            let kib = bounded(&key("max_response_kib"), kib, 1..=1024 * 1024)?;
            self.max_response_bytes = usize::try_from(kib * 1024).unwrap_or(usize::MAX);
        }
        self.scan = raw.scan.unwrap_or(self.scan);
        self.finality = raw.finality.unwrap_or(self.finality);
        self.batch = raw.batch.unwrap_or(self.batch);
        if let Some(n) = raw.max_addresses_per_call {
            self.max_addresses_per_call = bounded(&key("max_addresses_per_call"), n, 1..=10_000)?;
        }
        if let Some(simulated) = raw.simulated {
            if simulated && self.mode == Mode::Live {
                let message = "only test-mode networks can be simulated";
                return Err(err(key("simulated"), message));
            }
            self.simulated = simulated;
        }
        for (symbol, raw_token) in raw.tokens {
            self.apply_token(&key(&format!("tokens.{symbol}")), &symbol, raw_token)?;
        }
        Ok(())
    }

    fn apply_token(&mut self, key: &str, symbol: &str, raw: RawToken) -> Result<(), ConfigError> {
        let token = Token::parse(symbol).ok_or_else(|| err(key, "unknown token (USDT or USDC)"))?;
        if token == Token::Usdc && self.network == Network::Tron {
            return Err(err(key, "USDC is not supported on TRON"));
        }
        let contract = canonical_contract(self.network.family(), &raw.contract)
            .map_err(|m| err(format!("{key}.contract"), format!("'{}' {m}", raw.contract)))?;
        let existing = self.tokens.iter().position(|t| t.token == token);
        let decimals = match (raw.decimals, existing) {
            (Some(d), _) => bounded(&format!("{key}.decimals"), d, ..=36)?,
            (None, Some(i)) => self.tokens[i].decimals,
            (None, None) => {
                let message = "is required for a token with no built-in default";
                return Err(err(format!("{key}.decimals"), message));
            }
        };
        let min_amount = match &raw.min_amount {
            None => existing.map_or(DEFAULT_MIN_AMOUNT, |i| self.tokens[i].min_amount),
            Some(text) => parse_min_amount(text, decimals)
                .map_err(|m| err(format!("{key}.min_amount"), format!("'{text}' {m}")))?,
        };
        let config = TokenConfig {
            token,
            contract,
            decimals,
            min_amount,
        };
        match existing {
            Some(i) => self.tokens[i] = config,
            None => self.tokens.push(config),
        }
        Ok(())
    }
}

/// Every name and value as HTTP allows them, so the RPC client is never refused a header.
fn check_headers(key: &str, headers: &BTreeMap<String, Secret>) -> Result<(), ConfigError> {
    for (name, value) in headers {
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(err(format!("{key}.{name}"), "is not a valid header name"));
        }
        if HeaderValue::from_str(value.expose()).is_err() {
            let message = "is not a valid header value (control characters or non-ASCII text)";
            return Err(err(format!("{key}.{name}"), message));
        }
    }
    Ok(())
}

/// A positive amount the token can represent: at least one base unit.
fn parse_min_amount(text: &str, decimals: u8) -> Result<Decimal, String> {
    let amount =
        Decimal::from_str_exact(text.trim()).map_err(|_| "is not a decimal amount".to_string())?;
    if amount <= Decimal::ZERO {
        return Err("must be greater than 0".into());
    }
    if amount.normalize().scale() > u32::from(decimals) {
        return Err(format!(
            "is smaller than one base unit, or has more than the token's {decimals} decimals"
        ));
    }
    Ok(amount.normalize())
}
