//! Money: `[fees]` and `[rates]` (fiat exchange rates).

use super::{bounded, err, ConfigError, Secret};
use crate::domain::money::{parse_plain_decimal, FIAT_CURRENCIES};
use crate::domain::network::Network;
use crate::domain::urls::HttpUrl;
use rust_decimal::Decimal;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

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

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawFees {
    rate: Option<String>,
    floor: BTreeMap<String, String>,
}

impl TryFrom<RawFees> for FeeConfig {
    type Error = ConfigError;

    fn try_from(raw: RawFees) -> Result<Self, ConfigError> {
        let mut fees = Self::default();
        if let Some(rate) = raw.rate {
            fees.rate = parse_decimal("fees.rate", &rate)?;
            if fees.rate >= Decimal::ONE {
                return Err(err("fees.rate", "must be below 1 (0.005 means 0.5 %)"));
            }
        }
        for (name, value) in raw.floor {
            let key = format!("fees.floor.{name}");
            let floor = parse_decimal(&key, &value)?;
            if name == "default" {
                fees.default_floor = floor;
            } else {
                let network = name
                    .parse::<Network>()
                    .map_err(|e| err(&key, e.to_string()))?;
                fees.floors.insert(network, floor);
            }
        }
        Ok(fees)
    }
}

#[derive(Debug, Clone)]
pub enum RateSourceConfig {
    /// Units of fiat per 1 token, fixed by the operator.
    Static(HashMap<String, Decimal>),
    /// A CoinGecko-compatible `/simple/price` endpoint.
    CoinGecko {
        base_url: String,
        api_key: Option<Secret>,
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

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawRates {
    source: Option<String>,
    #[serde(rename = "static")]
    static_rates: BTreeMap<String, String>,
    base_url: Option<String>,
    api_key: Option<Secret>,
    api_key_header: Option<String>,
    refresh_seconds: Option<u64>,
    max_age_seconds: Option<u64>,
}

impl TryFrom<RawRates> for RatesConfig {
    type Error = ConfigError;

    fn try_from(raw: RawRates) -> Result<Self, ConfigError> {
        let mut rates = Self::default();
        if let Some(secs) = raw.refresh_seconds {
            rates.refresh_interval = Duration::from_secs(secs);
        }
        if let Some(secs) = raw.max_age_seconds {
            rates.max_age = Duration::from_secs(bounded("rates.max_age_seconds", secs, 1..=3600)?);
        }
        let mut static_rates = HashMap::new();
        for (code, value) in raw.static_rates {
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
                let base_url = raw.base_url.as_deref();
                let base_url = base_url.unwrap_or("https://api.coingecko.com/api/v3");
                HttpUrl::parse(base_url).map_err(|m| err("rates.base_url", m))?;
                let api_key_header = raw.api_key_header.as_deref();
                RateSourceConfig::CoinGecko {
                    base_url: base_url.trim_end_matches('/').to_owned(),
                    api_key: raw.api_key,
                    api_key_header: api_key_header.unwrap_or("x-cg-demo-api-key").to_owned(),
                }
            }
            other => {
                let message = format!("'{other}' is not 'static' or 'coingecko'");
                return Err(err("rates.source", message));
            }
        };
        Ok(rates)
    }
}

fn parse_decimal(key: &str, value: &str) -> Result<Decimal, ConfigError> {
    parse_plain_decimal(value).map_err(|m| err(key, format!("'{value}' {m}")))
}
