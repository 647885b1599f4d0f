//! `sweep plan --network TRON`: which deposit addresses hold enough USDT to sweep, what each
//! needs (activation, energy, bandwidth) and costs, and the reference block the transfers will
//! be signed against, written as JSON so that signing needs no network.

use super::api::{ApiError, TronApi};
use crate::chain::rpc::{Answer, Call, RpcClient, RpcError};
use crate::chain::watcher::token_amount;
use crate::config::{EnergyMode, NetworkConfig, TronSweepConfig};
use crate::db::sweeps as db;
use crate::db::Scope;
use crate::domain::address::{parse_tron_address, tron_base58, AccountXpub};
use crate::domain::ids::random_id;
use crate::domain::money::Token;
use crate::domain::network::Network;
use alloy_primitives::{Address, Bytes, U256};
use alloy_sol_types::SolCall;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;
use std::str::FromStr;
use uuid::Uuid;

/// Energy of a USDT transfer to an address that already holds USDT, and to one that does not
/// (TRON's documentation and fee providers, 2025).
pub const ENERGY_TO_HOLDER: u64 = 64_285;
pub const ENERGY_TO_NEW_HOLDER: u64 = 130_285;
/// Bytes of bandwidth a signed USDT transfer takes.
pub const TRANSFER_BANDWIDTH: u64 = 345;
/// Sun a byte of bandwidth burns when the account has none left (`getTransactionFee`).
pub const BANDWIDTH_PRICE_SUN: u64 = 1_000;
/// Sun an energy unit burns (`getEnergyFee`, 100 since Proposal #104), when the node does not say.
pub const ENERGY_PRICE_SUN: u64 = 100;
/// Burned by the sender of TRX to an account that does not exist yet
/// (`getCreateNewAccountFeeInSystemContract`), and for its bandwidth (`getCreateAccountFee`)
/// when the sender has none staked.
pub const ACCOUNT_CREATION_FEE_SUN: u64 = 1_000_000;
pub const ACCOUNT_CREATION_BANDWIDTH_SUN: u64 = 100_000;
/// Delegated energy is sized this much above the estimate (in percent), as energy use varies.
pub const DELEGATION_MARGIN_PERCENT: u64 = 10;
/// At most this many addresses per plan.
pub const MAX_PLAN_ITEMS: i64 = 500;
pub const SUN_PER_TRX: u64 = 1_000_000;
/// 24 hours less 10 minutes, in milliseconds.
pub const UNDELEGATION_LIFETIME_MS: i64 = (24 * 60 - 10) * 60 * 1000;
pub const PLAN_VERSION: u32 = 1;

/// Who signs the energy delegations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StakingSigner {
    /// The server holds the staking account's key (it may be the gas wallet).
    Server,
    /// `sweep sign --staking-key-file` signs them with the transfers.
    Offline,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub version: u32,
    /// The sweep's id once broadcast.
    pub id: String,
    pub network: Network,
    pub livemode: bool,
    pub merchant: Uuid,
    /// The account xpub the addresses derive from (`m/44'/195'/account'`).
    pub xpub: String,
    pub treasury: String,
    pub token: PlanToken,
    pub energy_mode: EnergyMode,
    pub staking_account: Option<String>,
    pub staking_signer: Option<StakingSigner>,
    pub gas_wallet: String,
    pub reference: PlanReference,
    /// The most TRX (in sun) each transfer may burn.
    pub fee_limit_sun: i64,
    pub energy_price_sun: u64,
    pub items: Vec<PlanItem>,
    pub totals: PlanTotals,
    /// What may make a transfer fail or cost more than planned.
    pub warnings: Vec<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanToken {
    pub currency: Token,
    pub contract: String,
    pub decimals: u8,
}

/// The block the transactions refer to (TAPOS), and until when they can be sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanReference {
    pub block_number: u64,
    /// The block's id, hex.
    pub block_id: String,
    /// Milliseconds since the epoch.
    pub block_timestamp: i64,
    /// Hex of bytes 6..8 of the number, and of bytes 8..16 of the id.
    pub ref_block_bytes: String,
    pub ref_block_hash: String,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    pub expiration: i64,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanItem {
    pub address: String,
    pub address_index: u32,
    /// The newest confirmed transfer to the address this sweep covers.
    pub through_transaction: i64,
    /// The USDT balance read, all of which is sent: in token units and in base units.
    pub amount: Decimal,
    pub amount_units: String,
    pub activated: bool,
    pub trx_balance_sun: i64,
    pub energy: u64,
    pub bandwidth: u64,
    /// `none` mode: the energy the address has now.
    pub energy_available: Option<u64>,
    /// What the network burns from the gas wallet to activate it (0 when active).
    pub activation_fee_trx: Decimal,
    /// TRX the gas wallet sends it first: to activate it, or (`burn`) to pay its energy.
    pub trx_sent: Decimal,
    /// What its energy costs burned (energy × price).
    pub burn_trx: Decimal,
    /// `delegate` mode: the staked TRX whose energy it is lent.
    pub delegated_sun: Option<i64>,
    /// The TRX this address costs if its energy is burned, and with delegated energy.
    pub cost_burn_trx: Decimal,
    pub cost_delegated_trx: Decimal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanTotals {
    pub addresses: usize,
    pub amount: Decimal,
    pub activations: usize,
    pub energy: u64,
    pub bandwidth: u64,
    pub trx_sent: Decimal,
    pub cost_burn_trx: Decimal,
    pub cost_delegated_trx: Decimal,
    /// The cost in the configured mode.
    pub cost_trx: Decimal,
    pub delegated_sun: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("RPC: {0}")]
    Rpc(#[from] RpcError),
    #[error("the node's HTTP API: {0}")]
    Api(#[from] ApiError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{0}")]
    Setup(String),
}

/// `contract.balanceOf(owner)`, as a JSON-RPC call.
pub fn balance_call(contract: &[u8; 20], owner: [u8; 20]) -> Call {
    let data = crate::sweep::delegate::BalanceOf {
        owner: owner.into(),
    }
    .abi_encode();
    Call {
        method: "eth_call",
        params: json!([{
            "to": Address::from(*contract).to_string(),
            "data": Bytes::from(data).to_string(),
        }, "latest"]),
    }
}

/// The balance a [`balance_call`] answered.
pub fn balance_answer(answer: &Answer) -> Result<U256, RpcError> {
    let malformed = |detail: String| RpcError::Malformed {
        method: "eth_call".into(),
        detail,
    };
    let raw = answer.as_ref().map_err(Clone::clone)?;
    let text: String =
        serde_json::from_str(raw.get()).map_err(|_| malformed("not a string".into()))?;
    let digits = text.strip_prefix("0x").unwrap_or(&text);
    let digits = if digits.is_empty() { "0" } else { digits };
    U256::from_str_radix(digits, 16).map_err(|_| malformed(format!("not a balance: {text}")))
}

/// A node's block time (seconds, or milliseconds on some TRON nodes) in milliseconds.
pub fn block_millis(timestamp: u64) -> i64 {
    let millis = if timestamp > 100_000_000_000 {
        timestamp
    } else {
        timestamp.saturating_mul(1000)
    };
    i64::try_from(millis).unwrap_or(i64::MAX)
}

pub fn trx(sun: u64) -> Decimal {
    Decimal::from(sun) / Decimal::from(SUN_PER_TRX)
}

pub fn sun(trx: Decimal) -> Option<i64> {
    i64::try_from((trx * Decimal::from(SUN_PER_TRX)).ceil()).ok()
}

/// The staked TRX (in sun, whole TRX) whose energy covers `energy` with the margin, given the
/// network's total energy and the TRX staked for it.
pub fn stake_for_energy(energy: u64, total_limit: i64, total_weight: i64) -> Option<i64> {
    if total_limit <= 0 || total_weight <= 0 {
        return None;
    }
    let wanted = u128::from(energy) * u128::from(100 + DELEGATION_MARGIN_PERCENT);
    let limit = u128::try_from(total_limit).ok()? * 100;
    let weight = u128::try_from(total_weight).ok()?;
    // energy per TRX = limit / weight; TRX = ceil(wanted × weight / limit), at least 1.
    let whole_trx = (wanted * weight).div_ceil(limit).max(1);
    i64::try_from(whole_trx * u128::from(SUN_PER_TRX)).ok()
}

pub struct Planner<'a> {
    pub db: &'a PgPool,
    pub config: &'a TronSweepConfig,
    pub net: &'a NetworkConfig,
    pub rpc: &'a RpcClient,
    pub api: &'a TronApi,
    /// The xpub the merchant's TRON addresses come from.
    pub xpub: &'a AccountXpub,
}

struct Read {
    candidate: db::Candidate,
    account: [u8; 20],
    units: U256,
    amount: Decimal,
}

impl Planner<'_> {
    fn scope(&self) -> Scope {
        Scope {
            merchant_id: self.config.merchant,
            livemode: self.config.mode.livemode(),
        }
    }

    /// Reads the candidates and writes the plan. Addresses below the minimum are marked checked
    /// (they come back with their next payment), as the EVM sweeper does.
    pub async fn plan(&self) -> Result<Plan, PlanError> {
        let config = self.config;
        let token = self
            .net
            .token(Token::Usdt)
            .ok_or_else(|| PlanError::Setup("the network has no USDT contract".into()))?;
        let contract = parse_tron_address(&token.contract)
            .map_err(|m| PlanError::Setup(format!("the USDT contract {m}")))?;
        let candidates =
            db::candidates(self.db, self.scope(), Network::Tron, MAX_PLAN_ITEMS).await?;

        let mut calls = vec![
            Call::block_number(),
            balance_call(&contract, config.treasury),
        ];
        let mut accounts = Vec::with_capacity(candidates.len());
        for c in &candidates {
            let account = parse_tron_address(&c.address)
                .map_err(|m| PlanError::Setup(format!("deposit address {} {m}", c.address)))?;
            accounts.push(account);
            calls.push(balance_call(&contract, account));
        }
        let answers = self.rpc.batch(&calls).await?;
        if answers.len() != calls.len() {
            return Err(RpcError::Malformed {
                method: "batch".into(),
                detail: "not one answer per call".into(),
            }
            .into());
        }
        let word = |i: usize| balance_answer(&answers[i]);
        let head = match &answers[0] {
            Ok(raw) => crate::chain::rpc::parse_block_number(raw)?,
            Err(e) => return Err(e.clone().into()),
        };
        let mut treasury_holds = word(1)? > U256::ZERO;

        let decimals = u32::from(token.decimals);
        let mut reads = Vec::new();
        let mut below = Vec::new();
        for (i, (candidate, account)) in candidates.into_iter().zip(accounts).enumerate() {
            let units = word(2 + i)?;
            let amount = token_amount(units, decimals).ok_or_else(|| {
                PlanError::Setup(format!("{}'s balance is out of range", candidate.address))
            })?;
            if amount < config.min_amount {
                below.push((candidate.address.clone(), candidate.through));
                continue;
            }
            reads.push(Read {
                candidate,
                account,
                units,
                amount,
            });
        }
        db::mark_checked(self.db, Network::Tron, config.mode.livemode(), &below).await?;

        let block = self
            .rpc
            .block(head)
            .await?
            .ok_or_else(|| PlanError::Setup(format!("the node has no block {head}")))?;
        let now = Utc::now();
        let block_ms = block_millis(block.timestamp);
        if (now.timestamp_millis() - block_ms).abs() > 10 * 60 * 1000 {
            return Err(PlanError::Setup(format!(
                "the node's newest block ({head}) is dated {}: is the node in sync, and the clock right?",
                DateTime::<Utc>::from_timestamp_millis(block_ms).unwrap_or_default()
            )));
        }
        let window = i64::try_from(config.signing_window.as_millis()).unwrap_or(i64::MAX);
        let expiration = block_ms.saturating_add(window);
        let reference =
            super::Reference::from_block(head, &block.hash.0, now.timestamp_millis(), expiration);

        let parameters = self.api.chain_parameters().await?;
        let parameter = |key: &str, default: u64| {
            parameters
                .get(key)
                .and_then(|v| u64::try_from(*v).ok())
                .unwrap_or(default)
        };
        let energy_price = parameter("getEnergyFee", ENERGY_PRICE_SUN);
        let creation_fee = parameter(
            "getCreateNewAccountFeeInSystemContract",
            ACCOUNT_CREATION_FEE_SUN,
        )
        .saturating_add(parameter(
            "getCreateAccountFee",
            ACCOUNT_CREATION_BANDWIDTH_SUN,
        ));
        let bandwidth_price = parameter("getTransactionFee", BANDWIDTH_PRICE_SUN);

        let staking = match config.energy {
            EnergyMode::Delegate => {
                let account = config.staking_account.unwrap_or(config.gas_wallet);
                let resource = self.api.account_resource(&account).await?;
                Some((account, resource))
            }
            _ => None,
        };
        let activation_sun = sun(config.activation_trx).unwrap_or(i64::MAX);
        let mut items = Vec::with_capacity(reads.len());
        for read in reads {
            let account = self.api.account(&read.account).await?;
            let activated = account.is_some();
            let trx_balance = account.unwrap_or(0);
            let energy = if treasury_holds {
                ENERGY_TO_HOLDER
            } else {
                ENERGY_TO_NEW_HOLDER
            };
            treasury_holds = true;
            let burn = energy.saturating_mul(energy_price);
            let activation_fee = if activated { 0 } else { creation_fee };
            let energy_available = match config.energy {
                EnergyMode::None => {
                    let r = self.api.account_resource(&read.account).await?;
                    Some(u64::try_from(r.energy_limit - r.energy_used).unwrap_or(0))
                }
                _ => None,
            };
            let delegated_sun = match &staking {
                Some((_, r)) => Some(
                    stake_for_energy(energy, r.total_energy_limit, r.total_energy_weight)
                        .ok_or_else(|| {
                            PlanError::Setup(
                                "the node reports no network energy (TotalEnergyLimit/Weight)"
                                    .into(),
                            )
                        })?,
                ),
                None => None,
            };
            let needs_activation = if activated { 0 } else { activation_sun };
            let sent = match config.energy {
                // The address burns its own TRX: it gets what its energy and bandwidth cost.
                EnergyMode::Burn => {
                    let wanted = i64::try_from(
                        burn.saturating_add(TRANSFER_BANDWIDTH.saturating_mul(bandwidth_price)),
                    )
                    .unwrap_or(i64::MAX);
                    (wanted - trx_balance).max(needs_activation).max(0)
                }
                _ => needs_activation,
            };
            let sent_sun = u64::try_from(sent).unwrap_or(0);
            items.push(PlanItem {
                address: read.candidate.address.clone(),
                address_index: u32::try_from(read.candidate.address_index).map_err(|_| {
                    PlanError::Setup(format!("{} has no valid index", read.candidate.address))
                })?,
                through_transaction: read.candidate.through,
                amount: read.amount,
                amount_units: read.units.to_string(),
                activated,
                trx_balance_sun: trx_balance,
                energy,
                bandwidth: TRANSFER_BANDWIDTH,
                energy_available,
                activation_fee_trx: trx(activation_fee),
                trx_sent: trx(sent_sun),
                burn_trx: trx(burn),
                delegated_sun,
                cost_burn_trx: trx(activation_fee.saturating_add(burn)),
                cost_delegated_trx: trx(activation_fee),
            });
        }
        let delegated_total: i64 = items.iter().filter_map(|i| i.delegated_sun).sum();
        if let Some((account, _)) = &staking {
            if delegated_total > 0 {
                let available = self.api.can_delegate_energy(account).await?;
                if available < delegated_total {
                    return Err(PlanError::Setup(format!(
                        "the staking account {} can delegate the energy of {} TRX; this plan needs {} TRX: stake more, sweep fewer addresses (min_amount), or use energy = \"burn\"",
                        tron_base58(account),
                        trx(u64::try_from(available).unwrap_or(0)),
                        trx(u64::try_from(delegated_total).unwrap_or(0)),
                    )));
                }
            }
        }
        let sum = |f: fn(&PlanItem) -> Decimal| items.iter().map(f).sum::<Decimal>();
        let (cost_burn, cost_delegated) = (sum(|i| i.cost_burn_trx), sum(|i| i.cost_delegated_trx));
        let totals = PlanTotals {
            addresses: items.len(),
            amount: sum(|i| i.amount),
            activations: items.iter().filter(|i| !i.activated).count(),
            energy: items.iter().map(|i| i.energy).sum(),
            bandwidth: items.iter().map(|i| i.bandwidth).sum(),
            trx_sent: sum(|i| i.trx_sent),
            cost_burn_trx: cost_burn,
            cost_delegated_trx: cost_delegated,
            cost_trx: match config.energy {
                EnergyMode::Burn => cost_burn,
                _ => cost_delegated,
            },
            delegated_sun: delegated_total,
        };
        let staking_signer = staking.as_ref().map(|_| {
            if config.staking_key.is_some() {
                StakingSigner::Server
            } else {
                StakingSigner::Offline
            }
        });
        Ok(Plan {
            version: PLAN_VERSION,
            id: random_id("sw_"),
            network: Network::Tron,
            livemode: config.mode.livemode(),
            merchant: config.merchant,
            xpub: self.xpub.as_str().to_owned(),
            treasury: tron_base58(&config.treasury),
            token: PlanToken {
                currency: Token::Usdt,
                contract: token.contract.clone(),
                decimals: token.decimals,
            },
            energy_mode: config.energy,
            staking_account: staking.as_ref().map(|(a, _)| tron_base58(a)),
            staking_signer,
            gas_wallet: tron_base58(&config.gas_wallet),
            reference: PlanReference {
                block_number: head,
                block_id: hex::encode(block.hash.0),
                block_timestamp: block_ms,
                ref_block_bytes: hex::encode(reference.ref_block_bytes),
                ref_block_hash: hex::encode(reference.ref_block_hash),
                timestamp: reference.timestamp,
                expiration,
                expires_at: DateTime::<Utc>::from_timestamp_millis(expiration).unwrap_or_default(),
            },
            fee_limit_sun: sun(config.fee_limit_trx).unwrap_or(i64::MAX),
            energy_price_sun: energy_price,
            warnings: items
                .iter()
                .filter(|i| i.energy_available.is_some_and(|e| e < i.energy))
                .map(|i| {
                    format!(
                        "{} has {} energy of the {} its transfer needs: the rest burns its own TRX, or it fails",
                        i.address,
                        i.energy_available.unwrap_or(0),
                        i.energy
                    )
                })
                .collect(),
            items,
            totals,
            created_at: now,
        })
    }
}

impl Plan {
    /// The reference block and expiration, as the transactions carry them.
    pub fn reference(&self) -> Result<super::Reference, String> {
        let bytes: [u8; 2] = hex::decode(&self.reference.ref_block_bytes)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or("reference.ref_block_bytes is not 2 bytes of hex")?;
        let hash: [u8; 8] = hex::decode(&self.reference.ref_block_hash)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or("reference.ref_block_hash is not 8 bytes of hex")?;
        Ok(super::Reference {
            ref_block_bytes: bytes,
            ref_block_hash: hash,
            timestamp: self.reference.timestamp,
            expiration: self.reference.expiration,
        })
    }

    /// The reference for undelegations: they are sent last, so they live as long as the network
    /// allows (24 hours after the reference block, less a margin), past the transfers.
    pub fn undelegation_reference(&self) -> Result<super::Reference, String> {
        let mut reference = self.reference()?;
        reference.expiration = self
            .reference
            .block_timestamp
            .saturating_add(UNDELEGATION_LIFETIME_MS)
            .max(reference.expiration);
        Ok(reference)
    }

    pub fn expires_at(&self) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp_millis(self.reference.expiration).unwrap_or_default()
    }
}

impl PlanItem {
    pub fn account(&self) -> Result<[u8; 20], String> {
        parse_tron_address(&self.address).map_err(|m| format!("{} {m}", self.address))
    }

    pub fn units(&self) -> Result<U256, String> {
        U256::from_str(&self.amount_units)
            .map_err(|_| format!("{}: amount_units is not an integer", self.address))
    }
}
