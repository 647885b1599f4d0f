//! `[sweep.<NETWORK>.<mode>]`: collecting deposit balances into the treasury: the EVM
//! sweeper's settings, or TRON's (plan, sign offline, broadcast).

use super::networks::{RawRpcUrl, RpcUrl};
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

/// `[sweep.NETWORK.mode]` tables, each for an enabled network: EVM sweepers and TRON's.
pub(super) fn parse(
    raw: BTreeMap<String, BTreeMap<String, toml::Value>>,
    networks: &HashMap<(Network, Mode), NetworkConfig>,
) -> Result<(Vec<SweepConfig>, Vec<TronSweepConfig>), ConfigError> {
    let mut out = Vec::new();
    let mut tron = Vec::new();
    for (name, modes) in raw {
        for (mode_name, raw) in modes {
            let key = format!("sweep.{name}.{mode_name}");
            let network = Network::parse(&name)
                .ok_or_else(|| err(&key, format!("'{name}' is not a network")))?;
            let mode = Mode::parse(&mode_name)
                .ok_or_else(|| err(&key, "the mode must be test or live"))?;
            let Some(net) = networks.get(&(network, mode)).filter(|n| n.watched()) else {
                return Err(err(
                    &key,
                    format!("networks.{name}.{mode_name} has no rpc_urls"),
                ));
            };
            match network.family() {
                ChainFamily::Evm => {
                    let raw: RawSweep = raw.try_into().map_err(|e| toml_value_error(&key, e))?;
                    out.push(raw.checked(&key, network, mode)?);
                }
                ChainFamily::Tron => {
                    let raw: RawTronSweep =
                        raw.try_into().map_err(|e| toml_value_error(&key, e))?;
                    tron.push(raw.checked(&key, net)?);
                }
                ChainFamily::Solana => return Err(err(&key, "SOLANA has no sweeps")),
            }
        }
    }
    Ok((out, tron))
}

fn toml_value_error(key: &str, e: toml::de::Error) -> ConfigError {
    err(key, e.message().trim().to_owned())
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

/// How a TRON transfer's energy is paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EnergyMode {
    /// The staking account delegates energy to each address, and takes it back after.
    Delegate,
    /// Each address burns TRX for its energy (the gas wallet sends it the TRX first).
    Burn,
    /// The addresses already have the energy (rented, or delegated by hand).
    None,
}

impl EnergyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delegate => "delegate",
            Self::Burn => "burn",
            Self::None => "none",
        }
    }
}

/// `[sweep.TRON.mode]`: planned by `sweep plan`, signed offline by `sweep sign`, sent by
/// `sweep broadcast`.
#[derive(Debug, Clone)]
pub struct TronSweepConfig {
    pub network: Network,
    pub mode: Mode,
    pub merchant: Uuid,
    pub treasury: [u8; 20],
    /// The gas wallet's private key (hex): it holds only TRX, and pays activations and burns.
    pub gas_wallet_key: Secret,
    pub gas_wallet: [u8; 20],
    pub energy: EnergyMode,
    /// `delegate`: whose staked TRX lends the energy (by default the gas wallet).
    pub staking_account: Option<[u8; 20]>,
    /// The staking account's key, when the server holds it; without it the delegations are
    /// signed offline with the transfers.
    pub staking_key: Option<Secret>,
    /// An address is swept once its USDT balance reaches this.
    pub min_amount: Decimal,
    /// TRX sent to an address to activate it (the network also burns 1 TRX, and 0.1 TRX of
    /// bandwidth when the gas wallet has none staked).
    pub activation_trx: Decimal,
    /// The most TRX one transfer may burn for energy.
    pub fee_limit_trx: Decimal,
    /// A plan's transfers expire this long after its reference block (at most 23 h).
    pub signing_window: Duration,
    /// The node's HTTP API (`/wallet/...`), each with its own headers.
    pub http_urls: Vec<RpcUrl>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTronSweep {
    merchant: Uuid,
    treasury: String,
    gas_wallet_key_file: String,
    energy: EnergyMode,
    staking_account: Option<String>,
    staking_key_file: Option<String>,
    #[serde(default = "default_min_amount")]
    min_amount: Decimal,
    #[serde(default = "default_activation_trx")]
    activation_trx: Decimal,
    #[serde(default = "default_fee_limit_trx")]
    fee_limit_trx: Decimal,
    #[serde(default = "default_signing_window_hours")]
    signing_window_hours: u64,
    http_urls: Option<Vec<RawRpcUrl>>,
}

fn default_activation_trx() -> Decimal {
    Decimal::new(11, 1)
}
fn default_fee_limit_trx() -> Decimal {
    Decimal::from(30)
}
fn default_signing_window_hours() -> u64 {
    23
}

/// A TRON private key file: 64 hex digits (an optional `0x`); returns the key and its account.
fn tron_key(key: &str, path: &str) -> Result<(Secret, [u8; 20]), ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| err(key, format!("cannot read {path}: {e}")))?;
    let text = text.trim();
    let hex_text = text.strip_prefix("0x").unwrap_or(text);
    let signing = hex::decode(hex_text)
        .ok()
        .and_then(|b| k256::ecdsa::SigningKey::from_slice(&b).ok())
        .ok_or_else(|| err(key, "must hold one private key, as 64 hex digits"))?;
    Ok((
        Secret(hex_text.to_owned()),
        crate::sweep::tron::account_of(&signing),
    ))
}

fn tron_address(key: &str, text: &str) -> Result<[u8; 20], ConfigError> {
    crate::domain::address::parse_tron_address(text).map_err(|m| err(key, m))
}

impl RawTronSweep {
    fn checked(self, key: &str, net: &NetworkConfig) -> Result<TronSweepConfig, ConfigError> {
        let treasury = tron_address(&format!("{key}.treasury"), &self.treasury)?;
        let (gas_wallet_key, gas_wallet) = tron_key(
            &format!("{key}.gas_wallet_key_file"),
            &self.gas_wallet_key_file,
        )?;
        if gas_wallet == treasury {
            return Err(err(
                format!("{key}.gas_wallet_key_file"),
                "the gas wallet must not be the treasury",
            ));
        }
        let staking_account = match &self.staking_account {
            Some(text) => Some(tron_address(&format!("{key}.staking_account"), text)?),
            None => None,
        };
        let staking_key = match &self.staking_key_file {
            Some(path) => {
                let file_key = format!("{key}.staking_key_file");
                let (secret, account) = tron_key(&file_key, path)?;
                if staking_account.is_some_and(|a| a != account) {
                    return Err(err(file_key, "is not the staking account's key"));
                }
                Some((secret, account))
            }
            None => None,
        };
        let (staking_account, staking_key) = match self.energy {
            EnergyMode::Delegate => {
                let account = staking_account
                    .or(staking_key.as_ref().map(|k| k.1))
                    .unwrap_or(gas_wallet);
                let key = match staking_key {
                    Some((secret, _)) => Some(secret),
                    None if account == gas_wallet => Some(gas_wallet_key.clone()),
                    None => None,
                };
                (Some(account), key)
            }
            _ if staking_account.is_some() || staking_key.is_some() => {
                return Err(err(
                    format!("{key}.staking_account"),
                    "only for energy = \"delegate\"",
                ));
            }
            _ => (None, None),
        };
        if self.min_amount <= Decimal::ZERO {
            return Err(err(format!("{key}.min_amount"), "must be above 0"));
        }
        if self.activation_trx <= Decimal::ZERO {
            return Err(err(format!("{key}.activation_trx"), "must be above 0"));
        }
        if self.fee_limit_trx <= Decimal::ZERO || self.fee_limit_trx > Decimal::from(15_000) {
            return Err(err(
                format!("{key}.fee_limit_trx"),
                "must be above 0 and at most 15000 (the network's limit)",
            ));
        }
        let hours = bounded(
            &format!("{key}.signing_window_hours"),
            self.signing_window_hours,
            // The network refuses an expiration more than 24 h past its head: an hour spare.
            1..=23,
        )?;
        let http_urls = match self.http_urls {
            Some(urls) if !urls.is_empty() => urls.into_iter().map(RpcUrl::from).collect(),
            Some(_) => return Err(err(format!("{key}.http_urls"), "must not be empty")),
            None => net
                .rpc_urls
                .iter()
                .map(|u| {
                    let base = u.url.trim_end_matches('/').strip_suffix("/jsonrpc")?;
                    Some(RpcUrl {
                        url: base.to_owned(),
                        ..u.clone()
                    })
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    err(
                        format!("{key}.http_urls"),
                        "the RPC URLs do not end in /jsonrpc: give the node's HTTP API URLs",
                    )
                })?,
        };
        for (i, u) in http_urls.iter().enumerate() {
            crate::domain::urls::HttpUrl::parse(&u.url)
                .map_err(|m| err(format!("{key}.http_urls[{i}]"), m))?;
        }
        Ok(TronSweepConfig {
            network: net.network,
            mode: net.mode,
            merchant: self.merchant,
            treasury,
            gas_wallet_key,
            gas_wallet,
            energy: self.energy,
            staking_account,
            staking_key,
            min_amount: self.min_amount,
            activation_trx: self.activation_trx,
            fee_limit_trx: self.fee_limit_trx,
            signing_window: Duration::from_secs(hours * 3600),
            http_urls,
        })
    }
}
