//! Configuration: environment variables plus an optional TOML file (`CHECKOUT_CONFIG`).
//! Every problem stops start-up with one line that names the offending key.

use crate::domain::address::{canonical_contract, AccountXpub};
use crate::domain::api_key::Mode;
use crate::domain::money::{parse_plain_decimal, Token, FIAT_CURRENCIES};
use crate::domain::network::{ChainFamily, Network};
use crate::domain::urls::HttpUrl;
use rust_decimal::Decimal;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/checkout";
pub const DEFAULT_BIND_ADDR: &str = "0.0.0.0:8080";
pub const DEFAULT_BASE_URL: &str = "http://localhost:8080";

#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

fn err(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    pub database_url_is_default: bool,
    pub bind_addr: SocketAddr,
    /// Without a trailing slash.
    pub base_url: String,
    /// No base URL was configured: `serve` derives it from the bound port.
    pub base_url_is_default: bool,
    pub session_ttl: chrono::Duration,
    pub wallets: Wallets,
    pub fees: FeeConfig,
    pub rates: RatesConfig,
    pub webhooks: WebhooksConfig,
    pub idempotency: IdempotencyConfig,
    pub watcher: WatcherConfig,
    pub hosted: HostedConfig,
    pub http: HttpConfig,
    pub rate_limits: RateLimitConfig,
    /// Every (network, mode) pair, enabled or not.
    pub networks: HashMap<(Network, Mode), NetworkConfig>,
}

#[derive(Debug, Clone, Default)]
pub struct Wallets {
    pub tron: Option<AccountXpub>,
    pub evm: Option<AccountXpub>,
}

impl Wallets {
    pub fn for_family(&self, family: ChainFamily) -> Option<&AccountXpub> {
        match family {
            ChainFamily::Tron => self.tron.as_ref(),
            ChainFamily::Evm => self.evm.as_ref(),
            ChainFamily::Solana => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct FeeConfig {
    pub rate: Decimal,
    pub floors: HashMap<Network, Decimal>,
    pub default_floor: Decimal,
}

impl FeeConfig {
    pub fn floor(&self, network: Network) -> Decimal {
        self.floors
            .get(&network)
            .copied()
            .unwrap_or(self.default_floor)
    }
}

impl Default for FeeConfig {
    fn default() -> Self {
        Self {
            rate: Decimal::new(5, 3),
            floors: HashMap::from([
                (Network::Tron, Decimal::ONE),
                (Network::Ethereum, Decimal::ONE),
            ]),
            default_floor: Decimal::new(1, 1),
        }
    }
}

#[derive(Debug, Clone)]
pub enum RateSourceConfig {
    /// Units of fiat per 1 token, fixed by the operator.
    Static(HashMap<String, Decimal>),
    /// A CoinGecko-compatible `/simple/price` endpoint.
    CoinGecko {
        base_url: String,
        api_key: Option<String>,
        api_key_header: String,
    },
}

#[derive(Debug, Clone)]
pub struct RatesConfig {
    pub source: RateSourceConfig,
    /// How long a fetched rate is used before it is fetched again.
    pub refresh_interval: Duration,
    /// A rate older than this is refused (503), never used.
    pub max_age: Duration,
}

impl Default for RatesConfig {
    fn default() -> Self {
        Self {
            source: RateSourceConfig::Static(HashMap::new()),
            refresh_interval: Duration::from_secs(60),
            max_age: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, Clone)]
pub struct IdempotencyConfig {
    /// A claim older than this whose request never finished is taken over.
    pub lock_timeout: Duration,
    /// Keys are kept at least this long.
    pub retention: Duration,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        Self {
            lock_timeout: Duration::from_secs(60),
            retention: Duration::from_secs(24 * 3600),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct HostedConfig {
    /// Origins allowed to frame the page (`?embed=1`); none by default.
    pub frame_ancestors: Vec<String>,
}

/// Connection-level limits of the HTTP server.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// A request head not received whole within this is dropped (slowloris).
    pub header_read_timeout: Duration,
    /// A request whose answer (body read included) takes longer gets 408.
    pub request_timeout: Duration,
    /// Open connections from one client address (an IPv6 /64) at most; more are answered 429
    /// and closed. Trusted proxies (`rate_limits.trusted_proxies`) are exempt.
    pub max_connections_per_ip: usize,
    /// Open connections in all; more are answered 429 and closed.
    pub max_connections: usize,
    /// Request line plus headers, in bytes; more is answered 431.
    pub max_header_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections_per_ip: 100,
            max_connections: 10_000,
            max_header_bytes: 32 * 1024,
        }
    }
}

/// A token bucket: `burst` requests at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

/// Request limits, kept in each process's memory (see README, "Rate limits").
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    /// Per live API key, over all its routes.
    pub live: RateLimit,
    /// Per test API key.
    pub test: RateLimit,
    /// Per client address on the public routes (hosted page, view, events, logo, assets);
    /// failed authentications are charged here too.
    pub ip: RateLimit,
    /// Open live-status streams (SSE) per client address.
    pub ip_streams: u32,
    /// The header a trusted proxy puts the client's address in (`X-Forwarded-For`,
    /// `Forwarded`, `X-Real-IP` …); `None`: the TCP peer is the client.
    pub client_ip_header: Option<axum::http::HeaderName>,
    /// Peers whose `client_ip_header` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            live: RateLimit {
                per_second: 100,
                burst: 200,
            },
            test: RateLimit {
                per_second: 25,
                burst: 50,
            },
            ip: RateLimit {
                per_second: 20,
                burst: 40,
            },
            ip_streams: 20,
            client_ip_header: None,
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct WatcherConfig {
    /// A watcher's lease on its network; another replica takes over this long after it dies.
    pub lease: Duration,
    /// How often open sessions past `expires_at` are checked.
    pub expiry_interval: Duration,
    /// Senders whose transfers block the session, as 20-byte addresses.
    pub denylist: std::collections::HashSet<[u8; 20]>,
}

impl Default for WatcherConfig {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(15),
            expiry_interval: Duration::from_secs(5),
            denylist: Default::default(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct WebhooksConfig {
    pub allow_private_targets: bool,
    /// One delivery attempt's limit.
    pub timeout: Duration,
    /// Waits before each retry; after the last, the delivery is `failed`.
    pub retry_schedule: Vec<Duration>,
    pub poll_interval: Duration,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            allow_private_targets: false,
            timeout: Duration::from_secs(10),
            retry_schedule: [15, 60, 300, 3600, 6 * 3600, 24 * 3600]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            poll_interval: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TokenConfig {
    pub token: Token,
    /// Canonical text form: TRON base58, EVM EIP-55.
    pub contract: String,
    pub decimals: u8,
    /// Smaller transfers are dust: not credited, only counted on the session.
    pub min_amount: Decimal,
}

/// The default minimum creditable amount: 0.01 token units.
pub const DEFAULT_MIN_AMOUNT: Decimal = Decimal::from_parts(1, 0, 0, false, 2);

#[derive(Debug, Clone)]
pub struct NetworkConfig {
    pub network: Network,
    pub mode: Mode,
    pub chain_id: Option<u64>,
    pub confirmations: u32,
    pub rpc_urls: Vec<String>,
    pub rpc_headers: BTreeMap<String, String>,
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
            rpc_urls: Vec::new(),
            rpc_headers: BTreeMap::new(),
            public_rpc_url: None,
            poll_interval: Duration::from_millis(3000),
            simulated: false,
            max_block_range: if network == Network::Tron { 5000 } else { 2000 },
            max_blocks_per_scan: 10_000,
            max_lag: Duration::from_secs(120),
            max_lag_blocks: 500,
            max_response_bytes: crate::chain::rpc::MAX_RESPONSE_BYTES,
            tokens: defaults
                .tokens
                .iter()
                .map(|t| TokenConfig {
                    token: t.token,
                    contract: t.contract.to_owned(),
                    decimals: t.decimals,
                    min_amount: DEFAULT_MIN_AMOUNT,
                })
                .collect(),
        }
    }
}

// ---- the TOML file, as written ----

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    database_url: Option<String>,
    bind_addr: Option<String>,
    base_url: Option<String>,
    session_ttl_minutes: Option<i64>,
    #[serde(default)]
    wallets: RawWallets,
    fees: Option<RawFees>,
    rates: Option<RawRates>,
    #[serde(default)]
    webhooks: RawWebhooks,
    #[serde(default)]
    idempotency: RawIdempotency,
    #[serde(default)]
    watcher: RawWatcher,
    #[serde(default)]
    hosted: RawHosted,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    rate_limits: RawRateLimits,
    #[serde(default)]
    networks: BTreeMap<String, BTreeMap<String, RawNetwork>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    header_read_timeout_ms: Option<u64>,
    request_timeout_ms: Option<u64>,
    max_connections_per_ip: Option<usize>,
    max_connections: Option<usize>,
    max_header_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWallets {
    tron_xpub: Option<String>,
    evm_xpub: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFees {
    rate: Option<String>,
    floor: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRates {
    source: Option<String>,
    #[serde(rename = "static")]
    static_rates: Option<BTreeMap<String, String>>,
    base_url: Option<String>,
    api_key: Option<String>,
    api_key_header: Option<String>,
    refresh_seconds: Option<u64>,
    max_age_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdempotency {
    lock_timeout_seconds: Option<u64>,
    retention_hours: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHosted {
    frame_ancestors: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimits {
    live_per_second: Option<u32>,
    live_burst: Option<u32>,
    test_per_second: Option<u32>,
    test_burst: Option<u32>,
    ip_per_second: Option<u32>,
    ip_burst: Option<u32>,
    ip_streams: Option<u32>,
    client_ip_header: Option<String>,
    trusted_proxies: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWatcher {
    lease_seconds: Option<u64>,
    expiry_interval_ms: Option<u64>,
    denylist_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhooks {
    allow_private_targets: Option<bool>,
    timeout_ms: Option<u64>,
    retry_schedule_seconds: Option<Vec<u64>>,
    poll_interval_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    rpc_urls: Option<Vec<String>>,
    rpc_headers: Option<BTreeMap<String, String>>,
    public_rpc_url: Option<String>,
    chain_id: Option<u64>,
    confirmations: Option<u32>,
    poll_interval_ms: Option<u64>,
    simulated: Option<bool>,
    tokens: Option<BTreeMap<String, RawToken>>,
    max_block_range: Option<u64>,
    max_blocks_per_scan: Option<u64>,
    max_lag_seconds: Option<u64>,
    max_lag_blocks: Option<u64>,
    max_response_kib: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    contract: String,
    decimals: Option<u8>,
    min_amount: Option<String>,
}

/// Where configuration values come from, so tests can supply their own environment.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl Config {
    /// Built-in defaults with no file and no environment: nothing enabled.
    pub fn defaults() -> Self {
        Self::from_parts(&NoEnv, None).expect("built-in defaults are valid")
    }

    /// Loads from the process environment and the file named by `CHECKOUT_CONFIG`.
    pub fn load() -> Result<Self, ConfigError> {
        let text = match ProcessEnv.var("CHECKOUT_CONFIG") {
            Some(path) => Some(
                std::fs::read_to_string(&path)
                    .map_err(|e| err("CHECKOUT_CONFIG", format!("cannot read {path}: {e}")))?,
            ),
            None => None,
        };
        Self::from_parts(&ProcessEnv, text.as_deref())
    }

    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::from_parts(&NoEnv, Some(text))
    }

    pub fn from_parts(env: &dyn Env, toml_text: Option<&str>) -> Result<Self, ConfigError> {
        let raw: RawConfig = match toml_text {
            Some(text) => toml::from_str(text).map_err(|e| toml_error(text, &e))?,
            None => RawConfig::default(),
        };

        let (database_url, database_url_is_default) =
            match env.var("DATABASE_URL").or(raw.database_url) {
                Some(url) => (url, false),
                None => (DEFAULT_DATABASE_URL.to_owned(), true),
            };
        if !(database_url.starts_with("postgres://") || database_url.starts_with("postgresql://")) {
            return Err(err("DATABASE_URL", "must be a postgres:// URL"));
        }

        let bind_text = env
            .var("BIND_ADDR")
            .or(raw.bind_addr)
            .unwrap_or_else(|| DEFAULT_BIND_ADDR.into());
        let bind_addr = bind_text.parse().map_err(|_| {
            err(
                "BIND_ADDR",
                format!("'{bind_text}' is not an address such as 0.0.0.0:8080"),
            )
        })?;

        let configured_base = env.var("CHECKOUT_BASE_URL").or(raw.base_url);
        let base_url_is_default = configured_base.is_none();
        let base_url = configured_base.unwrap_or_else(|| DEFAULT_BASE_URL.into());
        HttpUrl::parse(&base_url).map_err(|m| err("CHECKOUT_BASE_URL", m))?;
        let base_url = base_url.trim_end_matches('/').to_owned();

        let ttl = raw.session_ttl_minutes.unwrap_or(30);
        if !(1..=7 * 24 * 60).contains(&ttl) {
            return Err(err(
                "session_ttl_minutes",
                "must be between 1 and 10080 (7 days)",
            ));
        }

        let wallets = Wallets {
            tron: parse_xpub("wallets.tron_xpub", raw.wallets.tron_xpub)?,
            evm: parse_xpub("wallets.evm_xpub", raw.wallets.evm_xpub)?,
        };

        let fees = parse_fees(raw.fees)?;
        let rates = parse_rates(raw.rates)?;
        let webhooks = parse_webhooks(raw.webhooks)?;
        let networks = parse_networks(raw.networks)?;
        let watcher = parse_watcher(raw.watcher)?;
        let rate_limits = parse_rate_limits(raw.rate_limits)?;
        let mut hosted = HostedConfig::default();
        for (i, origin) in raw
            .hosted
            .frame_ancestors
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let key = format!("hosted.frame_ancestors[{i}]");
            let parsed = url::Url::parse(&origin)
                .map_err(|_| err(&key, "is not an origin such as https://shop.example"))?;
            let is_origin = matches!(parsed.scheme(), "http" | "https")
                && parsed.path() == "/"
                && parsed.query().is_none()
                && origin.trim_end_matches('/') == parsed.origin().ascii_serialization();
            if !is_origin {
                return Err(err(key, "is not an origin such as https://shop.example"));
            }
            hosted
                .frame_ancestors
                .push(parsed.origin().ascii_serialization());
        }
        let http = parse_http(raw.http)?;
        let mut idempotency = IdempotencyConfig::default();
        if let Some(secs) = raw.idempotency.lock_timeout_seconds {
            if !(1..=3600).contains(&secs) {
                return Err(err(
                    "idempotency.lock_timeout_seconds",
                    "must be between 1 and 3600",
                ));
            }
            idempotency.lock_timeout = Duration::from_secs(secs);
        }
        if let Some(hours) = raw.idempotency.retention_hours {
            if !(24..=24 * 90).contains(&hours) {
                return Err(err(
                    "idempotency.retention_hours",
                    "must be between 24 and 2160",
                ));
            }
            idempotency.retention = Duration::from_secs(hours * 3600);
        }

        Ok(Self {
            database_url,
            database_url_is_default,
            bind_addr,
            base_url,
            base_url_is_default,
            session_ttl: chrono::Duration::minutes(ttl),
            wallets,
            fees,
            rates,
            webhooks,
            idempotency,
            watcher,
            http,
            hosted,
            rate_limits,
            networks,
        })
    }

    pub fn network(&self, network: Network, mode: Mode) -> &NetworkConfig {
        self.networks
            .get(&(network, mode))
            .expect("every (network, mode) pair is present")
    }

    pub fn network_mut(&mut self, network: Network, mode: Mode) -> &mut NetworkConfig {
        self.networks
            .get_mut(&(network, mode))
            .expect("every (network, mode) pair is present")
    }

    /// Enabled networks, in a stable order.
    pub fn enabled_networks(&self) -> Vec<&NetworkConfig> {
        let mut out: Vec<_> = self.networks.values().filter(|n| n.enabled()).collect();
        out.sort_by_key(|n| (n.mode.livemode(), n.network));
        out
    }
}

struct NoEnv;

impl Env for NoEnv {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
}

fn toml_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let line = e
        .span()
        .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
    let message = e.message().replace('\n', " ");
    match line {
        Some(line) => err("config file", format!("line {line}: {message}")),
        None => err("config file", message),
    }
}

fn parse_xpub(key: &str, value: Option<String>) -> Result<Option<AccountXpub>, ConfigError> {
    value
        .filter(|v| !v.trim().is_empty())
        .map(|v| AccountXpub::parse(&v).map_err(|m| err(key, m)))
        .transpose()
}

fn parse_decimal(key: &str, value: &str) -> Result<Decimal, ConfigError> {
    parse_plain_decimal(value).map_err(|m| err(key, format!("'{value}' {m}")))
}

fn parse_fees(raw: Option<RawFees>) -> Result<FeeConfig, ConfigError> {
    let mut fees = FeeConfig::default();
    let Some(raw) = raw else { return Ok(fees) };
    if let Some(rate) = raw.rate {
        fees.rate = parse_decimal("fees.rate", &rate)?;
        if fees.rate >= Decimal::ONE {
            return Err(err("fees.rate", "must be below 1 (0.005 means 0.5 %)"));
        }
    }
    for (name, value) in raw.floor.unwrap_or_default() {
        let key = format!("fees.floor.{name}");
        let floor = parse_decimal(&key, &value)?;
        if name == "default" {
            fees.default_floor = floor;
        } else {
            let network = Network::parse(&name).ok_or_else(|| err(&key, "unknown network"))?;
            fees.floors.insert(network, floor);
        }
    }
    Ok(fees)
}

fn parse_rates(raw: Option<RawRates>) -> Result<RatesConfig, ConfigError> {
    let mut rates = RatesConfig::default();
    let Some(raw) = raw else { return Ok(rates) };
    if let Some(secs) = raw.refresh_seconds {
        rates.refresh_interval = Duration::from_secs(secs);
    }
    if let Some(secs) = raw.max_age_seconds {
        if secs == 0 || secs > 3600 {
            return Err(err("rates.max_age_seconds", "must be between 1 and 3600"));
        }
        rates.max_age = Duration::from_secs(secs);
    }
    let mut static_rates = HashMap::new();
    for (code, value) in raw.static_rates.unwrap_or_default() {
        let key = format!("rates.static.{code}");
        if !FIAT_CURRENCIES.contains(&code.as_str()) {
            return Err(err(key, "unknown fiat currency"));
        }
        let rate = parse_decimal(&key, &value)?;
        if rate.is_zero() {
            return Err(err(key, "must be greater than 0"));
        }
        static_rates.insert(code, rate);
    }
    rates.source = match raw.source.as_deref().unwrap_or("static") {
        "static" => RateSourceConfig::Static(static_rates),
        "coingecko" => {
            let base_url = raw
                .base_url
                .unwrap_or_else(|| "https://api.coingecko.com/api/v3".into());
            HttpUrl::parse(&base_url).map_err(|m| err("rates.base_url", m))?;
            RateSourceConfig::CoinGecko {
                base_url: base_url.trim_end_matches('/').to_owned(),
                api_key: raw.api_key,
                api_key_header: raw
                    .api_key_header
                    .unwrap_or_else(|| "x-cg-demo-api-key".into()),
            }
        }
        other => {
            return Err(err(
                "rates.source",
                format!("'{other}' is not 'static' or 'coingecko'"),
            ))
        }
    };
    Ok(rates)
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

fn parse_http(raw: RawHttp) -> Result<HttpConfig, ConfigError> {
    let mut http = HttpConfig::default();
    if let Some(ms) = raw.header_read_timeout_ms {
        if !(100..=300_000).contains(&ms) {
            return Err(err(
                "http.header_read_timeout_ms",
                "must be between 100 and 300000",
            ));
        }
        http.header_read_timeout = Duration::from_millis(ms);
    }
    if let Some(ms) = raw.request_timeout_ms {
        if !(100..=600_000).contains(&ms) {
            return Err(err(
                "http.request_timeout_ms",
                "must be between 100 and 600000",
            ));
        }
        http.request_timeout = Duration::from_millis(ms);
    }
    if let Some(n) = raw.max_connections_per_ip {
        if !(1..=100_000).contains(&n) {
            return Err(err(
                "http.max_connections_per_ip",
                "must be between 1 and 100000",
            ));
        }
        http.max_connections_per_ip = n;
    }
    if let Some(n) = raw.max_connections {
        if !(1..=1_000_000).contains(&n) {
            return Err(err("http.max_connections", "must be between 1 and 1000000"));
        }
        http.max_connections = n;
    }
    if let Some(n) = raw.max_header_bytes {
        if !(4096..=512 * 1024).contains(&n) {
            return Err(err(
                "http.max_header_bytes",
                "must be between 4096 and 524288",
            ));
        }
        http.max_header_bytes = n;
    }
    Ok(http)
}

fn parse_webhooks(raw: RawWebhooks) -> Result<WebhooksConfig, ConfigError> {
    let mut w = WebhooksConfig {
        allow_private_targets: raw.allow_private_targets.unwrap_or(false),
        ..WebhooksConfig::default()
    };
    if let Some(ms) = raw.timeout_ms {
        if !(100..=60_000).contains(&ms) {
            return Err(err("webhooks.timeout_ms", "must be between 100 and 60000"));
        }
        w.timeout = Duration::from_millis(ms);
    }
    if let Some(schedule) = raw.retry_schedule_seconds {
        if schedule.len() > 20 || schedule.iter().any(|s| *s > 7 * 24 * 3600) {
            return Err(err(
                "webhooks.retry_schedule_seconds",
                "at most 20 waits of at most 7 days each",
            ));
        }
        w.retry_schedule = schedule.into_iter().map(Duration::from_secs).collect();
    }
    if let Some(ms) = raw.poll_interval_ms {
        if !(10..=60_000).contains(&ms) {
            return Err(err(
                "webhooks.poll_interval_ms",
                "must be between 10 and 60000",
            ));
        }
        w.poll_interval = Duration::from_millis(ms);
    }
    Ok(w)
}

fn parse_rate_limits(raw: RawRateLimits) -> Result<RateLimitConfig, ConfigError> {
    let mut limits = RateLimitConfig::default();
    let in_range = |key: &str, value: Option<u32>, max: u32| -> Result<Option<u32>, ConfigError> {
        match value {
            Some(v) if !(1..=max).contains(&v) => Err(err(
                format!("rate_limits.{key}"),
                format!("must be between 1 and {max}"),
            )),
            v => Ok(v),
        }
    };
    for (name, bucket, per_second, burst) in [
        (
            "live",
            &mut limits.live,
            raw.live_per_second,
            raw.live_burst,
        ),
        (
            "test",
            &mut limits.test,
            raw.test_per_second,
            raw.test_burst,
        ),
        ("ip", &mut limits.ip, raw.ip_per_second, raw.ip_burst),
    ] {
        if let Some(v) = in_range(&format!("{name}_per_second"), per_second, 1_000_000)? {
            bucket.per_second = v;
        }
        if let Some(v) = in_range(&format!("{name}_burst"), burst, 1_000_000)? {
            bucket.burst = v;
        }
    }
    if let Some(v) = in_range("ip_streams", raw.ip_streams, 1_000_000)? {
        limits.ip_streams = v;
    }
    if let Some(name) = raw.client_ip_header {
        let header = axum::http::HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
            err(
                "rate_limits.client_ip_header",
                format!("'{name}' is not a header name such as X-Forwarded-For"),
            )
        })?;
        limits.client_ip_header = Some(header);
    }
    for (i, text) in raw.trusted_proxies.unwrap_or_default().iter().enumerate() {
        let net = parse_ip_net(text).map_err(|m| {
            err(
                format!("rate_limits.trusted_proxies[{i}]"),
                format!("'{text}' {m}"),
            )
        })?;
        limits.trusted_proxies.push(net);
    }
    match (&limits.client_ip_header, limits.trusted_proxies.is_empty()) {
        (Some(_), true) => Err(err(
            "rate_limits.client_ip_header",
            "is believed only from rate_limits.trusted_proxies: list your proxies' addresses",
        )),
        (None, false) => Err(err(
            "rate_limits.trusted_proxies",
            "needs rate_limits.client_ip_header, the header those proxies set (X-Forwarded-For …)",
        )),
        _ => Ok(limits),
    }
}

/// An address (`10.0.0.7`, `::1`) or a network (`10.0.0.0/8`, `fd00::/8`) whose host bits are
/// zero; an IPv4-mapped IPv6 form is read as the IPv4 one.
fn parse_ip_net(text: &str) -> Result<ipnet::IpNet, String> {
    let text = text.trim();
    let net = match text.parse::<std::net::IpAddr>() {
        Ok(ip) => ipnet::IpNet::from(ip),
        Err(_) => text
            .parse::<ipnet::IpNet>()
            .map_err(|_| "is not an IP address or network such as 10.0.0.0/8".to_string())?,
    };
    if net.trunc() != net {
        return Err(format!(
            "has bits set past its prefix (the network is {})",
            net.trunc()
        ));
    }
    Ok(match net {
        ipnet::IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map(ipnet::IpNet::V4)
                .unwrap_or(net),
            None => net,
        },
        other => other,
    })
}

fn parse_watcher(raw: RawWatcher) -> Result<WatcherConfig, ConfigError> {
    let mut watcher = WatcherConfig::default();
    if let Some(secs) = raw.lease_seconds {
        if !(2..=600).contains(&secs) {
            return Err(err("watcher.lease_seconds", "must be between 2 and 600"));
        }
        watcher.lease = Duration::from_secs(secs);
    }
    if let Some(ms) = raw.expiry_interval_ms {
        if !(50..=600_000).contains(&ms) {
            return Err(err(
                "watcher.expiry_interval_ms",
                "must be between 50 and 600000",
            ));
        }
        watcher.expiry_interval = Duration::from_millis(ms);
    }
    if let Some(path) = raw.denylist_file {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| err("watcher.denylist_file", format!("cannot read {path}: {e}")))?;
        watcher.denylist = parse_denylist(&text)
            .map_err(|m| err("watcher.denylist_file", format!("{path}: {m}")))?;
    }
    Ok(watcher)
}

/// One address per line (TRON base58 or EVM hex); blank lines and `#` comments are skipped.
pub fn parse_denylist(text: &str) -> Result<std::collections::HashSet<[u8; 20]>, String> {
    let mut out = std::collections::HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let entry = line.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        let raw = if entry.starts_with('T') {
            crate::domain::address::parse_tron_address(entry)
        } else {
            crate::domain::address::parse_evm_address(entry)
        }
        .map_err(|m| format!("line {}: '{entry}' {m}", i + 1))?;
        out.insert(raw);
    }
    Ok(out)
}

fn parse_networks(
    raw: BTreeMap<String, BTreeMap<String, RawNetwork>>,
) -> Result<HashMap<(Network, Mode), NetworkConfig>, ConfigError> {
    let mut out = HashMap::new();
    for network in Network::ALL {
        for mode in [Mode::Test, Mode::Live] {
            out.insert((network, mode), NetworkConfig::defaults(network, mode));
        }
    }
    for (name, modes) in raw {
        let network = Network::parse(&name).ok_or_else(|| {
            err(
                format!("networks.{name}"),
                "unknown network (TRON, SOLANA, BSC, ETHEREUM, POLYGON, ARBITRUM, OPTIMISM, BASE)",
            )
        })?;
        for (mode_name, raw_net) in modes {
            let prefix = format!("networks.{name}.{mode_name}");
            let mode = mode_name
                .parse::<Mode>()
                .map_err(|m| err(&prefix, m.to_string()))?;
            let net = out.get_mut(&(network, mode)).expect("pre-filled");
            apply_network(&prefix, net, raw_net)?;
            // Caught up, a cycle rescans `confirmations` blocks: a smaller step never catches up.
            if net.max_blocks_per_scan < u64::from(net.confirmations) {
                return Err(err(
                    format!("{prefix}.max_blocks_per_scan"),
                    format!("must be at least the confirmations ({})", net.confirmations),
                ));
            }
            if net.enabled() && network.family() == ChainFamily::Solana {
                return Err(err(
                    prefix,
                    "SOLANA is not supported yet (no watch-only address scheme)",
                ));
            }
        }
    }
    Ok(out)
}

fn apply_network(
    prefix: &str,
    net: &mut NetworkConfig,
    raw: RawNetwork,
) -> Result<(), ConfigError> {
    if let Some(urls) = raw.rpc_urls {
        for (i, url) in urls.iter().enumerate() {
            HttpUrl::parse(url).map_err(|m| err(format!("{prefix}.rpc_urls[{i}]"), m))?;
        }
        net.rpc_urls = urls;
    }
    if let Some(headers) = raw.rpc_headers {
        for name in headers.keys() {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(err(
                    format!("{prefix}.rpc_headers.{name}"),
                    "is not a valid header name",
                ));
            }
        }
        net.rpc_headers = headers;
    }
    if let Some(url) = raw.public_rpc_url {
        HttpUrl::parse(&url).map_err(|m| err(format!("{prefix}.public_rpc_url"), m))?;
        net.public_rpc_url = Some(url);
    }
    if let Some(id) = raw.chain_id {
        if net.network.family() != ChainFamily::Evm {
            return Err(err(
                format!("{prefix}.chain_id"),
                "only EVM networks have a chain id",
            ));
        }
        net.chain_id = Some(id);
    }
    if let Some(c) = raw.confirmations {
        net.confirmations = c;
    }
    if let Some(ms) = raw.poll_interval_ms {
        if ms < 50 {
            return Err(err(
                format!("{prefix}.poll_interval_ms"),
                "must be at least 50",
            ));
        }
        net.poll_interval = Duration::from_millis(ms);
    }
    if let Some(n) = raw.max_block_range {
        if !(1..=100_000).contains(&n) {
            return Err(err(
                format!("{prefix}.max_block_range"),
                "must be between 1 and 100000",
            ));
        }
        net.max_block_range = n;
    }
    if let Some(n) = raw.max_blocks_per_scan {
        if !(1..=1_000_000).contains(&n) {
            return Err(err(
                format!("{prefix}.max_blocks_per_scan"),
                "must be between 1 and 1000000",
            ));
        }
        net.max_blocks_per_scan = n;
    }
    if let Some(secs) = raw.max_lag_seconds {
        if secs == 0 {
            return Err(err(
                format!("{prefix}.max_lag_seconds"),
                "must be at least 1",
            ));
        }
        net.max_lag = Duration::from_secs(secs);
    }
    if let Some(n) = raw.max_lag_blocks {
        net.max_lag_blocks = n;
    }
    if let Some(kib) = raw.max_response_kib {
        if !(1..=1024 * 1024).contains(&kib) {
            return Err(err(
                format!("{prefix}.max_response_kib"),
                "must be between 1 and 1048576",
            ));
        }
        net.max_response_bytes = usize::try_from(kib * 1024).unwrap_or(usize::MAX);
    }
    if let Some(simulated) = raw.simulated {
        if simulated && net.mode == Mode::Live {
            return Err(err(
                format!("{prefix}.simulated"),
                "only test-mode networks can be simulated",
            ));
        }
        net.simulated = simulated;
    }
    if let Some(tokens) = raw.tokens {
        for (symbol, raw_token) in tokens {
            let key = format!("{prefix}.tokens.{symbol}");
            let token =
                Token::parse(&symbol).ok_or_else(|| err(&key, "unknown token (USDT or USDC)"))?;
            if token == Token::Usdc && net.network == Network::Tron {
                return Err(err(key, "USDC is not supported on TRON"));
            }
            let contract =
                canonical_contract(net.network.family(), &raw_token.contract).map_err(|m| {
                    err(
                        format!("{key}.contract"),
                        format!("'{}' {m}", raw_token.contract),
                    )
                })?;
            let existing = net.tokens.iter().position(|t| t.token == token);
            let decimals = match (raw_token.decimals, existing) {
                (Some(d), _) => d,
                (None, Some(i)) => net.tokens[i].decimals,
                (None, None) => {
                    return Err(err(
                        format!("{key}.decimals"),
                        "is required for a token with no built-in default",
                    ))
                }
            };
            if decimals > 36 {
                return Err(err(format!("{key}.decimals"), "must be at most 36"));
            }
            let min_amount = match &raw_token.min_amount {
                None => existing.map_or(DEFAULT_MIN_AMOUNT, |i| net.tokens[i].min_amount),
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
                Some(i) => net.tokens[i] = config,
                None => net.tokens.push(config),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_enable_nothing() {
        let c = Config::defaults();
        assert!(c.enabled_networks().is_empty());
        assert_eq!(c.session_ttl, chrono::Duration::minutes(30));
        assert_eq!(c.network(Network::Bsc, Mode::Live).tokens[0].decimals, 18);
        assert_eq!(
            c.network(Network::Tron, Mode::Test).tokens[0].contract,
            "TXYZopYRdj2D9XRtbG411XZZ3kM5VkAeBf"
        );
        assert_eq!(c.base_url, "http://localhost:8080");
    }

    #[test]
    fn the_example_file_is_valid() {
        let text = include_str!("../checkout.example.toml");
        let c = Config::from_toml(text).unwrap();
        assert!(c.network(Network::Tron, Mode::Test).enabled());
    }

    #[test]
    fn overrides_apply() {
        let c = Config::from_toml(
            r#"
            [networks.bsc.test]
            rpc_urls = ["http://127.0.0.1:8545"]
            chain_id = 31337
            confirmations = 3
            tokens.USDT = { contract = "0x5fbdb2315678afecb367f032d93f642f64180aa3", decimals = 6 }
            "#,
        )
        .unwrap();
        let bsc = c.network(Network::Bsc, Mode::Test);
        assert!(bsc.enabled());
        assert_eq!(bsc.chain_id, Some(31337));
        assert_eq!(
            bsc.token(Token::Usdt).unwrap().contract,
            "0x5FbDB2315678afecb367f032d93F642f64180aa3"
        );
        assert_eq!(bsc.token(Token::Usdt).unwrap().decimals, 6);
        assert!(!c.network(Network::Bsc, Mode::Live).enabled());
    }

    fn error_of(text: &str) -> String {
        Config::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn bad_configs_name_the_key() {
        assert!(error_of("[networks.DOGE.test]\nsimulated = true").starts_with("networks.DOGE:"));
        assert!(
            error_of("[networks.TRON.prod]\nsimulated = true").starts_with("networks.TRON.prod:")
        );
        assert!(error_of("[wallets]\nevm_xpub = \"xpub123\"").starts_with("wallets.evm_xpub:"));
        assert!(
            error_of("[networks.BSC.test]\ntokens.USDT = { contract = \"0x12\" }")
                .starts_with("networks.BSC.test.tokens.USDT.contract:")
        );
        assert!(error_of("[networks.TRON.test]\ntokens.USDT = { contract = \"0xdAC17F958D2ee523a2206206994597C13D831ec7\" }").starts_with("networks.TRON.test.tokens.USDT.contract:"));
        assert!(error_of("[networks.BSC.test]\nrpc_urls = [\"not a url\"]")
            .starts_with("networks.BSC.test.rpc_urls[0]:"));
        assert!(error_of("[networks.TRON.live]\nsimulated = true")
            .starts_with("networks.TRON.live.simulated:"));
        assert!(error_of("[networks.SOLANA.test]\nsimulated = true")
            .starts_with("networks.SOLANA.test:"));
        assert!(error_of("[rates]\nsource = \"magic\"").starts_with("rates.source:"));
        assert!(error_of("[rates]\nstatic = { XYZ = \"1\" }").starts_with("rates.static.XYZ:"));
        assert!(error_of("[fees]\nrate = \"-1\"").starts_with("fees.rate:"));
        assert!(error_of("session_ttl_minutes = 0").starts_with("session_ttl_minutes:"));
        let unknown = error_of("sesion_ttl_minutes = 5");
        assert!(
            unknown.starts_with("config file: line 1:") && unknown.contains("sesion_ttl_minutes"),
            "{unknown}"
        );
        assert!(!error_of("[wallets\n").contains('\n'));
        for bad in ["0", "-1", "abc", "0.0000001"] {
            let text = format!(
                "[networks.TRON.live]\ntokens.USDT = {{ contract = \"TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t\", min_amount = \"{bad}\" }}"
            );
            assert!(
                error_of(&text).starts_with("networks.TRON.live.tokens.USDT.min_amount:"),
                "{bad}"
            );
        }
        assert!(error_of("[networks.BSC.live]\nmax_response_kib = 0")
            .starts_with("networks.BSC.live.max_response_kib:"));
    }

    #[test]
    fn the_minimum_creditable_amount_defaults_to_a_cent_and_goes_down_to_one_base_unit() {
        let config = Config::from_toml(
            "[networks.TRON.live]\ntokens.USDT = { contract = \"TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t\", min_amount = \"0.000001\" }\n[networks.BSC.live]\nmax_response_kib = 64",
        )
        .unwrap();
        let min = |n: Network| {
            config.network(n, Mode::Live).tokens[0]
                .min_amount
                .to_string()
        };
        assert_eq!(min(Network::Tron), "0.000001");
        assert_eq!(min(Network::Ethereum), "0.01");
        assert_eq!(
            config.network(Network::Bsc, Mode::Live).max_response_bytes,
            64 * 1024
        );
    }

    #[test]
    fn denylists_take_both_address_forms_and_name_a_bad_line() {
        let list = parse_denylist(
            "# sanctioned\n\nTUEZSdKsoDHQMeZwihtdoBiN46zxhGWYdH\n0x9858EfFD232B4033E47d90003D41EC34EcaEda94 # note\n",
        )
        .unwrap();
        assert_eq!(list.len(), 2);
        let bad = parse_denylist("0x9858EfFD232B4033E47d90003D41EC34EcaEda94\nTnotanaddress\n")
            .unwrap_err();
        assert!(bad.starts_with("line 2:"), "{bad}");
        assert!(error_of("[watcher]\ndenylist_file = \"/nonexistent/x\"")
            .starts_with("watcher.denylist_file:"));
        assert!(error_of("[watcher]\nlease_seconds = 1").starts_with("watcher.lease_seconds:"));
        assert!(error_of("[networks.BSC.test]\nmax_block_range = 0")
            .starts_with("networks.BSC.test.max_block_range:"));
        assert!(
            error_of("[networks.POLYGON.live]\nmax_blocks_per_scan = 100")
                .starts_with("networks.POLYGON.live.max_blocks_per_scan:"),
            "Polygon needs 128 confirmations"
        );
    }

    #[test]
    fn rate_limits_default_to_the_contract_and_can_be_set() {
        let d = Config::defaults().rate_limits;
        assert_eq!((d.live.per_second, d.live.burst), (100, 200));
        assert_eq!((d.test.per_second, d.test.burst), (25, 50));
        assert_eq!((d.ip.per_second, d.ip.burst, d.ip_streams), (20, 40, 20));
        assert!(d.client_ip_header.is_none() && d.trusted_proxies.is_empty());
        let c = Config::from_toml(
            "[rate_limits]\nlive_per_second = 7\ntest_burst = 3\nip_streams = 2\n\
             client_ip_header = \"X-Forwarded-For\"\n\
             trusted_proxies = [\"10.0.0.0/8\", \"127.0.0.1\", \"fd00::/8\", \"::ffff:192.0.2.1\"]",
        )
        .unwrap()
        .rate_limits;
        assert_eq!((c.live.per_second, c.live.burst), (7, 200));
        assert_eq!((c.test.per_second, c.test.burst), (25, 3));
        assert_eq!(c.ip_streams, 2);
        assert_eq!(c.client_ip_header.unwrap().as_str(), "x-forwarded-for");
        let nets: Vec<String> = c.trusted_proxies.iter().map(|n| n.to_string()).collect();
        assert_eq!(
            nets,
            ["10.0.0.0/8", "127.0.0.1/32", "fd00::/8", "192.0.2.1/32"]
        );
    }

    #[test]
    fn bad_rate_limits_name_the_key() {
        for (text, key) in [
            ("live_per_second = 0", "rate_limits.live_per_second:"),
            ("test_burst = 0", "rate_limits.test_burst:"),
            ("ip_burst = 2000000", "rate_limits.ip_burst:"),
            ("ip_streams = 0", "rate_limits.ip_streams:"),
            ("ip_per_second = -1", "config file: line 2:"),
            (
                "client_ip_header = \"X Forwarded\"\ntrusted_proxies = [\"10.0.0.1\"]",
                "rate_limits.client_ip_header:",
            ),
            (
                "client_ip_header = \"X-Forwarded-For\"",
                "rate_limits.client_ip_header:",
            ),
            (
                "trusted_proxies = [\"10.0.0.1\"]",
                "rate_limits.trusted_proxies:",
            ),
            (
                "client_ip_header = \"X-Forwarded-For\"\ntrusted_proxies = [\"10.0.0.1\", \"proxy.local\"]",
                "rate_limits.trusted_proxies[1]:",
            ),
            (
                "client_ip_header = \"X-Forwarded-For\"\ntrusted_proxies = [\"10.0.0.1/8\"]",
                "rate_limits.trusted_proxies[0]:",
            ),
            ("ip_limit = 5", "config file: line 2:"),
        ] {
            let e = error_of(&format!("[rate_limits]\n{text}"));
            assert!(e.starts_with(key) && !e.contains('\n'), "{text}: {e}");
        }
        assert!(error_of("[rate_limits]\nclient_ip_header = \"X-Forwarded-For\"\ntrusted_proxies = [\"10.0.0.1/8\"]").contains("10.0.0.0/8"));
    }

    #[test]
    fn environment_wins() {
        struct E;
        impl Env for E {
            fn var(&self, name: &str) -> Option<String> {
                match name {
                    "CHECKOUT_BASE_URL" => Some("https://pay.example.com/".into()),
                    "BIND_ADDR" => Some("127.0.0.1:9999".into()),
                    _ => None,
                }
            }
        }
        let c = Config::from_parts(&E, Some("base_url = \"https://other.example.com\"")).unwrap();
        assert_eq!(c.base_url, "https://pay.example.com");
        assert_eq!(c.bind_addr.port(), 9999);
        assert!(c.database_url_is_default);
    }
}
