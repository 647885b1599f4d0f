//! `[sweep.<NETWORK>.<mode>]`: collecting deposit balances into the treasury (EVM networks).

use super::{bounded, err, ConfigError, NetworkConfig, Secret};
use crate::domain::api_key::Mode;
use crate::domain::network::{ChainFamily, Network};
use crate::sweep::delegate::delegate_address;
use alloy_primitives::Address;
use alloy_signer_local::PrivateKeySigner;
use rust_decimal::Decimal;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct SweepConfig {
    pub network: Network,
    pub mode: Mode,
    /// Whose deposit addresses are swept.
    pub merchant: Uuid,
    pub treasury: Address,
    /// The `SweepDelegate` for the treasury (by default its CREATE2 address).
    pub delegate: Address,
    /// The gas tank's private key (hex): it pays for sweeps and holds nothing else.
    pub gas_tank_key: Secret,
    /// An address is swept once one token's balance reaches this (in token units).
    pub min_amount: Decimal,
    /// Addresses per sweep transaction.
    pub batch_size: usize,
    /// No sweep is sent while the network's gas price is above this (in gwei).
    pub max_gas_price_gwei: Decimal,
    /// Readiness warns when the gas tank holds less (in the native coin).
    pub low_gas_balance: Decimal,
    pub interval: Duration,
}

impl SweepConfig {
    /// The gas tank's signer (its key was checked at load; a hand-built config may not be).
    pub fn gas_tank(&self) -> Result<PrivateKeySigner, String> {
        PrivateKeySigner::from_str(self.gas_tank_key.expose())
            .map_err(|_| "the gas tank key is not a private key".to_owned())
    }

    /// The gas price cap in wei.
    pub fn max_gas_price_wei(&self) -> u128 {
        self.max_gas_price_gwei
            .checked_mul(Decimal::from(1_000_000_000u64))
            .and_then(|wei| u128::try_from(wei.trunc()).ok())
            .unwrap_or(u128::MAX)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSweep {
    merchant: Uuid,
    treasury: String,
    delegate: Option<String>,
    gas_tank_key_file: String,
    #[serde(default = "default_min_amount")]
    min_amount: Decimal,
    #[serde(default = "default_batch_size")]
    batch_size: usize,
    max_gas_price_gwei: Decimal,
    #[serde(default = "default_low_gas_balance")]
    low_gas_balance: Decimal,
    #[serde(default = "default_interval")]
    interval_seconds: u64,
}

fn default_min_amount() -> Decimal {
    Decimal::from(10)
}
fn default_batch_size() -> usize {
    30
}
fn default_low_gas_balance() -> Decimal {
    Decimal::new(1, 2)
}
fn default_interval() -> u64 {
    600
}

/// `[sweep.NETWORK.mode]` tables, each for an enabled EVM network.
pub(super) fn parse(
    raw: BTreeMap<String, BTreeMap<String, RawSweep>>,
    networks: &HashMap<(Network, Mode), NetworkConfig>,
) -> Result<Vec<SweepConfig>, ConfigError> {
    let mut out = Vec::new();
    for (name, modes) in raw {
        for (mode_name, raw) in modes {
            let key = format!("sweep.{name}.{mode_name}");
            let network = Network::parse(&name)
                .ok_or_else(|| err(&key, format!("'{name}' is not a network")))?;
            let mode = Mode::parse(&mode_name)
                .ok_or_else(|| err(&key, "the mode must be test or live"))?;
            if network.family() != ChainFamily::Evm {
                return Err(err(
                    &key,
                    "sweeps run on EVM networks only (TRON: `sweep plan`)",
                ));
            }
            if !networks.get(&(network, mode)).is_some_and(|n| n.watched()) {
                return Err(err(
                    &key,
                    format!("networks.{name}.{mode_name} has no rpc_urls"),
                ));
            }
            out.push(raw.checked(&key, network, mode)?);
        }
    }
    Ok(out)
}

fn evm_address(key: &str, text: &str) -> Result<Address, ConfigError> {
    let raw = crate::domain::address::parse_evm_address(text).map_err(|m| err(key, m))?;
    Ok(Address::from(raw))
}

impl RawSweep {
    fn checked(self, key: &str, network: Network, mode: Mode) -> Result<SweepConfig, ConfigError> {
        let treasury = evm_address(&format!("{key}.treasury"), &self.treasury)?;
        if treasury == Address::ZERO {
            return Err(err(
                format!("{key}.treasury"),
                "must not be the zero address",
            ));
        }
        let delegate = match &self.delegate {
            Some(text) => evm_address(&format!("{key}.delegate"), text)?,
            None => delegate_address(treasury),
        };
        let file_key = format!("{key}.gas_tank_key_file");
        let text = std::fs::read_to_string(&self.gas_tank_key_file).map_err(|e| {
            err(
                &file_key,
                format!("cannot read {}: {e}", self.gas_tank_key_file),
            )
        })?;
        let text = text.trim().to_owned();
        let tank = PrivateKeySigner::from_str(&text)
            .map_err(|_| err(&file_key, "must hold one private key, as 64 hex digits"))?;
        if tank.address() == treasury {
            return Err(err(&file_key, "the gas tank must not be the treasury"));
        }
        if self.min_amount <= Decimal::ZERO {
            return Err(err(format!("{key}.min_amount"), "must be above 0"));
        }
        if self.max_gas_price_gwei <= Decimal::ZERO {
            return Err(err(format!("{key}.max_gas_price_gwei"), "must be above 0"));
        }
        if self.low_gas_balance < Decimal::ZERO {
            return Err(err(
                format!("{key}.low_gas_balance"),
                "must not be negative",
            ));
        }
        Ok(SweepConfig {
            network,
            mode,
            merchant: self.merchant,
            treasury,
            delegate,
            gas_tank_key: Secret(text),
            min_amount: self.min_amount,
            batch_size: bounded(&format!("{key}.batch_size"), self.batch_size, 1..=100)?,
            max_gas_price_gwei: self.max_gas_price_gwei,
            low_gas_balance: self.low_gas_balance,
            interval: Duration::from_secs(bounded(
                &format!("{key}.interval_seconds"),
                self.interval_seconds,
                1..=7 * 24 * 3600,
            )?),
        })
    }
}
