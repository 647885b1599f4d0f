//! `sweep broadcast signed.json`: checks every signed transaction against the plan, records
//! the sweep with all its transactions, then sends them in order (activation and funding,
//! energy delegation, the USDT transfers, undelegation), each step waiting until its
//! transactions are as deep as the network's confirmations. Run again, it resumes where it
//! stopped; a sent transaction is never signed twice (the server's own are rebuilt only when
//! they expired unsent).

use super::api::{Broadcast, TransactionInfo, TronApi};
use super::plan::{
    balance_answer, balance_call, block_millis, stake_for_energy, Plan, StakingSigner,
    BANDWIDTH_PRICE_SUN, ENERGY_TO_NEW_HOLDER, TRANSFER_BANDWIDTH, UNDELEGATION_LIFETIME_MS,
};
use super::protocol::{self as tron, Raw, Reference, Transaction};
use super::sign::{expected, verified, SignedPlan};
use crate::chain::rpc::{Call, RetryPolicy, RpcClient, RpcError};
use crate::chain::watcher::{rpc_client, token_amount};
use crate::config::{EnergyMode, NetworkConfig, TronSweepConfig};
use crate::db::sweeps::{self as db, ItemRow, NewTronSweep, Outcome, StepRow, SweepRow};
use crate::db::Scope;
use crate::domain::address::{parse_tron_address, tron_base58};
use crate::domain::money::Token;
use crate::domain::network::Network;
use crate::state::AppState;
use alloy_primitives::U256;
use alloy_sol_types::SolEvent;
use k256::ecdsa::SigningKey;
use prost::Message;
use rust_decimal::Decimal;
use sqlx::PgPool;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Steps in the order they are sent.
pub const PHASES: [&[&str]; 4] = [
    &["activation", "funding"],
    &["delegation"],
    &["transfer"],
    &["undelegation"],
];
/// A plan is not started with less time than this left before it expires (its steps wait
/// for confirmations one after the other).
const MIN_TIME_TO_START: chrono::Duration = chrono::Duration::minutes(10);
/// A transaction not in a block this long after it expired never will be.
const EXPIRY_GRACE_MS: i64 = 60_000;
/// While it waits, a transaction in no block yet is sent again every this many polls.
const RESEND_EVERY: u64 = 10;
/// A busy node is asked again this many times before the broadcast stops (to be resumed).
const BUSY_RETRIES: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum BroadcastError {
    #[error("RPC: {0}")]
    Rpc(#[from] RpcError),
    #[error("the node's HTTP API: {0}")]
    Api(#[from] super::api::ApiError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// The file does not match the configuration, or a transaction is not the plan's.
    #[error("{0}")]
    Invalid(String),
    #[error("the plan expired at {0} before anything was sent: make and sign a new plan")]
    Expired(chrono::DateTime<chrono::Utc>),
    #[error("another process is broadcasting this plan right now")]
    Busy,
    #[error("the node stays busy ({0}): run the broadcast again to resume")]
    NodeBusy(String),
}

/// What a broadcast did.
#[derive(Debug, Clone)]
pub struct BroadcastReport {
    pub sweep: SweepRow,
    pub items: Vec<ItemRow>,
    pub steps: Vec<StepRow>,
    /// Addresses left out at the start: their balance moved, or another sweep has them.
    pub left_out: Vec<String>,
}

impl BroadcastReport {
    /// Addresses still holding energy lent by this sweep: its undelegation did not confirm
    /// (take it back by hand, or run the broadcast again).
    pub fn energy_outstanding(&self) -> Vec<String> {
        lent_not_returned(&self.steps)
            .into_iter()
            .map(str::to_owned)
            .collect()
    }
}

/// Addresses whose delegation confirmed and whose undelegation did not.
fn lent_not_returned(steps: &[StepRow]) -> Vec<&str> {
    let confirmed = |kind: &str| -> BTreeSet<&str> {
        steps
            .iter()
            .filter(|s| s.kind == kind && s.status == "confirmed")
            .map(|s| s.address.as_str())
            .collect()
    };
    let back = confirmed("undelegation");
    confirmed("delegation")
        .into_iter()
        .filter(|a| !back.contains(a))
        .collect()
}

pub struct Broadcaster {
    db: PgPool,
    config: TronSweepConfig,
    net: NetworkConfig,
    rpc: RpcClient,
    api: TronApi,
    gas_wallet: SigningKey,
    staking: Option<SigningKey>,
    confirmations: u64,
    poll: Duration,
}

fn signing_key(hex_text: &str) -> anyhow::Result<SigningKey> {
    let bytes = hex::decode(hex_text)?;
    Ok(SigningKey::from_slice(&bytes)?)
}

/// A step's row, not yet sent.
fn step(position: usize, kind: &str, address: &str, raw: Raw, signature: [u8; 65]) -> StepRow {
    StepRow {
        position: i32::try_from(position).unwrap_or(i32::MAX),
        kind: kind.to_owned(),
        address: address.to_owned(),
        tx_id: hex::encode(tron::tx_id(&raw)),
        expiration: raw.expiration,
        raw_tx: tron::signed_transaction(raw, signature),
        status: "pending".to_owned(),
        error: None,
        block_number: None,
        energy_used: None,
        fee: None,
    }
}

impl Broadcaster {
    pub fn new(state: &AppState, config: &TronSweepConfig) -> anyhow::Result<Self> {
        let net = state.config.network(config.network, config.mode).clone();
        let policy = RetryPolicy::default();
        Ok(Self {
            db: state.db.clone(),
            rpc: rpc_client(&net, policy.clone())?,
            api: TronApi::new(&config.http_urls, policy.timeout)?,
            gas_wallet: signing_key(config.gas_wallet_key.expose())?,
            staking: match &config.staking_key {
                Some(key) => Some(signing_key(key.expose())?),
                None => None,
            },
            confirmations: u64::from(net.confirmations.max(1)),
            poll: net.poll_interval,
            config: config.clone(),
            net,
        })
    }

    /// The configuration's view of a plan: it must be for this very table.
    fn check_plan(&self, plan: &Plan) -> Result<(), BroadcastError> {
        let config = &self.config;
        let token = self.net.token(Token::Usdt).map(|t| t.contract.as_str());
        let checks = [
            (plan.network == Network::Tron, "the network"),
            (plan.livemode == config.mode.livemode(), "the mode"),
            (plan.merchant == config.merchant, "the merchant"),
            (
                plan.treasury == tron_base58(&config.treasury),
                "the treasury",
            ),
            (
                plan.gas_wallet == tron_base58(&config.gas_wallet),
                "the gas wallet",
            ),
            (plan.energy_mode == config.energy, "the energy mode"),
            (
                plan.staking_account == config.staking_account.as_ref().map(tron_base58),
                "the staking account",
            ),
            (
                Some(plan.token.contract.as_str()) == token,
                "the USDT contract",
            ),
        ];
        if let Some((_, what)) = checks.iter().find(|(ok, _)| !ok) {
            return Err(BroadcastError::Invalid(format!(
                "the plan's {what} is not the configuration's ([sweep.TRON.{}]): make a new plan",
                config.mode.as_str()
            )));
        }
        Ok(())
    }

    /// Sends a signed plan (or resumes it) and waits until it settles.
    pub async fn broadcast(&self, signed: &SignedPlan) -> Result<BroadcastReport, BroadcastError> {
        let plan = &signed.plan;
        self.check_plan(plan)?;
        let expected =
            expected(plan).map_err(|m| BroadcastError::Invalid(format!("the plan: {m}")))?;
        let owners: BTreeMap<String, [u8; 20]> = plan
            .items
            .iter()
            .filter_map(|i| Some((i.address.clone(), i.account().ok()?)))
            .collect();
        let transfers = verified(
            &signed.transfers,
            expected.transfers,
            |a| owners.get(a).copied(),
            "transfer",
        )
        .map_err(BroadcastError::Invalid)?;
        let offline = plan.staking_signer == Some(StakingSigner::Offline);
        let staking = self.config.staking_account;
        let (delegations, undelegations) = if offline {
            (
                verified(
                    &signed.delegations,
                    expected.delegations,
                    |_| staking,
                    "delegation",
                )
                .map_err(BroadcastError::Invalid)?,
                verified(
                    &signed.undelegations,
                    expected.undelegations,
                    |_| staking,
                    "undelegation",
                )
                .map_err(BroadcastError::Invalid)?,
            )
        } else if !signed.delegations.is_empty() || !signed.undelegations.is_empty() {
            return Err(BroadcastError::Invalid(
                "the file holds delegations, but the server signs this plan's".into(),
            ));
        } else {
            (Vec::new(), Vec::new())
        };

        // One broadcaster per plan: the lock lives as long as this connection.
        let mut lock = self.db.acquire().await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))")
            .bind(format!("tron-sweep:{}", plan.id))
            .fetch_one(&mut *lock)
            .await?;
        if !locked {
            return Err(BroadcastError::Busy);
        }
        let result = self.run(plan, transfers, delegations, undelegations).await;
        let _ = sqlx::query("SELECT pg_advisory_unlock(hashtext($1))")
            .bind(format!("tron-sweep:{}", plan.id))
            .execute(&mut *lock)
            .await;
        result
    }

    async fn run(
        &self,
        plan: &Plan,
        transfers: Vec<(String, Transaction)>,
        delegations: Vec<(String, Transaction)>,
        undelegations: Vec<(String, Transaction)>,
    ) -> Result<BroadcastReport, BroadcastError> {
        let mut left_out = Vec::new();
        if db::find_by_id(&self.db, &plan.id).await?.is_none() {
            left_out = self
                .record(plan, transfers, delegations, undelegations)
                .await?;
        }
        let mut sweep = db::find_by_id(&self.db, &plan.id)
            .await?
            .ok_or_else(|| BroadcastError::Invalid("the sweep was not recorded".into()))?;
        if sweep.status == "pending" {
            let mut steps: Vec<StepRow> = db::steps(&self.db, std::slice::from_ref(&plan.id))
                .await?
                .into_iter()
                .map(|(_, s)| s)
                .collect();
            for phase in PHASES {
                self.run_phase(plan, &mut steps, phase).await?;
            }
            self.settle(plan, &sweep, &steps).await?;
            sweep = db::find_by_id(&self.db, &plan.id).await?.unwrap_or(sweep);
        }
        let items = db::items(&self.db, std::slice::from_ref(&plan.id))
            .await?
            .into_iter()
            .map(|(_, i)| i)
            .collect();
        let steps = db::steps(&self.db, std::slice::from_ref(&plan.id))
            .await?
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        Ok(BroadcastReport {
            sweep,
            items,
            steps,
            left_out,
        })
    }

    /// The plan's items are the merchant's deposit addresses waiting for a sweep, as the
    /// database knows them, and ask for no more TRX or stake than the configuration allows:
    /// the file travelled through an offline machine, so its money fields are not trusted.
    async fn check_items(&self, plan: &Plan) -> Result<(), BroadcastError> {
        let config = &self.config;
        if super::plan::sun(config.fee_limit_trx) != Some(plan.fee_limit_sun) {
            return Err(BroadcastError::Invalid(
                "the plan's fee limit is not the configuration's".into(),
            ));
        }
        let scope = Scope {
            merchant_id: config.merchant,
            livemode: config.mode.livemode(),
        };
        let candidates: BTreeMap<String, db::Candidate> =
            db::candidates(&self.db, scope, Network::Tron, i64::MAX)
                .await?
                .into_iter()
                .map(|c| (c.address.clone(), c))
                .collect();
        let activation = super::plan::sun(config.activation_trx).unwrap_or(0);
        let most_sent = match config.energy {
            EnergyMode::Burn => activation.max(
                super::plan::sun(config.fee_limit_trx)
                    .unwrap_or(0)
                    .saturating_add(
                        i64::try_from(TRANSFER_BANDWIDTH * BANDWIDTH_PRICE_SUN).unwrap_or(0),
                    ),
            ),
            _ => activation,
        };
        let most_delegated = match (config.energy, config.staking_account) {
            (EnergyMode::Delegate, Some(staking)) => {
                let r = self.api.account_resource(&staking).await?;
                stake_for_energy(
                    ENERGY_TO_NEW_HOLDER,
                    r.total_energy_limit,
                    r.total_energy_weight,
                )
                .unwrap_or(0)
            }
            _ => 0,
        };
        let mut seen = BTreeSet::new();
        for item in &plan.items {
            let bad =
                |why: &str| BroadcastError::Invalid(format!("the plan's {}: {why}", item.address));
            let candidate = candidates
                .get(&item.address)
                .ok_or_else(|| bad("not a deposit address of the merchant waiting for a sweep"))?;
            if !seen.insert(&item.address) {
                return Err(bad("listed twice"));
            }
            if candidate.address_index != i64::from(item.address_index)
                || item.through_transaction > candidate.through
            {
                return Err(bad("its index or transfers are not the database's"));
            }
            if super::plan::sun(item.trx_sent).is_none_or(|sent| sent < 0 || sent > most_sent) {
                return Err(bad("more TRX than the configuration sends"));
            }
            if item
                .delegated_sun
                .is_some_and(|d| d <= 0 || d > most_delegated)
            {
                return Err(bad("more stake than its transfer needs"));
            }
        }
        Ok(())
    }

    /// A fresh reference block for the server's own transactions.
    async fn reference(&self, kind: &str) -> Result<Reference, BroadcastError> {
        let head = self.rpc.block_number().await?;
        let block = self
            .rpc
            .block(head)
            .await?
            .ok_or_else(|| BroadcastError::Invalid(format!("the node has no block {head}")))?;
        let block_ms = block_millis(block.timestamp);
        let mut window = i64::try_from(self.config.signing_window.as_millis()).unwrap_or(i64::MAX);
        if kind == "undelegation" {
            // Sent last, after the others' confirmations: as long a life as the network allows.
            window = window.max(UNDELEGATION_LIFETIME_MS);
        }
        Ok(Reference::from_block(
            head,
            &block.hash.0,
            chrono::Utc::now().timestamp_millis(),
            block_ms.saturating_add(window),
        ))
    }

    fn sign(&self, raw: &Raw, key: &SigningKey) -> Result<[u8; 65], BroadcastError> {
        tron::sign(raw, key).map_err(|e| BroadcastError::Invalid(format!("cannot sign: {e}")))
    }

    /// The server's own transaction of kind `kind` for an item (activation, funding,
    /// delegations it signs), against `reference`.
    fn own_transaction(
        &self,
        kind: &str,
        reference: &Reference,
        receiver: &[u8; 20],
        amount: i64,
    ) -> Result<(Raw, [u8; 65]), BroadcastError> {
        let gas_wallet = tron::account_of(&self.gas_wallet);
        let (raw, key) = match kind {
            "activation" | "funding" => (
                tron::trx_transfer(reference, &gas_wallet, receiver, amount),
                &self.gas_wallet,
            ),
            "delegation" | "undelegation" => {
                let key = self.staking.as_ref().ok_or_else(|| {
                    BroadcastError::Invalid("the server has no staking key".into())
                })?;
                let owner = tron::account_of(key);
                let raw = if kind == "delegation" {
                    tron::delegate_energy(reference, &owner, receiver, amount)
                } else {
                    tron::undelegate_energy(reference, &owner, receiver, amount)
                };
                (raw, key)
            }
            other => {
                return Err(BroadcastError::Invalid(format!(
                    "no own {other} transaction"
                )))
            }
        };
        let signature = self.sign(&raw, key)?;
        Ok((raw, signature))
    }

    /// Leaves out items whose balance moved or that another sweep has, then records the
    /// sweep with every transaction signed. Returns the addresses left out.
    async fn record(
        &self,
        plan: &Plan,
        transfers: Vec<(String, Transaction)>,
        delegations: Vec<(String, Transaction)>,
        undelegations: Vec<(String, Transaction)>,
    ) -> Result<Vec<String>, BroadcastError> {
        let now = chrono::Utc::now();
        if plan.expires_at() - MIN_TIME_TO_START <= now {
            return Err(BroadcastError::Expired(plan.expires_at()));
        }
        self.check_items(plan).await?;
        let contract = parse_tron_address(&plan.token.contract)
            .map_err(|m| BroadcastError::Invalid(format!("the USDT contract {m}")))?;
        let calls: Vec<Call> = plan
            .items
            .iter()
            .map(|i| balance_call(&contract, i.account().unwrap_or_default()))
            .collect();
        let answers = if calls.is_empty() {
            Vec::new()
        } else {
            self.rpc.batch(&calls).await?
        };
        let mut kept = BTreeSet::new();
        let mut left_out = Vec::new();
        for (i, item) in plan.items.iter().enumerate() {
            let balance = answers.get(i).and_then(|a| balance_answer(a).ok());
            let planned = item.units().map_err(BroadcastError::Invalid)?;
            // (An address in another sweep in flight is no candidate: `check_items` refused it.)
            if balance.is_none_or(|b| b < planned) {
                left_out.push(item.address.clone());
            } else {
                kept.insert(item.address.clone());
            }
        }

        if kept.is_empty() {
            return Err(BroadcastError::Invalid(format!(
                "nothing to sweep: {} (balance moved since the plan, or in another sweep)",
                if left_out.is_empty() {
                    "the plan has no address".to_owned()
                } else {
                    left_out.join(", ")
                }
            )));
        }
        let reference = self.reference("activation").await?;
        let undelegation_reference = self.reference("undelegation").await?;
        let mut steps = Vec::new();
        for item in plan.items.iter().filter(|i| kept.contains(&i.address)) {
            let sent = super::plan::sun(item.trx_sent).unwrap_or(0);
            if sent > 0 {
                let kind = if item.activated {
                    "funding"
                } else {
                    "activation"
                };
                let (raw, signature) = self.own_transaction(
                    kind,
                    &reference,
                    &item.account().unwrap_or_default(),
                    sent,
                )?;
                steps.push(step(steps.len(), kind, &item.address, raw, signature));
            }
        }
        let signed_step =
            |steps: &mut Vec<StepRow>, kind: &str, (address, tx): (String, Transaction)| {
                if !kept.contains(&address) {
                    return;
                }
                let Some(raw) = tx.raw_data else { return };
                let Some(signature) = tx
                    .signature
                    .first()
                    .and_then(|s| <[u8; 65]>::try_from(s.as_slice()).ok())
                else {
                    return;
                };
                steps.push(step(steps.len(), kind, &address, raw, signature));
            };
        // Energy lent around the transfers: signed offline (in the file), or here.
        let energy_steps = |steps: &mut Vec<StepRow>,
                            kind: &str,
                            reference: &Reference,
                            signed: Vec<(String, Transaction)>|
         -> Result<(), BroadcastError> {
            if plan.energy_mode != EnergyMode::Delegate {
                return Ok(());
            }
            if !signed.is_empty() {
                for s in signed {
                    signed_step(steps, kind, s);
                }
                return Ok(());
            }
            for item in plan.items.iter().filter(|i| kept.contains(&i.address)) {
                let Some(balance) = item.delegated_sun else {
                    continue;
                };
                let receiver = item.account().unwrap_or_default();
                let (raw, signature) = self.own_transaction(kind, reference, &receiver, balance)?;
                steps.push(step(steps.len(), kind, &item.address, raw, signature));
            }
            Ok(())
        };
        energy_steps(&mut steps, "delegation", &reference, delegations)?;
        for t in transfers {
            signed_step(&mut steps, "transfer", t);
        }
        energy_steps(
            &mut steps,
            "undelegation",
            &undelegation_reference,
            undelegations,
        )?;
        let items: Vec<ItemRow> = plan
            .items
            .iter()
            .filter(|i| kept.contains(&i.address))
            .map(|i| ItemRow {
                address: i.address.clone(),
                address_index: i64::from(i.address_index),
                currency: Token::Usdt,
                contract: plan.token.contract.clone(),
                expected: i.amount,
                swept: None,
                authorized: false,
                through_transaction: i.through_transaction,
            })
            .collect();
        let sweep = NewTronSweep {
            id: &plan.id,
            scope: Scope {
                merchant_id: plan.merchant,
                livemode: plan.livemode,
            },
            treasury: &plan.treasury,
            staking_account: plan.staking_account.as_deref(),
            gas_wallet: &plan.gas_wallet,
            energy_mode: plan.energy_mode.as_str(),
        };
        match db::insert_tron(&self.db, &sweep, &items, &steps).await? {
            db::TronInsert::InFlight(addresses) => Err(BroadcastError::Invalid(format!(
                "another sweep in flight holds {}: let it finish, then make a new plan",
                addresses.join(", ")
            ))),
            db::TronInsert::Inserted | db::TronInsert::Exists => Ok(left_out),
        }
    }

    /// Sends the phase's pending transactions whose address's earlier steps all confirmed,
    /// then waits until each is confirmed or failed.
    async fn run_phase(
        &self,
        plan: &Plan,
        steps: &mut [StepRow],
        kinds: &[&str],
    ) -> Result<(), BroadcastError> {
        // Addresses whose earlier steps did not all confirm are left alone, except that energy
        // lent is always taken back.
        let first = steps
            .iter()
            .position(|s| kinds.contains(&s.kind.as_str()))
            .unwrap_or(steps.len());
        let blocked: BTreeSet<String> = steps[..first]
            .iter()
            .filter(|s| s.status != "confirmed")
            .filter(|s| !(kinds.contains(&"undelegation") && s.kind == "transfer"))
            .map(|s| s.address.clone())
            .collect();
        for step in steps.iter_mut() {
            if !kinds.contains(&step.kind.as_str()) || step.status != "pending" {
                continue;
            }
            if blocked.contains(&step.address) {
                step.status = "skipped".into();
                step.error = Some("an earlier step for this address did not confirm".into());
                db::update_step(&self.db, &plan.id, step).await?;
                continue;
            }
            self.send(plan, step).await?;
        }
        for round in 1u64.. {
            let waiting: Vec<usize> = (0..steps.len())
                .filter(|&i| kinds.contains(&steps[i].kind.as_str()) && steps[i].status == "sent")
                .collect();
            if waiting.is_empty() {
                return Ok(());
            }
            let head = self.rpc.block_number().await?;
            for i in waiting {
                self.check(plan, &mut steps[i], head, round % RESEND_EVERY == 0)
                    .await?;
            }
            if steps
                .iter()
                .any(|s| kinds.contains(&s.kind.as_str()) && s.status == "sent")
            {
                tokio::time::sleep(self.poll.max(Duration::from_millis(100))).await;
            }
        }
        Ok(())
    }

    /// Whether the server signed this step (and may sign it again).
    fn is_own(&self, plan: &Plan, step: &StepRow) -> bool {
        step.kind != "transfer"
            && !(plan.staking_signer == Some(StakingSigner::Offline)
                && step.kind.ends_with("delegation"))
    }

    /// The time of block `number`, in milliseconds.
    async fn chain_time(&self, number: u64) -> Result<i64, BroadcastError> {
        let block =
            self.rpc.block(number).await?.ok_or_else(|| {
                BroadcastError::Invalid(format!("the node has no block {number}"))
            })?;
        Ok(block_millis(block.timestamp))
    }

    async fn send(&self, plan: &Plan, step: &mut StepRow) -> Result<(), BroadcastError> {
        let now = chrono::Utc::now().timestamp_millis();
        if step.expiration <= now + 5_000 {
            // Recorded as unsent, yet it may have reached a node before a crash: once it can
            // no longer be included, the chain says whether it was.
            let wait = step.expiration + EXPIRY_GRACE_MS - now;
            if wait > 0 {
                tokio::time::sleep(Duration::from_millis(u64::try_from(wait).unwrap_or(0))).await;
            }
            if self.api.transaction_info(&tx_id_of(step)?).await?.is_some() {
                step.status = "sent".into();
                db::update_step(&self.db, &plan.id, step).await?;
                return Ok(());
            }
            if !self.is_own(plan, step) {
                step.status = "failed".into();
                step.error = Some("expired before it was sent: sign a new plan".into());
                db::update_step(&self.db, &plan.id, step).await?;
                return Ok(());
            }
            // The server's own transaction, never sent: signed again on a fresh block.
            let old = Transaction::decode(step.raw_tx.as_slice()).map_err(|_| {
                BroadcastError::Invalid("a recorded transaction does not decode".into())
            })?;
            let amount = own_amount(&old).ok_or_else(|| {
                BroadcastError::Invalid("a recorded transaction is not the server's".into())
            })?;
            let receiver = parse_tron_address(&step.address).map_err(BroadcastError::Invalid)?;
            let reference = self.reference(&step.kind).await?;
            let (raw, signature) =
                self.own_transaction(&step.kind, &reference, &receiver, amount)?;
            step.tx_id = hex::encode(tron::tx_id(&raw));
            step.expiration = raw.expiration;
            step.raw_tx = tron::signed_transaction(raw, signature);
            db::update_step(&self.db, &plan.id, step).await?;
        }
        let transaction = Transaction::decode(step.raw_tx.as_slice()).map_err(|_| {
            BroadcastError::Invalid("a recorded transaction does not decode".into())
        })?;
        let mut tries = 0;
        loop {
            match self.api.broadcast(&transaction).await? {
                Broadcast::Accepted => {
                    step.status = "sent".into();
                    break;
                }
                Broadcast::Refused { code, message } => {
                    // Refused now, but perhaps in a block already (sent before a crash).
                    if self.api.transaction_info(&tx_id_of(step)?).await?.is_some() {
                        step.status = "sent".into();
                        break;
                    }
                    tracing::warn!(sweep = %plan.id, tx = %step.tx_id, %code, %message, "the node refused a sweep transaction");
                    step.status = "failed".into();
                    step.error = Some(if message.is_empty() {
                        code
                    } else {
                        format!("{code}: {message}")
                    });
                    break;
                }
                Broadcast::Busy { code, message } => {
                    tries += 1;
                    if tries > BUSY_RETRIES {
                        return Err(BroadcastError::NodeBusy(format!("{code} {message}")));
                    }
                    tokio::time::sleep(self.poll.max(Duration::from_millis(200)) * tries).await;
                }
            }
        }
        db::update_step(&self.db, &plan.id, step).await?;
        Ok(())
    }

    /// Settles a sent step once it is deep enough, or fails it once it can no longer be mined.
    async fn check(
        &self,
        plan: &Plan,
        step: &mut StepRow,
        head: u64,
        resend: bool,
    ) -> Result<(), BroadcastError> {
        match self.api.transaction_info(&tx_id_of(step)?).await? {
            None => {
                if chrono::Utc::now().timestamp_millis() > step.expiration + EXPIRY_GRACE_MS
                    && self.chain_time(head).await? > step.expiration + EXPIRY_GRACE_MS
                {
                    if self.is_own(plan, step) {
                        // Never included: the server signs it again on a fresh block.
                        step.status = "pending".into();
                        return self.send(plan, step).await;
                    }
                    step.status = "failed".into();
                    step.error = Some("expired: it was never included in a block".into());
                    db::update_step(&self.db, &plan.id, step).await?;
                } else if resend {
                    // A node may have dropped it: the same bytes again (a duplicate is fine).
                    let transaction =
                        Transaction::decode(step.raw_tx.as_slice()).map_err(|_| {
                            BroadcastError::Invalid("a recorded transaction does not decode".into())
                        })?;
                    if let Broadcast::Refused { code, message } =
                        self.api.broadcast(&transaction).await?
                    {
                        tracing::warn!(sweep = %plan.id, tx = %step.tx_id, %code, %message,
                            "sent again, a sweep transaction is refused");
                    }
                }
            }
            Some(info) => {
                if head + 1 < info.block_number + self.confirmations {
                    return Ok(());
                }
                self.record_result(plan, step, &info).await?;
            }
        }
        Ok(())
    }

    async fn record_result(
        &self,
        plan: &Plan,
        step: &mut StepRow,
        info: &TransactionInfo,
    ) -> Result<(), BroadcastError> {
        step.block_number = i64::try_from(info.block_number).ok();
        step.fee = Some(Decimal::from(info.fee.max(0)));
        step.energy_used = Some(info.energy_used.max(0));
        if info.succeeded {
            step.status = "confirmed".into();
        } else {
            step.status = "failed".into();
            step.error = info.failure.clone();
        }
        if step.kind == "transfer" {
            let swept = if info.succeeded {
                self.swept(plan, step, info)
            } else {
                Decimal::ZERO
            };
            db::set_swept(&self.db, &plan.id, &step.address, Token::Usdt, swept).await?;
        }
        db::update_step(&self.db, &plan.id, step).await?;
        Ok(())
    }

    /// What the transfer's `Transfer` logs moved from the address to the treasury.
    fn swept(&self, plan: &Plan, step: &StepRow, info: &TransactionInfo) -> Decimal {
        let (Ok(contract), Ok(from)) = (
            parse_tron_address(&plan.token.contract),
            parse_tron_address(&step.address),
        ) else {
            return Decimal::ZERO;
        };
        let topic = crate::sweep::delegate::Transfer::SIGNATURE_HASH.0;
        let word = |a: &[u8; 20]| {
            let mut w = [0u8; 32];
            w[12..].copy_from_slice(a);
            w
        };
        let units: U256 = info
            .logs
            .iter()
            .filter(|l| {
                l.address == contract
                    && l.topics.len() == 3
                    && l.topics[0] == topic
                    && l.topics[1] == word(&from)
                    && l.topics[2] == word(&self.config.treasury)
            })
            .map(|l| U256::try_from_be_slice(&l.data).unwrap_or_default())
            .fold(U256::ZERO, |a, b| a.saturating_add(b));
        token_amount(units, u32::from(plan.token.decimals)).unwrap_or_default()
    }

    async fn settle(
        &self,
        plan: &Plan,
        sweep: &SweepRow,
        steps: &[StepRow],
    ) -> Result<(), BroadcastError> {
        let items = db::items(&self.db, std::slice::from_ref(&plan.id)).await?;
        let swept: Vec<(String, Token, Decimal)> = items
            .iter()
            .filter_map(|(_, i)| Some((i.address.clone(), i.currency, i.swept?)))
            .collect();
        let moved = swept.iter().any(|s| s.2 > Decimal::ZERO);
        let transfers = || steps.iter().filter(|s| s.kind == "transfer");
        // Transfers that ran and moved nothing count against their address.
        let executed: BTreeSet<String> = transfers()
            .filter(|s| s.block_number.is_some())
            .map(|s| s.address.clone())
            .collect();
        let outcome = Outcome {
            status: if moved { "completed" } else { "failed" },
            block_number: transfers().filter_map(|s| s.block_number).max(),
            gas_used: Some(steps.iter().filter_map(|s| s.energy_used).sum()),
            fee: Some(steps.iter().filter_map(|s| s.fee).sum()),
            swept: &swept,
        };
        crate::sweep::settle(&self.db, sweep, &outcome, |i| executed.contains(&i.address)).await?;
        let outstanding = lent_not_returned(steps);
        if !outstanding.is_empty() {
            tracing::error!(sweep = %plan.id, addresses = ?outstanding,
                "energy lent to these addresses was not taken back: run the broadcast again, or undelegate by hand");
        }
        tracing::info!(sweep = %plan.id, status = outcome.status, "TRON sweep settled");
        Ok(())
    }
}

fn tx_id_of(step: &StepRow) -> Result<[u8; 32], BroadcastError> {
    hex::decode(&step.tx_id)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| BroadcastError::Invalid(format!("tx id {} is not 32 bytes", step.tx_id)))
}

/// The amount of one of the server's own transactions (TRX sent, or stake delegated).
fn own_amount(transaction: &Transaction) -> Option<i64> {
    let contract = transaction.raw_data.as_ref()?.contract.first()?;
    let value = contract.parameter.as_ref()?.value.as_slice();
    match contract.r#type {
        t if t == tron::ContractType::Transfer as i32 => {
            Some(tron::TransferContract::decode(value).ok()?.amount)
        }
        t if t == tron::ContractType::DelegateResource as i32 => {
            Some(tron::DelegateResourceContract::decode(value).ok()?.balance)
        }
        t if t == tron::ContractType::UnDelegateResource as i32 => Some(
            tron::UnDelegateResourceContract::decode(value)
                .ok()?
                .balance,
        ),
        _ => None,
    }
}
