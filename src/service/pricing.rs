//! Exchange rates: units of a fiat currency per 1 token.

use crate::config::{RateSourceConfig, RatesConfig};
use crate::domain::money::{
    convert_to_token, format_amount, PricingCurrency, Token, FIAT_CURRENCIES, MAX_TOKEN_AMOUNT,
    MIN_TOKEN_AMOUNT, RATE_SCALE,
};
use crate::service::{Error, Field};
use rust_decimal::{Decimal, RoundingStrategy};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// Why no rate could be given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateError {
    /// The operator has not configured this currency: permanent.
    NotConfigured,
    /// The source failed and no fresh enough rate is cached: transient.
    Unavailable(String),
}

impl From<RateError> for Error {
    fn from(e: RateError) -> Self {
        match e {
            RateError::NotConfigured => Error::invalid(
                Field::PricingCurrency,
                "pricing in this currency is not available on this server",
            ),
            RateError::Unavailable(why) => {
                Error::Unavailable(format!("no current exchange rate: {why}"))
            }
        }
    }
}

/// What a price comes to in the settlement token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quote {
    pub amount: Decimal,
    /// Units of the pricing currency per 1 token (8 decimals); 1 when priced in the token.
    pub exchange_rate: Decimal,
}

/// Prices `pricing_amount` of `pricing_currency` in `token`, within the amounts a session
/// may ask for.
pub async fn price(
    rates: &RateService,
    pricing_amount: Decimal,
    pricing_currency: PricingCurrency,
    token: Token,
) -> Result<Quote, Error> {
    if pricing_amount <= Decimal::ZERO {
        return Err(Error::invalid(
            Field::PricingAmount,
            "must be greater than 0",
        ));
    }
    let max_decimals = pricing_currency.max_decimals();
    if pricing_amount.scale() > max_decimals {
        let reason = match max_decimals {
            0 => format!("{} amounts take no decimals", pricing_currency.as_str()),
            n => format!("may have at most {n} decimals"),
        };
        return Err(Error::invalid(Field::PricingAmount, reason));
    }
    let in_range = |amount: Decimal| (MIN_TOKEN_AMOUNT..=MAX_TOKEN_AMOUNT).contains(&amount);
    match pricing_currency {
        PricingCurrency::Token(priced_in) => {
            if priced_in != token {
                return Err(Error::invalid(
                    Field::PricingCurrency,
                    format!(
                        "pricing in a stablecoin must use the settlement currency ({}), not {}",
                        token.as_str(),
                        priced_in.as_str()
                    ),
                ));
            }
            if !in_range(pricing_amount) {
                return Err(Error::invalid(
                    Field::PricingAmount,
                    "must be between 1.00 and 10000000.00",
                ));
            }
            Ok(Quote {
                amount: pricing_amount,
                exchange_rate: Decimal::ONE,
            })
        }
        PricingCurrency::Fiat(code) => {
            let rate = rates
                .rate(token, code)
                .await?
                .round_dp_with_strategy(RATE_SCALE, RoundingStrategy::MidpointNearestEven);
            if rate <= Decimal::ZERO {
                return Err(Error::Unavailable(format!("the {code} rate is not usable")));
            }
            let amount = convert_to_token(pricing_amount, rate)
                .ok_or_else(|| Error::invalid(Field::PricingAmount, "is too large"))?;
            if !in_range(amount) {
                return Err(Error::invalid(
                    Field::PricingAmount,
                    format!(
                        "converts to {} {}; the amount must be between 1 and 10000000 {}",
                        format_amount(amount),
                        token.as_str(),
                        token.as_str()
                    ),
                ));
            }
            Ok(Quote {
                amount,
                exchange_rate: rate,
            })
        }
    }
}

struct Snapshot {
    fetched_at: Instant,
    rates: HashMap<(Token, String), Decimal>,
}

pub struct RateService {
    config: RatesConfig,
    /// `None` if the client could not be built: fetches then fail (503), never panic.
    http: Option<reqwest::Client>,
    cache: RwLock<Option<Snapshot>>,
    refresh: tokio::sync::Mutex<()>,
}

impl RateService {
    pub fn new(config: RatesConfig) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .user_agent(concat!("checkout-server/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| tracing::error!(error = %e, "cannot build the rate source's HTTP client"))
            .ok();
        Self {
            config,
            http,
            cache: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    /// Units of `fiat` per 1 `token`. USD is 1 unless the static table says otherwise.
    pub async fn rate(&self, token: Token, fiat: &str) -> Result<Decimal, RateError> {
        match &self.config.source {
            RateSourceConfig::Static(table) => match table.get(fiat) {
                Some(rate) => Ok(*rate),
                None if fiat == "USD" => Ok(Decimal::ONE),
                None => Err(RateError::NotConfigured),
            },
            RateSourceConfig::CoinGecko { .. } if fiat == "USD" => Ok(Decimal::ONE),
            RateSourceConfig::CoinGecko { .. } => self.cached_rate(token, fiat).await,
        }
    }

    fn lookup(
        &self,
        token: Token,
        fiat: &str,
        max_age: Duration,
    ) -> Option<Result<Decimal, RateError>> {
        let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
        let snapshot = cache.as_ref()?;
        if snapshot.fetched_at.elapsed() > max_age {
            return None;
        }
        Some(
            snapshot
                .rates
                .get(&(token, fiat.to_owned()))
                .copied()
                .ok_or_else(|| {
                    RateError::Unavailable(format!("the rate source has no {fiat} price"))
                }),
        )
    }

    async fn cached_rate(&self, token: Token, fiat: &str) -> Result<Decimal, RateError> {
        if let Some(found) = self.lookup(token, fiat, self.config.refresh_interval) {
            return found;
        }
        let mut failure = None;
        {
            // One fetch at a time; whoever waited re-checks what the fetcher stored.
            let _guard = self.refresh.lock().await;
            if self
                .lookup(token, fiat, self.config.refresh_interval)
                .is_none()
            {
                match self.fetch().await {
                    Ok(rates) => {
                        *self.cache.write().unwrap_or_else(|p| p.into_inner()) = Some(Snapshot {
                            fetched_at: Instant::now(),
                            rates,
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "exchange rate fetch failed");
                        failure = Some(e);
                    }
                }
            }
        }
        match self.lookup(token, fiat, self.config.max_age) {
            Some(found) => found,
            None => {
                Err(RateError::Unavailable(failure.unwrap_or_else(|| {
                    "the last rate is older than allowed".into()
                })))
            }
        }
    }

    async fn fetch(&self) -> Result<HashMap<(Token, String), Decimal>, String> {
        let RateSourceConfig::CoinGecko {
            base_url,
            api_key,
            api_key_header,
        } = &self.config.source
        else {
            return Err("not an HTTP rate source".into());
        };
        let vs: Vec<String> = FIAT_CURRENCIES
            .iter()
            .map(|c| c.to_ascii_lowercase())
            .collect();
        let url = format!("{base_url}/simple/price");
        let http = self
            .http
            .as_ref()
            .ok_or("no HTTP client for the rate source")?;
        let mut request = http
            .get(&url)
            .query(&[("ids", "tether,usd-coin"), ("vs_currencies", &vs.join(","))]);
        if let Some(key) = api_key {
            request = request.header(api_key_header.as_str(), key.expose());
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        if !response.status().is_success() {
            return Err(format!(
                "rate source answered HTTP {}",
                response.status().as_u16()
            ));
        }
        let body: serde_json::Value = response
            .json()
            .await
            .map_err(|e| format!("rate source sent invalid JSON: {e}"))?;
        parse_simple_price(&body)
    }
}

/// Parses CoinGecko's `/simple/price` answer: `{"tether": {"eur": 0.92, …}, "usd-coin": {…}}`.
pub fn parse_simple_price(
    body: &serde_json::Value,
) -> Result<HashMap<(Token, String), Decimal>, String> {
    let mut out = HashMap::new();
    for (id, token) in [("tether", Token::Usdt), ("usd-coin", Token::Usdc)] {
        let Some(prices) = body.get(id).and_then(|v| v.as_object()) else {
            continue;
        };
        for (code, value) in prices {
            let code = code.to_ascii_uppercase();
            if !FIAT_CURRENCIES.contains(&code.as_str()) {
                continue;
            }
            let text = match value {
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::String(s) => s.clone(),
                _ => continue,
            };
            let rate = Decimal::from_str(&text)
                .or_else(|_| Decimal::from_scientific(&text))
                .map_err(|_| format!("rate source sent an unreadable {code} price"))?
                .round_dp_with_strategy(RATE_SCALE, RoundingStrategy::MidpointNearestEven);
            if rate > Decimal::ZERO {
                out.insert((token, code), rate);
            }
        }
    }
    if out.is_empty() {
        return Err("rate source sent no usable prices".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_simple_price() {
        let body = serde_json::json!({
            "tether": {"eur": 0.921, "jpy": 151.2, "cny": "7.1", "xxx": 1, "krw": 1.2e3},
            "usd-coin": {"eur": 0.92}
        });
        let rates = parse_simple_price(&body).unwrap();
        assert_eq!(
            rates[&(Token::Usdt, "EUR".into())],
            Decimal::from_str("0.921").unwrap()
        );
        assert_eq!(rates[&(Token::Usdt, "KRW".into())], Decimal::from(1200));
        assert_eq!(
            rates[&(Token::Usdc, "EUR".into())],
            Decimal::from_str("0.92").unwrap()
        );
        assert!(!rates.contains_key(&(Token::Usdt, "XXX".into())));
        assert!(parse_simple_price(&serde_json::json!({})).is_err());
    }

    #[tokio::test]
    async fn static_rates_and_usd_peg() {
        let config = RatesConfig {
            source: RateSourceConfig::Static(HashMap::from([(
                "EUR".into(),
                Decimal::from_str("0.92").unwrap(),
            )])),
            ..RatesConfig::default()
        };
        let rates = RateService::new(config);
        assert_eq!(rates.rate(Token::Usdt, "USD").await.unwrap(), Decimal::ONE);
        assert_eq!(
            rates.rate(Token::Usdt, "EUR").await.unwrap(),
            Decimal::from_str("0.92").unwrap()
        );
        assert_eq!(
            rates.rate(Token::Usdt, "GBP").await,
            Err(RateError::NotConfigured)
        );
    }
}
