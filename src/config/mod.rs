//! Configuration: environment variables plus an optional TOML file (`CHECKOUT_CONFIG`).
//! Every problem stops start-up with one line that names the offending key.

mod http;
mod networks;
mod rates;
mod sweep;
#[cfg(test)]
mod tests;
mod watcher;
mod webhooks;

pub use http::{HostedConfig, HttpConfig, IdempotencyConfig, RateLimit, RateLimitConfig};
pub use networks::{NetworkConfig, RpcUrl, Scan, TokenConfig, DEFAULT_MIN_AMOUNT};
pub use rates::{FeeConfig, RateSourceConfig, RatesConfig};
pub use sweep::{EnergyMode, SweepConfig, TronSweepConfig};
pub use watcher::WatcherConfig;
pub use webhooks::WebhooksConfig;

use crate::domain::address::AccountXpub;
use crate::domain::api_key::Mode;
use crate::domain::network::{ChainFamily, Network};
use crate::domain::urls::HttpUrl;
use serde::{Deserialize, Deserializer};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::ops::{Bound, RangeBounds};
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

/// `value` if `range` (inclusive bounds) holds it, else an error naming `key` and the bounds.
fn bounded<T: PartialOrd + fmt::Display>(
    key: &str,
    value: T,
    range: impl RangeBounds<T>,
) -> Result<T, ConfigError> {
    if range.contains(&value) {
        return Ok(value);
    }
    let message = match (range.start_bound(), range.end_bound()) {
        (Bound::Included(low), Bound::Included(high)) => {
            format!("must be between {low} and {high}")
        }
        (Bound::Included(low), _) => format!("must be at least {low}"),
        (_, Bound::Included(high)) => format!("must be at most {high}"),
        _ => "is out of range".into(),
    };
    Err(err(key, message))
}

// Durations are written as integers; the key's suffix (`_ms`, `_seconds`, `_hours`) names the unit.

fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_millis)
}

fn secs<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_secs)
}

fn hours<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(|h| Duration::from_secs(h.saturating_mul(3600)))
}

fn secs_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    let secs = Vec::<u64>::deserialize(d)?;
    Ok(secs.into_iter().map(Duration::from_secs).collect())
}

/// A value that `Debug` never shows: API keys, RPC auth headers.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    pub database_url_is_default: bool,
    pub bind_addr: SocketAddr,
    /// Where `GET /metrics` is served (`METRICS_ADDR`, `off` for nowhere); keep it private.
    pub metrics_addr: Option<SocketAddr>,
    /// No metrics address was configured: if the default one is taken, serving goes on without.
    pub metrics_addr_is_default: bool,
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
    /// Sweeps into treasuries, one per `[sweep.NETWORK.mode]` table.
    pub sweeps: Vec<SweepConfig>,
    /// TRON sweeps, one per `[sweep.TRON.mode]` table.
    pub tron_sweeps: Vec<TronSweepConfig>,
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

/// The TOML file, as written; sections that map one to one are read straight into their config.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawConfig {
    database_url: Option<String>,
    bind_addr: Option<String>,
    metrics_addr: Option<String>,
    base_url: Option<String>,
    session_ttl_minutes: Option<i64>,
    wallets: RawWallets,
    fees: rates::RawFees,
    rates: rates::RawRates,
    webhooks: WebhooksConfig,
    idempotency: IdempotencyConfig,
    watcher: WatcherConfig,
    hosted: HostedConfig,
    http: HttpConfig,
    rate_limits: http::RawRateLimits,
    networks: BTreeMap<String, BTreeMap<String, networks::RawNetwork>>,
    sweep: BTreeMap<String, BTreeMap<String, toml::Value>>,
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawWallets {
    tron_xpub: Option<String>,
    evm_xpub: Option<String>,
}

impl Config {
    /// Built-in defaults with no file and no environment: nothing enabled.
    pub fn defaults() -> Self {
        Self::from_parts(|_| None, None).expect("built-in defaults are valid")
    }

    /// Loads from the process environment and the file named by `CHECKOUT_CONFIG`.
    pub fn load() -> Result<Self, ConfigError> {
        let text = match process_env("CHECKOUT_CONFIG") {
            Some(path) => Some(
                std::fs::read_to_string(&path)
                    .map_err(|e| err("CHECKOUT_CONFIG", format!("cannot read {path}: {e}")))?,
            ),
            None => None,
        };
        Self::from_parts(process_env, text.as_deref())
    }

    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::from_parts(|_| None, Some(text))
    }

    /// `env` looks up environment variables, which win over the file.
    pub fn from_parts(
        env: impl Fn(&str) -> Option<String>,
        toml_text: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let raw: RawConfig = match toml_text {
            Some(text) => toml::from_str(text).map_err(|e| toml_error(text, &e))?,
            None => RawConfig::default(),
        };

        let database_url = env("DATABASE_URL").or(raw.database_url);
        let database_url_is_default = database_url.is_none();
        let database_url = database_url.unwrap_or_else(|| DEFAULT_DATABASE_URL.into());
        if !(database_url.starts_with("postgres://") || database_url.starts_with("postgresql://")) {
            return Err(err("DATABASE_URL", "must be a postgres:// URL"));
        }

        let bind_text = env("BIND_ADDR").or(raw.bind_addr);
        let bind_text = bind_text.unwrap_or_else(|| DEFAULT_BIND_ADDR.into());
        let bind_addr = bind_text.parse().map_err(|_| {
            let message = format!("'{bind_text}' is not an address such as 0.0.0.0:8080");
            err("BIND_ADDR", message)
        })?;

        let metrics_text = env("METRICS_ADDR").or(raw.metrics_addr);
        let metrics_addr_is_default = metrics_text.is_none();
        let metrics_text =
            metrics_text.unwrap_or_else(|| crate::metrics::DEFAULT_METRICS_ADDR.into());
        let metrics_addr = match metrics_text.as_str() {
            "off" => None,
            text => Some(text.parse().map_err(|_| {
                let message = format!("'{text}' is not an address such as 127.0.0.1:9090, or off");
                err("METRICS_ADDR", message)
            })?),
        };

        let base_url = env("CHECKOUT_BASE_URL").or(raw.base_url);
        let base_url_is_default = base_url.is_none();
        let base_url = base_url.unwrap_or_else(|| DEFAULT_BASE_URL.into());
        HttpUrl::parse(&base_url).map_err(|m| err("CHECKOUT_BASE_URL", m))?;

        let ttl = raw.session_ttl_minutes.unwrap_or(30);
        let ttl = bounded("session_ttl_minutes", ttl, 1..=7 * 24 * 60)
            .map_err(|e| err(e.key, e.message + " (7 days)"))?;

        let networks = networks::parse(raw.networks)?;
        let (sweeps, tron_sweeps) = sweep::parse(raw.sweep, &networks)?;
        Ok(Self {
            sweeps,
            tron_sweeps,
            database_url,
            database_url_is_default,
            bind_addr,
            metrics_addr,
            metrics_addr_is_default,
            base_url: base_url.trim_end_matches('/').to_owned(),
            base_url_is_default,
            session_ttl: chrono::Duration::minutes(ttl),
            wallets: Wallets {
                tron: parse_xpub("wallets.tron_xpub", raw.wallets.tron_xpub)?,
                evm: parse_xpub("wallets.evm_xpub", raw.wallets.evm_xpub)?,
            },
            fees: raw.fees.try_into()?,
            rates: raw.rates.try_into()?,
            webhooks: raw.webhooks.checked()?,
            networks,
            watcher: raw.watcher.checked()?,
            rate_limits: raw.rate_limits.try_into()?,
            hosted: raw.hosted.checked()?,
            http: raw.http.checked()?,
            idempotency: raw.idempotency.checked()?,
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

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
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
