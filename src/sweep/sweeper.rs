//! The sweeper: finds deposit addresses whose confirmed, unswept balance reached the minimum,
//! reads their balances on chain, and sends batched sweeps from the gas tank: a type-4
//! (EIP-7702) transaction carrying authorizations for addresses not yet delegated, a plain
//! EIP-1559 one when every address already is. Each sweep is recorded before it is sent (and
//! sent again until mined), and settled once its block is as deep as the network's
//! confirmations: what reached the treasury is read from the receipt's `Transfer` logs.

use super::delegate::{self, BalanceOf, Treasury};
use crate::chain::rpc::{parse_quantity, quantity, Call, RetryPolicy, RpcClient, RpcError};
use crate::chain::watcher::{rpc_client, token_amount};
use crate::config::{NetworkConfig, SweepConfig};
use crate::db::sweeps::{self as db, Candidate, ItemRow, NewSweep, Outcome, SweepRow};
use crate::db::Scope;
use crate::domain::address::evm_checksum;
use crate::domain::ids::random_id;
use crate::domain::money::Token;
use crate::state::AppState;
use alloy_consensus::{SignableTransaction, TxEip1559, TxEip7702, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_eips::eip7702::SignedAuthorization;
use alloy_primitives::{Address, Bytes, TxKind, B256, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::{SolCall, SolEvent};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sqlx::PgPool;
use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::time::Duration;

/// Candidate addresses read per tick at most.
const MAX_CANDIDATES: i64 = 500;
/// Gas a sweep may use per address when the node cannot estimate (a generous bound).
const FALLBACK_GAS_PER_ADDRESS: u64 = 120_000;
const FALLBACK_GAS_BASE: u64 = 60_000;

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("RPC: {0}")]
    Rpc(#[from] RpcError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// The setup is wrong (no delegate, another treasury): nothing is sent until it is fixed.
    #[error("{0}")]
    Setup(String),
    #[error("the node refused the sweep transaction: {0}")]
    Refused(String),
}

/// What one tick did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SweepReport {
    /// Ids of the sweeps sent.
    pub sent: Vec<String>,
    /// Ids of the sweeps settled (completed, failed or dropped).
    pub settled: Vec<String>,
    /// Addresses whose balance is below the minimum (checked again after their next payment).
    pub below_minimum: usize,
    /// Addresses not delegated yet, with no usable authorization imported.
    pub unauthorized: Vec<String>,
    /// Addresses whose authorization can no longer apply (their nonce moved on).
    pub stale: Vec<String>,
    /// Sweeps waited: the gas price is above the configured maximum.
    pub gas_price_too_high: bool,
    /// Sweeps sent and not settled yet (including those sent in this tick).
    pub in_flight: usize,
    /// Another process holds this sweeper's lock: nothing was done.
    pub busy: bool,
    /// Addresses that moved nothing in their last sweeps and now wait for their next payment.
    pub given_up: Vec<String>,
}

#[derive(Debug, Clone)]
struct SweptToken {
    currency: Token,
    contract: Address,
    decimals: u8,
}

/// One address to sweep, with what it holds.
struct Planned {
    candidate: Candidate,
    balances: Vec<(SweptToken, Decimal)>,
    authorization: Option<SignedAuthorization>,
}

pub struct Sweeper {
    db: PgPool,
    gas_tanks: std::sync::Arc<super::GasTanks>,
    config: SweepConfig,
    net: NetworkConfig,
    rpc: RpcClient,
    tank: PrivateKeySigner,
    tokens: Vec<SweptToken>,
    confirmations: u64,
    /// The delegate's code was found to be SweepDelegate's for the treasury.
    delegate_checked: std::sync::atomic::AtomicBool,
}

fn hex_bytes(text: &str) -> Option<Vec<u8>> {
    hex::decode(text.strip_prefix("0x")?).ok()
}

fn malformed(method: &str, detail: &str) -> RpcError {
    RpcError::Malformed {
        method: method.to_owned(),
        detail: detail.to_owned(),
    }
}

fn u256_of(value: &Value, method: &str) -> Result<U256, RpcError> {
    value
        .as_str()
        .and_then(|s| U256::from_str(s).ok())
        .ok_or_else(|| malformed(method, "not a quantity"))
}

fn u64_of(value: &Value, method: &str) -> Result<u64, RpcError> {
    value
        .as_str()
        .and_then(parse_quantity)
        .ok_or_else(|| malformed(method, "not a quantity"))
}

fn call_json(to: Address, data: &[u8]) -> Value {
    json!([{ "to": to.to_string(), "data": Bytes::copy_from_slice(data).to_string() }, "latest"])
}

fn authorization_json(a: &SignedAuthorization) -> Value {
    json!({
        "chainId": format!("{:#x}", a.chain_id),
        "address": a.address.to_string(),
        "nonce": quantity(a.nonce),
        "yParity": quantity(u64::from(a.y_parity())),
        "r": format!("{:#x}", a.r()),
        "s": format!("{:#x}", a.s()),
    })
}

/// A node's refusal that means the transaction is already in its pool (or mined).
fn already_known(e: &RpcError) -> bool {
    matches!(e, RpcError::Node { message, .. }
        if ["already known", "already imported", "known transaction", "nonce too low",
            "already exists", "alreadyknown"]
            .iter()
            .any(|m| message.to_ascii_lowercase().contains(m)))
}

impl Sweeper {
    pub fn new(state: &AppState, config: &SweepConfig) -> anyhow::Result<Self> {
        let net = state.config.network(config.network, config.mode).clone();
        let rpc = rpc_client(&net, RetryPolicy::default())?;
        let tokens = net
            .tokens
            .iter()
            .map(|t| {
                let raw = crate::domain::address::parse_evm_address(&t.contract)
                    .map_err(|m| anyhow::anyhow!("{}: {m}", t.contract))?;
                Ok(SweptToken {
                    currency: t.token,
                    contract: Address::from(raw),
                    decimals: t.decimals,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            db: state.db.clone(),
            gas_tanks: state.gas_tanks.clone(),
            tank: config.gas_tank().map_err(|m| anyhow::anyhow!("{m}"))?,
            confirmations: u64::from(net.confirmations.max(1)),
            delegate_checked: Default::default(),
            config: config.clone(),
            net,
            rpc,
            tokens,
        })
    }

    pub fn name(&self) -> String {
        format!(
            "sweep {}/{}",
            self.config.network,
            self.config.mode.as_str()
        )
    }

    pub fn gas_tank(&self) -> Address {
        self.tank.address()
    }

    fn scope(&self) -> Scope {
        Scope {
            merchant_id: self.config.merchant,
            livemode: self.config.mode.livemode(),
        }
    }

    async fn chain_id(&self) -> Result<u64, SweepError> {
        match self.net.chain_id {
            Some(id) => Ok(id),
            None => {
                let v = self.rpc.call("eth_chainId", json!([])).await?;
                Ok(u64_of(&v, "eth_chainId")?)
            }
        }
    }

    async fn code(&self, address: Address) -> Result<Vec<u8>, SweepError> {
        let v = self
            .rpc
            .call("eth_getCode", json!([address.to_string(), "latest"]))
            .await?;
        v.as_str()
            .and_then(hex_bytes)
            .ok_or_else(|| malformed("eth_getCode", "not hex").into())
    }

    /// The gas tank's balance in the native coin's smallest unit.
    pub async fn gas_tank_balance(&self) -> Result<U256, SweepError> {
        let v = self
            .rpc
            .call(
                "eth_getBalance",
                json!([self.gas_tank().to_string(), "latest"]),
            )
            .await?;
        Ok(u256_of(&v, "eth_getBalance")?)
    }

    /// Checks that the delegate is deployed and pays the configured treasury.
    pub async fn check_delegate(&self) -> Result<(), SweepError> {
        if self
            .delegate_checked
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Ok(());
        }
        let delegate = self.config.delegate;
        let code = self.code(delegate).await?;
        if code.is_empty() {
            return Err(SweepError::Setup(format!(
                "{}: no SweepDelegate at {delegate}: run `checkout-server sweep deploy-delegate --network {} --mode {}`",
                self.name(),
                self.config.network,
                self.config.mode.as_str()
            )));
        }
        let answer = self
            .rpc
            .call("eth_call", call_json(delegate, &Treasury {}.abi_encode()))
            .await?;
        let bytes = answer.as_str().and_then(hex_bytes).unwrap_or_default();
        let treasury = Treasury::abi_decode_returns(&bytes).ok();
        if treasury != Some(self.config.treasury) {
            return Err(SweepError::Setup(format!(
                "{}: the contract at {delegate} does not pay the treasury {} (it says {treasury:?})",
                self.name(),
                self.config.treasury
            )));
        }
        // Its code must be SweepDelegate's for this treasury, whoever deployed it: the code
        // a deployment of our creation code would leave, as the node computes it.
        let init = Bytes::from(delegate::init_code(self.config.treasury));
        let expected = self
            .rpc
            .call("eth_call", json!([{ "data": init.to_string() }, "latest"]))
            .await?;
        if expected.as_str().and_then(hex_bytes) != Some(code) {
            return Err(SweepError::Setup(format!(
                "{}: the contract at {delegate} is not SweepDelegate's code: refusing to delegate deposit addresses to it",
                self.name()
            )));
        }
        self.delegate_checked
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Deploys the delegate through the CREATE2 deployer unless it is there already; returns
    /// its address.
    pub async fn deploy_delegate(&self) -> Result<Address, SweepError> {
        let expected = delegate::delegate_address(self.config.treasury);
        if self.config.delegate != expected {
            return Err(SweepError::Setup(format!(
                "delegate {} is not the deterministic address {expected} for this treasury: deploy it yourself, or remove `delegate`",
                self.config.delegate
            )));
        }
        if self.code(delegate::CREATE2_DEPLOYER).await?.is_empty() {
            return Err(SweepError::Setup(format!(
                "the CREATE2 deployer {} is not on this network",
                delegate::CREATE2_DEPLOYER
            )));
        }
        if self.code(expected).await?.is_empty() {
            let data = delegate::deploy_call(self.config.treasury);
            let nonce = self.tank_nonce("pending").await?;
            let hash = self
                .send_tx(delegate::CREATE2_DEPLOYER, data, Vec::new(), nonce)
                .await
                .map(|(hash, _)| hash)?;
            self.wait_for_receipt(hash).await?;
        }
        self.check_delegate().await?;
        Ok(expected)
    }

    async fn wait_for_receipt(&self, hash: B256) -> Result<Value, SweepError> {
        for _ in 0..600 {
            let receipt = self
                .rpc
                .call("eth_getTransactionReceipt", json!([hash.to_string()]))
                .await?;
            if !receipt.is_null() {
                if receipt["status"].as_str() != Some("0x1") {
                    return Err(SweepError::Refused(format!("transaction {hash} reverted")));
                }
                return Ok(receipt);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(SweepError::Refused(format!(
            "transaction {hash} was not mined in 5 minutes"
        )))
    }

    async fn tank_nonce(&self, tag: &str) -> Result<u64, SweepError> {
        let v = self
            .rpc
            .call(
                "eth_getTransactionCount",
                json!([self.gas_tank().to_string(), tag]),
            )
            .await?;
        Ok(u64_of(&v, "eth_getTransactionCount")?)
    }

    /// Records the gas tank's balance for `/metrics` and readiness; warns when it runs low.
    async fn read_gas_tank(&self) {
        let balance = match self.gas_tank_balance().await {
            Ok(wei) => native_units(wei),
            Err(e) => {
                tracing::warn!(sweeper = %self.name(), error = %e, "cannot read the gas tank's balance");
                return;
            }
        };
        crate::metrics::gas_tank_balance(self.config.network, self.config.mode, balance);
        if balance < self.config.low_gas_balance {
            tracing::warn!(sweeper = %self.name(), gas_tank = %self.gas_tank(), %balance,
                low_gas_balance = %self.config.low_gas_balance, "the gas tank runs low: top it up");
        }
        let reading = super::GasTankReading {
            address: self.gas_tank().to_checksum(None),
            balance,
            low_gas_balance: self.config.low_gas_balance,
        };
        self.gas_tanks
            .record(self.config.network, self.config.mode, reading);
    }

    /// One round: settle what was sent, then sweep what is due. Only one process sweeps a
    /// merchant's network at a time (an advisory lock).
    pub async fn tick(&self) -> Result<SweepReport, SweepError> {
        self.read_gas_tank().await;
        let mut lock = self.db.begin().await?;
        let key = format!(
            "sweep:{}:{}:{}",
            self.config.network,
            self.config.mode.as_str(),
            self.config.merchant
        );
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtext($1))")
            .bind(&key)
            .fetch_one(&mut *lock)
            .await?;
        if !locked {
            return Ok(SweepReport {
                busy: true,
                ..SweepReport::default()
            });
        }
        let report = self.tick_locked().await;
        lock.rollback().await?;
        report
    }

    async fn tick_locked(&self) -> Result<SweepReport, SweepError> {
        self.check_delegate().await?;
        let mut report = SweepReport::default();
        self.settle(&mut report).await?;
        self.sweep_due(&mut report).await?;
        report.in_flight += report.sent.len();
        Ok(report)
    }

    /// Ticks until `shutdown`: every `interval_seconds`, or every poll interval of the
    /// network while a sweep is in flight; after a failure, backs off up to the interval.
    pub async fn run(self, shutdown: tokio_util::sync::CancellationToken) {
        let mut failures: u32 = 0;
        let poll = self.net.poll_interval.max(Duration::from_millis(100));
        loop {
            let wait = match self.tick().await {
                Ok(report) => {
                    failures = 0;
                    if report.in_flight > 0 {
                        poll
                    } else {
                        self.config.interval
                    }
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(sweeper = %self.name(), error = %e, failures, "sweep tick failed");
                    (poll * failures.min(600)).min(self.config.interval)
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Settles the pending sweeps: completed or failed once mined deep enough, dropped when
    /// their nonce went to another transaction; otherwise sent again.
    async fn settle(&self, report: &mut SweepReport) -> Result<(), SweepError> {
        let pending = db::pending(&self.db, self.config.network, self.config.mode.livemode())
            .await?
            .into_iter()
            .filter(|s| s.merchant_id == self.config.merchant)
            .collect::<Vec<_>>();
        if pending.is_empty() {
            return Ok(());
        }
        let head = u64_of(
            &self.rpc.call("eth_blockNumber", json!([])).await?,
            "eth_blockNumber",
        )?;
        // The tank's nonce as of a block as deep as the confirmations: a nonce spent there is
        // spent for good, so a sweep with a lower nonce and no receipt can never be mined.
        let settled_block = quantity(head.saturating_sub(self.confirmations));
        let final_nonce = u64_of(
            &self
                .rpc
                .call(
                    "eth_getTransactionCount",
                    json!([self.gas_tank().to_string(), settled_block]),
                )
                .await?,
            "eth_getTransactionCount",
        )?;
        let tank = self.gas_tank().to_checksum(None);
        for sweep in pending {
            let receipt = self
                .rpc
                .call("eth_getTransactionReceipt", json!([sweep.tx_hash]))
                .await?;
            if receipt.is_null() {
                if sweep.gas_tank == tank
                    && sweep
                        .tx_nonce
                        .and_then(|n| u64::try_from(n).ok())
                        .is_some_and(|n| n < final_nonce)
                {
                    // Its nonce was spent by another transaction: this one can never be mined.
                    self.finish(&sweep, "dropped", None, &[]).await?;
                    report.settled.push(sweep.id);
                    continue;
                }
                let raw = Bytes::from(sweep.raw_tx.clone().unwrap_or_default()).to_string();
                match self.rpc.call("eth_sendRawTransaction", json!([raw])).await {
                    Ok(_) => {}
                    Err(e) if already_known(&e) => {}
                    Err(e) => {
                        tracing::warn!(sweep = %sweep.id, error = %e, "sending the sweep again failed")
                    }
                }
                report.in_flight += 1;
                continue;
            }
            let block = u64_of(&receipt["blockNumber"], "eth_getTransactionReceipt")?;
            if head.saturating_sub(block) + 1 < self.confirmations {
                report.in_flight += 1;
                continue;
            }
            let succeeded = receipt["status"].as_str() == Some("0x1");
            let gas_used = u64_of(&receipt["gasUsed"], "eth_getTransactionReceipt")?;
            let price = receipt
                .get("effectiveGasPrice")
                .map(|p| u256_of(p, "eth_getTransactionReceipt"))
                .transpose()?
                .unwrap_or_default();
            let fee = Decimal::from_str(&(U256::from(gas_used) * price).to_string()).ok();
            let swept = if succeeded {
                self.swept_amounts(&sweep, &receipt).await?
            } else {
                Vec::new()
            };
            let status = if succeeded { "completed" } else { "failed" };
            let mined = Mined {
                block: i64::try_from(block).ok(),
                gas_used: i64::try_from(gas_used).ok(),
                fee,
            };
            let given_up = self.finish(&sweep, status, Some(mined), &swept).await?;
            report.given_up.extend(given_up);
            report.settled.push(sweep.id);
        }
        Ok(())
    }

    /// What the receipt's `Transfer` logs show reached the treasury from the sweep's addresses.
    async fn swept_amounts(
        &self,
        sweep: &SweepRow,
        receipt: &Value,
    ) -> Result<Vec<(String, Token, Decimal)>, SweepError> {
        let items = db::items(&self.db, std::slice::from_ref(&sweep.id)).await?;
        let by_address: BTreeMap<Address, String> = items
            .iter()
            .filter_map(|(_, i)| {
                let raw = crate::domain::address::parse_evm_address(&i.address).ok()?;
                Some((Address::from(raw), i.address.clone()))
            })
            .collect();
        let mut totals: BTreeMap<(String, Token), U256> = BTreeMap::new();
        let logs = receipt["logs"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        for log in logs {
            let Some(emitter) = log["address"]
                .as_str()
                .and_then(|a| Address::from_str(a).ok())
            else {
                continue;
            };
            let Some(token) = self.tokens.iter().find(|t| t.contract == emitter) else {
                continue;
            };
            let topics: Vec<B256> = log["topics"]
                .as_array()
                .map(|t| t.iter().filter_map(|x| x.as_str()?.parse().ok()).collect())
                .unwrap_or_default();
            let data = log["data"].as_str().and_then(hex_bytes).unwrap_or_default();
            let Ok(transfer) = delegate::Transfer::decode_raw_log(topics.iter().copied(), &data)
            else {
                continue;
            };
            if transfer.to != self.config.treasury {
                continue;
            }
            if let Some(address) = by_address.get(&transfer.from) {
                *totals.entry((address.clone(), token.currency)).or_default() += transfer.value;
            }
        }
        Ok(totals
            .into_iter()
            .filter_map(|((address, currency), value)| {
                let decimals = self
                    .tokens
                    .iter()
                    .find(|t| t.currency == currency)?
                    .decimals;
                Some((address, currency, token_amount(value, u32::from(decimals))?))
            })
            .collect())
    }

    async fn finish(
        &self,
        sweep: &SweepRow,
        status: &str,
        mined: Option<Mined>,
        swept: &[(String, Token, Decimal)],
    ) -> Result<Vec<String>, SweepError> {
        let mined = mined.unwrap_or_default();
        let outcome = Outcome {
            status,
            block_number: mined.block,
            gas_used: mined.gas_used,
            fee: mined.fee,
            swept,
        };
        // Mined, and nothing moved from an address: a token refused, a revert.
        let Some(given_up) =
            super::settle(&self.db, sweep, &outcome, |_| status != "dropped").await?
        else {
            return Ok(Vec::new());
        };
        if !given_up.is_empty() {
            tracing::warn!(sweeper = %self.name(), addresses = ?given_up,
                "sweeps moved nothing from these addresses {} times in a row (a token refuses them?): they wait for their next payment",
                db::MAX_FAILED_ATTEMPTS);
        }
        tracing::info!(sweeper = %self.name(), sweep = %sweep.id, status, "sweep settled");
        Ok(given_up)
    }

    /// Reads the candidates' state on chain in one batch, and sends the sweeps that are due.
    async fn sweep_due(&self, report: &mut SweepReport) -> Result<(), SweepError> {
        let candidates =
            db::candidates(&self.db, self.scope(), self.config.network, MAX_CANDIDATES).await?;
        if candidates.is_empty() {
            return Ok(());
        }
        let chain_id = self.chain_id().await?;
        let delegate = self.config.delegate;
        let per_address = 2 + self.tokens.len();
        let mut calls = Vec::with_capacity(1 + candidates.len() * per_address);
        calls.push(Call::block_number());
        for c in &candidates {
            calls.push(Call {
                method: "eth_getCode",
                params: json!([c.address, "latest"]),
            });
            calls.push(Call {
                method: "eth_getTransactionCount",
                params: json!([c.address, "latest"]),
            });
            let owner = Address::from_str(&c.address).unwrap_or_default();
            for t in &self.tokens {
                calls.push(Call {
                    method: "eth_call",
                    params: call_json(t.contract, &BalanceOf { owner }.abi_encode()),
                });
            }
        }
        let answers = self.rpc.batch(&calls).await?;
        if answers.len() != calls.len() {
            return Err(malformed("batch", "not one answer per call").into());
        }
        let head = match &answers[0] {
            Ok(raw) => crate::chain::rpc::parse_block_number(raw)?,
            Err(e) => return Err(e.clone().into()),
        };
        let authorizations = db::authorizations(
            &self.db,
            i64::try_from(chain_id).unwrap_or(i64::MAX),
            &delegate.to_checksum(None),
            &candidates
                .iter()
                .map(|c| c.address.clone())
                .collect::<Vec<_>>(),
        )
        .await?;
        let delegated_code = delegate::delegation_code(delegate);
        let mut checked = Vec::new();
        let mut planned = Vec::new();
        for (c, answers) in candidates.into_iter().zip(answers[1..].chunks(per_address)) {
            let text = |i: usize| -> Result<String, RpcError> {
                let raw = answers[i].as_ref().map_err(Clone::clone)?;
                serde_json::from_str::<String>(raw.get()).map_err(|_| {
                    malformed(
                        if i < 2 { "eth_getCode" } else { "eth_call" },
                        "not a string",
                    )
                })
            };
            let code = hex_bytes(&text(0)?).ok_or_else(|| malformed("eth_getCode", "not hex"))?;
            let nonce = parse_quantity(&text(1)?)
                .ok_or_else(|| malformed("eth_getTransactionCount", "nonce"))?;
            let mut balances = Vec::new();
            let mut unreadable = false;
            for (k, t) in self.tokens.iter().enumerate() {
                let bytes = hex_bytes(&text(2 + k)?).unwrap_or_default();
                let Ok(value) = BalanceOf::abi_decode_returns(&bytes) else {
                    // A node that is behind or pruned answers "0x": ask again next round.
                    unreadable = true;
                    continue;
                };
                if value.is_zero() {
                    continue;
                }
                if let Some(amount) = token_amount(value, u32::from(t.decimals)) {
                    balances.push((t.clone(), amount));
                }
            }
            // A node behind the newest transfer's block would show an old balance.
            let behind = c
                .through_block
                .is_some_and(|b| u64::try_from(b).unwrap_or(0) > head);
            if !balances.iter().any(|(_, a)| *a >= self.config.min_amount) {
                if unreadable || behind {
                    continue;
                }
                report.below_minimum += 1;
                checked.push((c.address.clone(), c.through));
                continue;
            }
            let authorization = if code == delegated_code {
                None
            } else {
                let Some(auth) = authorizations.iter().find(|a| a.address == c.address) else {
                    report.unauthorized.push(c.address.clone());
                    checked.push((c.address.clone(), c.through));
                    continue;
                };
                // An address delegated elsewhere (an older treasury's delegate) may be
                // pointed here by an authorization signed at its current nonce.
                let elsewhere = code.len() == 23 && code[..3] == delegate::DELEGATION_PREFIX;
                if u64::try_from(auth.nonce).ok() != Some(nonce) || !(code.is_empty() || elsewhere)
                {
                    report.stale.push(c.address.clone());
                    checked.push((c.address.clone(), c.through));
                    continue;
                }
                Some(signed_authorization(auth, chain_id, delegate)?)
            };
            planned.push(Planned {
                candidate: c,
                balances,
                authorization,
            });
        }
        let livemode = self.config.mode.livemode();
        db::mark_checked(&self.db, self.config.network, livemode, &checked).await?;
        if !report.stale.is_empty() {
            db::mark_stale(
                &self.db,
                i64::try_from(chain_id).unwrap_or(i64::MAX),
                &delegate.to_checksum(None),
                &report.stale,
            )
            .await?;
        }
        if !report.unauthorized.is_empty() || !report.stale.is_empty() {
            tracing::warn!(sweeper = %self.name(), unauthorized = report.unauthorized.len(),
                stale = report.stale.len(),
                "addresses with a balance to sweep have no usable authorization: sign more with `checkout-server sweep authorize` and import them");
        }
        if planned.is_empty() {
            return Ok(());
        }
        // Behind a load balancer "pending" may miss our own sweeps in flight.
        let tank = self.gas_tank().to_checksum(None);
        let in_flight = db::pending(&self.db, self.config.network, livemode)
            .await?
            .iter()
            .filter(|s| s.gas_tank == tank)
            .filter_map(|s| s.tx_nonce)
            .map(|n| u64::try_from(n).unwrap_or(0) + 1)
            .max()
            .unwrap_or(0);
        let mut nonce = self.tank_nonce("pending").await?.max(in_flight);
        for batch in planned.chunks(self.config.batch_size) {
            match self.send_batch(batch, nonce).await? {
                Some(id) => {
                    report.sent.push(id);
                    nonce += 1;
                }
                None => {
                    report.gas_price_too_high = true;
                    break;
                }
            }
        }
        Ok(())
    }

    /// Signs, records and sends one batch; `None` when the gas price is above the maximum.
    async fn send_batch(
        &self,
        batch: &[Planned],
        nonce: u64,
    ) -> Result<Option<String>, SweepError> {
        let tokens: BTreeSet<Address> = batch
            .iter()
            .flat_map(|p| p.balances.iter().map(|(t, _)| t.contract))
            .collect();
        let accounts: Vec<Address> = batch
            .iter()
            .map(|p| Address::from_str(&p.candidate.address).unwrap_or_default())
            .collect();
        let data = delegate::sweep_many_call(accounts, tokens.into_iter().collect());
        let authorizations: Vec<SignedAuthorization> = batch
            .iter()
            .filter_map(|p| p.authorization.clone())
            .collect();
        let (hash, raw) = match self
            .sign(
                self.config.delegate,
                data,
                authorizations.clone(),
                nonce,
                batch.len(),
            )
            .await?
        {
            Some(signed) => signed,
            None => return Ok(None),
        };
        let id = random_id("sw_");
        let items: Vec<ItemRow> = batch
            .iter()
            .flat_map(|p| {
                p.balances.iter().map(|(t, amount)| ItemRow {
                    address: p.candidate.address.clone(),
                    address_index: p.candidate.address_index,
                    currency: t.currency,
                    contract: t.contract.to_checksum(None),
                    expected: *amount,
                    swept: None,
                    authorized: p.authorization.is_some(),
                    through_transaction: p.candidate.through,
                })
            })
            .collect();
        let tank = evm_checksum(&self.gas_tank().0 .0);
        let treasury = self.config.treasury.to_checksum(None);
        let delegate = self.config.delegate.to_checksum(None);
        let hash_text = hash.to_string();
        let sweep = NewSweep {
            id: &id,
            scope: self.scope(),
            network: self.config.network,
            treasury: &treasury,
            delegate: &delegate,
            gas_tank: &tank,
            tx_hash: &hash_text,
            tx_nonce: i64::try_from(nonce).unwrap_or(i64::MAX),
            raw_tx: &raw,
            authorizations: i32::try_from(authorizations.len()).unwrap_or(i32::MAX),
        };
        db::insert(&self.db, &sweep, &items).await?;
        let raw_text = Bytes::from(raw).to_string();
        match self
            .rpc
            .call("eth_sendRawTransaction", json!([raw_text]))
            .await
        {
            Ok(_) => {}
            Err(e) if already_known(&e) => {}
            // The node said no (too little gas in the tank, a fee too low): never sent.
            Err(e @ RpcError::Node { .. }) => {
                if let Some(row) = db::find(&self.db, self.scope(), &id).await? {
                    self.finish(&row, "dropped", None, &[]).await?;
                }
                return Err(SweepError::Refused(e.to_string()));
            }
            // No answer: it may have been taken. It stays pending; settling sends it again,
            // or drops it once its nonce is spent by another transaction.
            Err(e) => return Err(e.into()),
        }
        tracing::info!(sweeper = %self.name(), sweep = %id, tx = %hash_text,
            addresses = batch.len(), authorizations = authorizations.len(), "sweep sent");
        Ok(Some(id))
    }

    /// Sends a transaction from the gas tank (for the deployment); returns its hash.
    async fn send_tx(
        &self,
        to: Address,
        data: Bytes,
        authorizations: Vec<SignedAuthorization>,
        nonce: u64,
    ) -> Result<(B256, Vec<u8>), SweepError> {
        let (hash, raw) = self
            .sign(to, data, authorizations, nonce, 1)
            .await?
            .ok_or_else(|| {
                SweepError::Refused(format!(
                    "the gas price is above max_gas_price_gwei ({})",
                    self.config.max_gas_price_gwei
                ))
            })?;
        let raw_text = Bytes::from(raw.clone()).to_string();
        self.rpc
            .call("eth_sendRawTransaction", json!([raw_text]))
            .await
            .map_err(|e| SweepError::Refused(e.to_string()))?;
        Ok((hash, raw))
    }

    /// A signed transaction from the gas tank: type 4 with authorizations, else EIP-1559.
    /// `None` when the gas price is above the configured maximum.
    async fn sign(
        &self,
        to: Address,
        data: Bytes,
        authorizations: Vec<SignedAuthorization>,
        nonce: u64,
        accounts: usize,
    ) -> Result<Option<(B256, Vec<u8>)>, SweepError> {
        let chain_id = self.chain_id().await?;
        let block = self
            .rpc
            .call("eth_getBlockByNumber", json!(["latest", false]))
            .await?;
        let base_fee = block
            .get("baseFeePerGas")
            .map(|v| u256_of(v, "eth_getBlockByNumber"))
            .transpose()?
            .unwrap_or_default();
        let tip = match self.rpc.call("eth_maxPriorityFeePerGas", json!([])).await {
            Ok(v) => u256_of(&v, "eth_maxPriorityFeePerGas")?,
            Err(_) => U256::from(1_000_000_000u64),
        };
        let cap = U256::from(self.config.max_gas_price_wei());
        if base_fee + tip > cap {
            tracing::info!(sweeper = %self.name(), base_fee = %base_fee, tip = %tip, cap = %cap,
                "gas price above max_gas_price_gwei: the sweep waits");
            return Ok(None);
        }
        let max_fee = (base_fee * U256::from(2) + tip).min(cap);
        let mut request = json!({
            "from": self.gas_tank().to_string(),
            "to": to.to_string(),
            "data": data.to_string(),
        });
        if !authorizations.is_empty() {
            request["authorizationList"] =
                Value::Array(authorizations.iter().map(authorization_json).collect());
        }
        let accounts = u64::try_from(accounts.max(1)).unwrap_or(u64::MAX);
        let gas_limit = match self.rpc.call("eth_estimateGas", json!([request])).await {
            Ok(v) => u64_of(&v, "eth_estimateGas")?.saturating_mul(5) / 4,
            Err(e) => {
                tracing::debug!(error = %e, "eth_estimateGas failed: using the fallback bound");
                FALLBACK_GAS_PER_ADDRESS
                    .saturating_mul(accounts)
                    .saturating_add(FALLBACK_GAS_BASE)
            }
        };
        let max_fee = u128::try_from(max_fee).unwrap_or(u128::MAX);
        let tip = u128::try_from(tip).unwrap_or(u128::MAX).min(max_fee);
        let signed = if authorizations.is_empty() {
            let tx = TxEip1559 {
                chain_id,
                nonce,
                gas_limit,
                max_fee_per_gas: max_fee,
                max_priority_fee_per_gas: tip,
                to: TxKind::Call(to),
                value: U256::ZERO,
                access_list: Default::default(),
                input: data,
            };
            self.signed(tx)?
        } else {
            let tx = TxEip7702 {
                chain_id,
                nonce,
                gas_limit,
                max_fee_per_gas: max_fee,
                max_priority_fee_per_gas: tip,
                to,
                value: U256::ZERO,
                access_list: Default::default(),
                authorization_list: authorizations,
                input: data,
            };
            self.signed(tx)?
        };
        Ok(Some((*signed.tx_hash(), signed.encoded_2718())))
    }

    /// `tx` signed by the gas tank.
    fn signed<T>(&self, tx: T) -> Result<TxEnvelope, SweepError>
    where
        T: SignableTransaction<alloy_primitives::Signature>,
        TxEnvelope: From<alloy_consensus::Signed<T>>,
    {
        let signature = self
            .tank
            .sign_hash_sync(&tx.signature_hash())
            .map_err(|e| SweepError::Refused(e.to_string()))?;
        Ok(TxEnvelope::from(tx.into_signed(signature)))
    }
}

#[derive(Default)]
struct Mined {
    block: Option<i64>,
    gas_used: Option<i64>,
    fee: Option<Decimal>,
}

fn signed_authorization(
    row: &db::AuthorizationRow,
    chain_id: u64,
    delegate: Address,
) -> Result<SignedAuthorization, SweepError> {
    let word = |bytes: &[u8]| U256::try_from_be_slice(bytes).unwrap_or_default();
    let entry = super::authorize::SignedEntry {
        index: u32::try_from(row.address_index).unwrap_or(u32::MAX),
        address: Address::from_str(&row.address).unwrap_or_default(),
        nonce: u64::try_from(row.nonce).unwrap_or(u64::MAX),
        y_parity: u8::try_from(row.y_parity).unwrap_or(0),
        r: word(&row.r),
        s: word(&row.s),
    };
    Ok(entry.signed(chain_id, delegate))
}

/// Wei as the native coin (18 decimals), for the balance gauge and messages.
pub fn native_units(wei: U256) -> Decimal {
    token_amount(wei, 18).unwrap_or(Decimal::MAX)
}
