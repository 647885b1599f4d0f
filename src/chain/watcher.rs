//! The chain watcher: one per enabled (network, mode), held by one replica at a time.
//!
//! Each cycle (`tick`):
//! 1. takes or renews the network's lease; without it, does nothing;
//! 2. scans from the cursor (or, when caught up, the last `confirmations` blocks again, so a
//!    reorg near the head is seen) to the head: one `eth_getLogs` per range for all token
//!    contracts, matched against pay addresses with one indexed query;
//! 3. stores the transfers and advances the cursor in one transaction;
//! 4. re-checks transfers that reached their confirmations (receipt succeeded, still in the
//!    block it was seen in) and credits them, or settles them as `NotFound`/`Failed`.
//!
//! RPC calls per cycle: the head, one `eth_getLogs` per `max_block_range` blocks, one or two
//! block headers (the last scanned, the newest confirmed), plus one receipt per transfer
//! reaching its confirmations. None depends on how many sessions are open.

use super::rpc::{BlockHeader, Log, RetryPolicy, RpcClient, RpcError};
use crate::config::NetworkConfig;
use crate::db::chain::{self as db, CursorAdvance, NewAnomaly, NewTransfer, PendingTransfer};
use crate::domain::address::{evm_checksum, parse_evm_address, parse_tron_address, tron_base58};
use crate::domain::network::ChainFamily;
use crate::faults::Faults;
use crate::service::payments::{self, Credit};
use crate::state::AppState;
use alloy_primitives::{B256, U256};
use chrono::{DateTime, Utc};
use futures_util::{stream, StreamExt, TryStreamExt};
use rust_decimal::Decimal;
use sqlx::PgPool;
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Receipts fetched at once during confirmation.
const RECEIPT_CONCURRENCY: usize = 8;
/// Transfers confirmed per cycle at most (the rest wait for the next cycle).
const CONFIRM_BATCH: i64 = 2000;

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("RPC: {0}")]
    Rpc(#[from] RpcError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{0}")]
    Chain(String),
    #[error("{0}")]
    Other(#[from] anyhow::Error),
}

/// What one cycle did, for logs, tests and benchmarks.
#[derive(Debug, Default, Clone)]
pub struct TickReport {
    /// False when another replica holds this network: nothing else was done.
    pub leader: bool,
    pub head: u64,
    /// The blocks scanned, inclusive.
    pub scanned: Option<(u64, u64)>,
    pub logs: usize,
    /// Transfers to pay addresses that were new (or moved block) in this cycle.
    pub recorded: u64,
    pub anomalies: usize,
    pub credited: usize,
    pub late: usize,
    pub blocked: usize,
    pub not_found: usize,
    pub failed: usize,
    /// More blocks wait behind the cursor: run again without waiting.
    pub behind: bool,
    pub rpc_calls: u64,
}

pub struct Watcher {
    db: PgPool,
    faults: Arc<Faults>,
    base_url: String,
    net: NetworkConfig,
    rpc: RpcClient,
    owner: Uuid,
    lease: Duration,
    denylist: Arc<HashSet<[u8; 20]>>,
    contracts: Vec<[u8; 20]>,
    network: String,
    livemode: bool,
    /// When the RPC URLs' chain ids were last checked, and whether all answered.
    chain_checked: std::sync::Mutex<Option<(std::time::Instant, bool)>>,
}

fn family_of(net: &NetworkConfig) -> ChainFamily {
    net.network.family()
}

/// An address as sessions store it: TRON base58, EVM EIP-55.
pub fn address_text(family: ChainFamily, raw: &[u8; 20]) -> String {
    match family {
        ChainFamily::Tron => tron_base58(raw),
        _ => evm_checksum(raw),
    }
}

fn address_bytes(family: ChainFamily, text: &str) -> Result<[u8; 20], String> {
    match family {
        ChainFamily::Tron => parse_tron_address(text),
        _ => parse_evm_address(text),
    }
}

/// A transaction hash as the chain's explorers show it: TRON without `0x`, EVM with it.
pub fn tx_hash_text(family: ChainFamily, hash: &B256) -> String {
    match family {
        ChainFamily::Tron => hex::encode(hash.0),
        _ => hash.to_string(),
    }
}

fn parse_tx_hash(text: &str) -> Option<B256> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    (digits.len() == 64)
        .then(|| B256::from_str(digits).ok())
        .flatten()
}

/// `value / 10^decimals` exactly, or `None` when it cannot be represented.
pub fn token_amount(value: U256, decimals: u32) -> Option<Decimal> {
    let small = u128::try_from(value).ok()?;
    let signed = i128::try_from(small).ok()?;
    Decimal::try_from_i128_with_scale(signed, decimals)
        .ok()
        .map(|d| d.normalize())
}

fn block_time(header: &BlockHeader) -> Result<DateTime<Utc>, WatchError> {
    // Some TRON nodes answer in milliseconds.
    let seconds = if header.timestamp > 100_000_000_000 {
        header.timestamp / 1000
    } else {
        header.timestamp
    };
    i64::try_from(seconds)
        .ok()
        .and_then(|t| DateTime::from_timestamp(t, 0))
        .ok_or_else(|| WatchError::Chain(format!("block {} has a bad timestamp", header.number)))
}

fn to_i64(n: u64) -> Result<i64, WatchError> {
    i64::try_from(n).map_err(|_| WatchError::Chain(format!("block number {n} out of range")))
}

impl Watcher {
    pub fn new(state: &AppState, net: &NetworkConfig, policy: RetryPolicy) -> anyhow::Result<Self> {
        let config = &state.config.watcher;
        let headers: Vec<(String, String)> = net
            .rpc_headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let rpc = RpcClient::new(&net.rpc_urls, &headers, policy, net.max_block_range)?;
        let family = family_of(net);
        let contracts = net
            .tokens
            .iter()
            .map(|t| address_bytes(family, &t.contract).map_err(|m| anyhow::anyhow!("{m}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            db: state.db.clone(),
            faults: state.faults.clone(),
            base_url: state.config.base_url.clone(),
            rpc,
            owner: Uuid::new_v4(),
            lease: config.lease,
            denylist: Arc::new(config.denylist.clone()),
            contracts,
            network: net.network.as_str().to_owned(),
            livemode: net.mode.livemode(),
            net: net.clone(),
            chain_checked: std::sync::Mutex::new(None),
        })
    }

    pub fn name(&self) -> String {
        format!("{}/{}", self.network, self.net.mode.as_str())
    }

    pub fn rpc_calls(&self) -> u64 {
        self.rpc.calls()
    }

    pub fn poll_interval(&self) -> Duration {
        self.net.poll_interval
    }

    /// One cycle. Errors are also recorded on the cursor row for `/readyz`.
    pub async fn tick(&self) -> Result<TickReport, WatchError> {
        let calls_before = self.rpc.calls();
        let result = self.tick_inner().await;
        match result {
            Ok(mut report) => {
                report.rpc_calls = self.rpc.calls() - calls_before;
                Ok(report)
            }
            Err(e) => {
                let _ = db::record_error(
                    &self.db,
                    &self.network,
                    self.livemode,
                    self.owner,
                    &e.to_string(),
                )
                .await;
                Err(e)
            }
        }
    }

    async fn tick_inner(&self) -> Result<TickReport, WatchError> {
        let mut report = TickReport::default();
        if !self.hold_lease().await? {
            return Ok(report);
        }
        report.leader = true;
        self.verify_chain().await?;
        let head = self.rpc.block_number().await?;
        to_i64(head)?;
        report.head = head;
        let cursor = db::cursor(&self.db, &self.network, self.livemode).await?;
        let cursor_block = cursor
            .and_then(|c| c.block_number)
            .and_then(|n| u64::try_from(n).ok());

        let Some(cursor_block) = cursor_block else {
            // A fresh start begins at the head: history before the first run is not ours.
            let header = self.header(head).await?;
            let safe = self.safe_time(&header, head).await?;
            self.store(&[], &[], &header, safe, head).await?;
            tracing::info!(watcher = %self.name(), head, "watcher starts at the head");
            return Ok(report);
        };

        // Caught up: rescan the unconfirmed window so a reorg that replaced those blocks is
        // seen. Behind: continue from the cursor, in steps.
        let window = u64::from(self.net.confirmations.max(1));
        let from = (cursor_block + 1).min(head.saturating_sub(window - 1));
        let to = head.min(from.saturating_add(self.net.max_blocks_per_scan - 1));
        report.behind = to < head;

        let logs = self.rpc.transfer_logs(&self.contracts, from, to).await?;
        let header = self.header(to).await?;
        // A reorg between the two calls: the logs of `to` are not from the header's block.
        if logs
            .iter()
            .any(|l| l.block_number == to && l.block_hash != header.hash && !l.removed)
        {
            return Err(WatchError::Chain(format!(
                "block {to} changed during the scan (reorg); scanning again"
            )));
        }
        report.scanned = Some((from, to));
        report.logs = logs.len();
        let (transfers, anomalies) = self.match_logs(&logs).await?;
        report.anomalies = anomalies.len();
        let safe = self.safe_time(&header, head).await?;
        report.recorded = self
            .store(&transfers, &anomalies, &header, safe, head)
            .await?;
        if report.recorded > 0 {
            tracing::info!(watcher = %self.name(), from, to, recorded = report.recorded, "transfers detected");
        }

        // A long scan may have outlived the lease: confirm only while still holding it.
        if !self.hold_lease().await? {
            return Err(WatchError::Chain(
                "lost the lease during the scan; another replica continues".into(),
            ));
        }
        self.confirm(head, &mut report).await?;
        Ok(report)
    }

    /// Takes or renews this network's lease; false when another replica holds it.
    async fn hold_lease(&self) -> sqlx::Result<bool> {
        db::acquire_lease(
            &self.db,
            &self.network,
            self.livemode,
            self.owner,
            self.lease,
        )
        .await
    }

    /// Refuses to scan when a URL serves another chain than the configured `chain_id` (an
    /// operator's typo would otherwise credit payments seen on the wrong chain). Once every URL
    /// has answered correctly it is not asked again; URLs that did not answer are asked again
    /// at most every five minutes.
    async fn verify_chain(&self) -> Result<(), WatchError> {
        let Some(expected) = self.net.chain_id else {
            return Ok(());
        };
        {
            let checked = self
                .chain_checked
                .lock()
                .map_err(|_| WatchError::Chain("lock".into()))?;
            match *checked {
                Some((_, true)) => return Ok(()),
                Some((at, false)) if at.elapsed() < Duration::from_secs(300) => return Ok(()),
                _ => {}
            }
        }
        let mut answered = 0;
        let mut all = true;
        for (i, found) in self.rpc.chain_ids().await {
            match found {
                Ok(id) if id == expected => answered += 1,
                Ok(id) => {
                    return Err(WatchError::Chain(format!(
                        "RPC URL #{} serves chain id {id}, not the configured {expected} (set networks.{}.{}.chain_id if that is the chain you mean); not scanning",
                        i + 1,
                        self.network,
                        self.net.mode.as_str(),
                    )))
                }
                Err(_) => all = false,
            }
        }
        if answered == 0 {
            return Err(WatchError::Chain("no RPC URL answered eth_chainId".into()));
        }
        if let Ok(mut checked) = self.chain_checked.lock() {
            *checked = Some((std::time::Instant::now(), all));
        }
        Ok(())
    }

    async fn header(&self, number: u64) -> Result<BlockHeader, WatchError> {
        let header =
            self.rpc.block(number).await?.ok_or_else(|| {
                WatchError::Chain(format!("the node does not have block {number}"))
            })?;
        if header.number != number {
            return Err(WatchError::Chain(format!(
                "asked for block {number}, the node sent block {}",
                header.number
            )));
        }
        Ok(header)
    }

    /// Transfers to pay addresses of this network's sessions, and anomalies.
    async fn match_logs(
        &self,
        logs: &[Log],
    ) -> Result<(Vec<NewTransfer>, Vec<NewAnomaly>), WatchError> {
        let family = family_of(&self.net);
        // A node may repeat a log (overlapping ranges, a buggy provider): keep each once.
        let mut seen = HashSet::new();
        let decoded: Vec<(&Log, super::rpc::TransferLog)> = logs
            .iter()
            .filter(|l| !l.removed && seen.insert((l.tx_hash, l.log_index)))
            .filter_map(|l| l.as_transfer().map(|t| (l, t)))
            .filter(|(_, t)| self.contracts.contains(&t.token) && !t.value.is_zero())
            .collect();
        let recipients: HashSet<[u8; 20]> = decoded.iter().map(|(_, t)| t.to).collect();
        let texts: Vec<String> = recipients
            .iter()
            .map(|raw| address_text(family, raw))
            .collect();
        let owners: HashMap<String, db::AddressOwner> = db::sessions_by_address(
            &self.db,
            &self.network,
            self.livemode,
            family.as_str(),
            &texts,
        )
        .await?
        .into_iter()
        .map(|o| (o.pay_address.clone(), o))
        .collect();

        let mut transfers = Vec::new();
        let mut anomalies = Vec::new();
        for (log, t) in decoded {
            let to_text = address_text(family, &t.to);
            let Some(owner) = owners.get(&to_text) else {
                continue;
            };
            let tx_hash = tx_hash_text(family, &log.tx_hash);
            let log_index = to_i64(log.log_index)?;
            let token_text = address_text(family, &t.token);
            if token_text != owner.currency_contract {
                anomalies.push(NewAnomaly {
                    tx_hash,
                    log_index,
                    kind: "wrong_token",
                    session_id: Some(owner.session_id.clone()),
                    detail: format!(
                        "{} base units of token {token_text} sent to {to_text}, whose session expects {}",
                        t.value, owner.currency_contract
                    ),
                });
                continue;
            }
            let decimals = u32::try_from(owner.token_decimals).unwrap_or(u32::MAX);
            let Some(amount) = token_amount(t.value, decimals) else {
                anomalies.push(NewAnomaly {
                    tx_hash,
                    log_index,
                    kind: "value_out_of_range",
                    session_id: Some(owner.session_id.clone()),
                    detail: format!(
                        "a transfer of {} base units ({decimals} decimals) to {to_text} is too large to store",
                        t.value
                    ),
                });
                continue;
            };
            transfers.push(NewTransfer {
                session_id: owner.session_id.clone(),
                tx_hash,
                log_index,
                block_number: to_i64(log.block_number)?,
                block_hash: log.block_hash.to_string(),
                from_address: address_text(family, &t.from),
                to_address: to_text,
                amount,
                token_contract: token_text,
                blocked: self.denylist.contains(&t.from),
            });
        }
        Ok((transfers, anomalies))
    }

    /// The time of the newest block that has its confirmations, at or below `scanned`.
    async fn safe_time(
        &self,
        scanned: &BlockHeader,
        head: u64,
    ) -> Result<DateTime<Utc>, WatchError> {
        let depth = u64::from(self.net.confirmations.max(1));
        let safe = scanned.number.min(head.saturating_sub(depth - 1));
        if safe == scanned.number {
            return block_time(scanned);
        }
        block_time(&self.header(safe).await?)
    }

    /// Stores the range's transfers and moves the cursor to `header`, in one transaction.
    async fn store(
        &self,
        transfers: &[NewTransfer],
        anomalies: &[NewAnomaly],
        header: &BlockHeader,
        safe_time: DateTime<Utc>,
        head: u64,
    ) -> Result<u64, WatchError> {
        let mut tx = self.db.begin().await?;
        let recorded =
            db::upsert_transfers(&mut tx, &self.network, self.livemode, transfers).await?;
        db::insert_anomalies(&mut tx, &self.network, self.livemode, anomalies).await?;
        let advance = CursorAdvance {
            block_number: to_i64(header.number)?,
            block_hash: header.hash.to_string(),
            block_time: block_time(header)?,
            safe_time,
            head_number: to_i64(head)?,
        };
        if !db::advance_cursor(&mut tx, &self.network, self.livemode, self.owner, &advance).await? {
            tx.rollback().await?;
            return Err(WatchError::Chain(
                "lost the lease during the scan; another replica continues".into(),
            ));
        }
        tx.commit().await?;
        Ok(recorded)
    }

    /// Settles transfers that have their confirmations: the receipt must have succeeded and
    /// hold the same log in the same block.
    async fn confirm(&self, head: u64, report: &mut TickReport) -> Result<(), WatchError> {
        let depth = u64::from(self.net.confirmations.max(1));
        let Some(max_block) = head.checked_add(1).and_then(|h| h.checked_sub(depth)) else {
            return Ok(());
        };
        let due = db::due_transfers(
            &self.db,
            &self.network,
            self.livemode,
            to_i64(max_block)?,
            CONFIRM_BATCH,
        )
        .await?;
        if due.is_empty() {
            return Ok(());
        }
        let hashes: HashSet<String> = due.iter().map(|t| t.tx_hash.clone()).collect();
        let receipts: HashMap<String, Option<super::rpc::Receipt>> =
            stream::iter(hashes.into_iter().map(|h| self.fetch_receipt(h)))
                .buffer_unordered(RECEIPT_CONCURRENCY)
                .try_collect()
                .await?;
        // Different sessions' credits do not contend; one session's are serialized by its
        // row lock.
        let canonical = std::sync::Mutex::new(HashMap::new());
        let settled: Vec<(PendingTransfer, Settled)> = stream::iter(due.into_iter().map(|t| {
            let receipt = receipts.get(&t.tx_hash).cloned().flatten();
            self.settle_owned(t, receipt, head, depth, &canonical)
        }))
        .buffer_unordered(RECEIPT_CONCURRENCY)
        .try_collect()
        .await?;
        for (transfer, outcome) in settled {
            match outcome {
                Settled::Credit(c) => match c {
                    Credit::Credited(status) => {
                        report.credited += 1;
                        tracing::info!(watcher = %self.name(), session.id = %transfer.session_id,
                            tx = %transfer.tx_hash, amount = %transfer.amount, status = status.as_str(),
                            "payment confirmed");
                    }
                    Credit::Late => report.late += 1,
                    Credit::Blocked => {
                        report.blocked += 1;
                        tracing::warn!(watcher = %self.name(), session.id = %transfer.session_id,
                            tx = %transfer.tx_hash, "transfer from a denylisted sender");
                    }
                    Credit::AlreadySettled => {}
                },
                Settled::NotFound => report.not_found += 1,
                Settled::Failed => report.failed += 1,
                Settled::Wait => {}
            }
        }
        Ok(())
    }

    async fn fetch_receipt(
        &self,
        text: String,
    ) -> Result<(String, Option<super::rpc::Receipt>), WatchError> {
        let hash = parse_tx_hash(&text)
            .ok_or_else(|| WatchError::Chain(format!("stored tx hash {text} is malformed")))?;
        let receipt = self.rpc.receipt(&hash).await?;
        Ok((text, receipt))
    }

    async fn settle_owned(
        &self,
        transfer: PendingTransfer,
        receipt: Option<super::rpc::Receipt>,
        head: u64,
        depth: u64,
        canonical: &std::sync::Mutex<HashMap<u64, B256>>,
    ) -> Result<(PendingTransfer, Settled), WatchError> {
        let outcome = self
            .settle(&transfer, receipt, head, depth, canonical)
            .await?;
        Ok((transfer, outcome))
    }

    async fn settle(
        &self,
        transfer: &PendingTransfer,
        receipt: Option<super::rpc::Receipt>,
        head: u64,
        depth: u64,
        canonical: &std::sync::Mutex<HashMap<u64, B256>>,
    ) -> Result<Settled, WatchError> {
        let stored_block = transfer
            .block_number
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| WatchError::Chain(format!("transfer {} has no block", transfer.id)))?;
        let stored_hash = transfer.block_hash.as_deref().unwrap_or_default();
        let Some(receipt) = receipt else {
            // No receipt: gone in a reorg, unless its block is still canonical (then the node
            // is only lagging behind itself; ask again next cycle).
            let cached = canonical
                .lock()
                .ok()
                .and_then(|c| c.get(&stored_block).copied());
            let hash = match cached {
                Some(h) => Some(h),
                None => {
                    let found = self.rpc.block(stored_block).await?.map(|b| b.hash);
                    if let (Some(h), Ok(mut c)) = (found, canonical.lock()) {
                        c.insert(stored_block, h);
                    }
                    found
                }
            };
            match hash {
                // The node does not have the block (it lags, or failover reached a node that
                // is behind) or still has it: nothing is known yet; ask again next cycle.
                None => return Ok(Settled::Wait),
                Some(h) if h.to_string() == stored_hash => return Ok(Settled::Wait),
                // Another block stands at that height: the transfer's block was replaced.
                Some(_) => {}
            }
            db::set_outcome(&self.db, transfer.id, "NotFound").await?;
            tracing::warn!(watcher = %self.name(), tx = %transfer.tx_hash, "transfer vanished (reorg): not credited");
            return Ok(Settled::NotFound);
        };
        if !receipt.succeeded {
            db::set_outcome(&self.db, transfer.id, "Failed").await?;
            tracing::warn!(watcher = %self.name(), tx = %transfer.tx_hash, "transaction reverted: not credited");
            return Ok(Settled::Failed);
        }
        let family = family_of(&self.net);
        let decimals = u32::try_from(transfer.token_decimals).unwrap_or(u32::MAX);
        let same_transfer = |l: &Log| {
            l.as_transfer().is_some_and(|t| {
                address_text(family, &t.to) == transfer.to_address
                    && transfer.token_contract.as_deref() == Some(&address_text(family, &t.token))
                    && token_amount(t.value, decimals) == Some(transfer.amount)
            })
        };
        let Some(log) = receipt
            .logs
            .iter()
            .filter(|l| same_transfer(l))
            .min_by_key(|l| (l.log_index != transfer.log_index as u64, l.log_index))
        else {
            db::set_outcome(&self.db, transfer.id, "NotFound").await?;
            return Ok(Settled::NotFound);
        };
        let receipt_hash = receipt.block_hash.to_string();
        if receipt_hash != stored_hash || log.log_index != transfer.log_index as u64 {
            // Re-included elsewhere by a reorg: count confirmations from the new block.
            db::move_transfer(
                &self.db,
                transfer.id,
                to_i64(receipt.block_number)?,
                &receipt_hash,
                to_i64(log.log_index)?,
            )
            .await?;
            return Ok(Settled::Wait);
        }
        // The receipt's block is the stored one (same hash); count from the stored number,
        // never from a node-supplied one that could overflow.
        let confirmed_at = stored_block.checked_add(depth - 1);
        if confirmed_at.is_none_or(|needed| head < needed) {
            return Ok(Settled::Wait);
        }
        Ok(Settled::Credit(
            payments::confirm_and_credit(&self.db, &self.faults, transfer.id, &self.base_url)
                .await?,
        ))
    }

    /// Gives the lease up (on shutdown).
    pub async fn release(&self) {
        if let Err(e) = db::release_lease(&self.db, &self.network, self.livemode, self.owner).await
        {
            tracing::warn!(watcher = %self.name(), error = %e, "could not release the lease");
        }
    }

    /// Runs cycles until `shutdown`: at once again while behind, else every poll interval.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(watcher = %self.name(), urls = self.net.rpc_urls.len(), "watcher started");
        let mut failures: u32 = 0;
        loop {
            let wait = match self.tick().await {
                Ok(report) if report.behind => Duration::ZERO,
                Ok(report) => {
                    if !report.leader && failures == 0 {
                        tracing::debug!(watcher = %self.name(), "another replica holds the lease");
                    }
                    failures = 0;
                    self.net.poll_interval
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(watcher = %self.name(), error = %e, failures, "watcher cycle failed");
                    self.net
                        .poll_interval
                        .saturating_mul(failures.min(10))
                        .min(Duration::from_secs(30))
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        self.release().await;
        tracing::info!(watcher = %self.name(), "watcher stopped");
    }
}

enum Settled {
    Credit(Credit),
    NotFound,
    Failed,
    Wait,
}
