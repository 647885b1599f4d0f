//! Exact money: `rust_decimal` everywhere, strings on the wire, never floats.

use rust_decimal::{Decimal, RoundingStrategy};
use std::str::FromStr;

crate::domain::names::string_enum! {
    /// Settlement tokens.
    pub enum Token ("a settlement token") {
        Usdt = "USDT", Usdc = "USDC",
    }
}

/// Fiat currencies a price may be given in.
pub const FIAT_CURRENCIES: [&str; 21] = [
    "USD", "EUR", "GBP", "CNY", "JPY", "KRW", "SGD", "HKD", "TWD", "RUB", "AUD", "NZD", "CAD",
    "CHF", "SEK", "NOK", "DKK", "AED", "ZAR", "MXN", "INR",
];

/// What a price is expressed in: a token (rate 1) or a fiat currency (rate from a source).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PricingCurrency {
    Token(Token),
    Fiat(&'static str),
}

impl PricingCurrency {
    pub fn parse(s: &str) -> Option<Self> {
        if let Some(token) = Token::parse(s) {
            return Some(PricingCurrency::Token(token));
        }
        FIAT_CURRENCIES
            .iter()
            .find(|code| **code == s)
            .map(|code| PricingCurrency::Fiat(code))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PricingCurrency::Token(t) => t.as_str(),
            PricingCurrency::Fiat(code) => code,
        }
    }

    /// Decimal places a price in this currency may carry.
    pub fn max_decimals(self) -> u32 {
        match self {
            PricingCurrency::Fiat("JPY" | "KRW") => 0,
            _ => 2,
        }
    }
}

impl FromStr for PricingCurrency {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s).ok_or_else(|| {
            format!("'{s}' is not a supported currency (USDT, USDC or a fiat code such as USD)")
        })
    }
}

impl std::fmt::Display for PricingCurrency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for PricingCurrency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Stored as its code, like the other names.
impl sqlx::Type<sqlx::Postgres> for PricingCurrency {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <&str as sqlx::Type<sqlx::Postgres>>::type_info()
    }

    fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
        <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
    }
}

impl<'q> sqlx::Encode<'q, sqlx::Postgres> for PricingCurrency {
    fn encode_by_ref(
        &self,
        buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        <&str as sqlx::Encode<'q, sqlx::Postgres>>::encode(self.as_str(), buf)
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Postgres> for PricingCurrency {
    fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        let text = <&str as sqlx::Decode<'r, sqlx::Postgres>>::decode(value)?;
        Self::parse(text).ok_or_else(|| format!("unknown pricing currency '{text}'").into())
    }
}

/// The smallest and largest token amount a session may ask for.
pub const MIN_TOKEN_AMOUNT: Decimal = Decimal::ONE;
pub const MAX_TOKEN_AMOUNT: Decimal = Decimal::from_parts(1_000_000_000, 0, 0, false, 2); // 10,000,000.00

/// Token amounts carry at most 6 decimals (the precision of session amounts).
pub const TOKEN_SCALE: u32 = 6;
/// Exchange rates carry 8 decimals.
pub const RATE_SCALE: u32 = 8;

/// Parses a plain positive decimal string: digits, optionally `.` and digits. No sign, no
/// exponent, no spaces, no separators. Returns the value with its scale as written ("10.50").
pub fn parse_plain_decimal(s: &str) -> Result<Decimal, &'static str> {
    let (int_part, frac_part) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    let digits_only = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !digits_only(int_part) || frac_part.is_some_and(|f| !digits_only(f)) {
        return Err("must be a plain decimal string such as \"10.50\"");
    }
    if int_part.len() > 15 || frac_part.is_some_and(|f| f.len() > 12) {
        return Err("has too many digits");
    }
    Decimal::from_str(s).map_err(|_| "must be a plain decimal string such as \"10.50\"")
}

/// Amount string as the API shows it: normalized, no trailing zeros (`"10.5"`, `"0"`).
pub fn format_amount(d: Decimal) -> String {
    d.normalize().to_string()
}

/// Exchange rate as the API shows it: exactly 8 decimals.
pub fn format_rate(d: Decimal) -> String {
    let mut r = d.round_dp_with_strategy(RATE_SCALE, RoundingStrategy::MidpointNearestEven);
    r.rescale(RATE_SCALE);
    r.to_string()
}

/// `pricing_amount / rate`, rounded half-even to 6 decimals.
pub fn convert_to_token(pricing_amount: Decimal, rate: Decimal) -> Option<Decimal> {
    pricing_amount
        .checked_div(rate)
        .map(|a| a.round_dp_with_strategy(TOKEN_SCALE, RoundingStrategy::MidpointNearestEven))
}

/// A fee schedule: a proportional rate with a floor, never more than the base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeeSchedule {
    pub rate: Decimal,
    pub floor: Decimal,
}

impl FeeSchedule {
    /// `fee = min(max(floor, truncate6(base × rate)), base)`. A zero rate means no fee at all.
    pub fn fee(&self, base: Decimal) -> Decimal {
        if self.rate.is_zero() || base <= Decimal::ZERO {
            return Decimal::ZERO;
        }
        let proportional = (base * self.rate).trunc_with_scale(TOKEN_SCALE);
        proportional.max(self.floor).min(base)
    }

    /// `(fee, net)` for a base amount.
    pub fn split(&self, base: Decimal) -> (Decimal, Decimal) {
        let fee = self.fee(base);
        (fee, base - fee)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn plain_decimals() {
        assert_eq!(parse_plain_decimal("10.50").unwrap().to_string(), "10.50");
        assert_eq!(parse_plain_decimal("1").unwrap(), d("1"));
        for bad in [
            "", " 10", "10 ", "10,5", "1e3", "-1", "+1", ".5", "5.", "1.2.3", "0x10", "１０", "NaN",
        ] {
            assert!(parse_plain_decimal(bad).is_err(), "{bad:?}");
        }
        assert!(parse_plain_decimal("9999999999999999999999999999999").is_err());
    }

    #[test]
    fn formatting() {
        assert_eq!(format_amount(d("10.500000")), "10.5");
        assert_eq!(format_amount(d("0")), "0");
        assert_eq!(format_amount(d("0.000")), "0");
        assert_eq!(format_amount(d("100")), "100");
        assert_eq!(format_rate(d("1")), "1.00000000");
        assert_eq!(format_rate(d("7.1")), "7.10000000");
        assert_eq!(format_rate(d("0.123456785")), "0.12345678");
    }

    #[test]
    fn conversion_rounds_half_even_to_six_places() {
        assert_eq!(convert_to_token(d("10.50"), d("1")).unwrap(), d("10.5"));
        assert_eq!(
            convert_to_token(d("100"), d("7.1")).unwrap(),
            d("14.084507")
        );
        // 0.0000025 exactly → half-even keeps the even digit 2.
        assert_eq!(
            convert_to_token(d("0.000005"), d("2")).unwrap(),
            d("0.000002")
        );
        assert_eq!(
            convert_to_token(d("0.000007"), d("2")).unwrap(),
            d("0.000004")
        );
        assert!(convert_to_token(d("1"), d("0")).is_none());
    }

    #[test]
    fn fees_follow_the_formula() {
        let tron = FeeSchedule {
            rate: d("0.005"),
            floor: d("1"),
        };
        assert_eq!(tron.split(d("10.5")), (d("1"), d("9.5")));
        assert_eq!(tron.fee(d("1000")), d("5"));
        assert_eq!(tron.fee(d("0.5")), d("0.5"), "never more than the base");
        assert_eq!(
            tron.fee(d("333.333333")),
            d("1.666666"),
            "truncated, not rounded"
        );
        let bsc = FeeSchedule {
            rate: d("0.005"),
            floor: d("0.1"),
        };
        assert_eq!(bsc.fee(d("10.5")), d("0.1"));
        let free = FeeSchedule {
            rate: d("0"),
            floor: d("1"),
        };
        assert_eq!(free.split(d("10")), (d("0"), d("10")));
        assert_eq!(tron.fee(d("0")), d("0"));
    }

    #[test]
    fn pricing_currencies() {
        assert_eq!(
            PricingCurrency::parse("USDT"),
            Some(PricingCurrency::Token(Token::Usdt))
        );
        assert_eq!(PricingCurrency::parse("JPY").unwrap().max_decimals(), 0);
        assert_eq!(PricingCurrency::parse("EUR").unwrap().max_decimals(), 2);
        assert!(PricingCurrency::parse("usd").is_none());
        assert!(PricingCurrency::parse("XYZ").is_none());
        assert_eq!(MAX_TOKEN_AMOUNT, d("10000000.00"));
    }
}
