//! The chain watcher: one per enabled (network, mode), held by one replica at a time.
//!
//! Each cycle (`tick`):
//! 1. takes or renews the network's lease, and renews it every lease/3 while the cycle runs
//!    (a cycle whose renewal fails is cancelled);
//! 2. asks, in one batch request, for the head, the last scanned block's header (or, without
//!    one, the final block's) and (`finality = "tag"`) the node's `finalized` block;
//! 3. while the last scanned block keeps its hash, so does every block below it; otherwise
//!    checks that the final block still has the hash it had, and if not walks back to the
//!    newest checkpoint that matches;
//! 4. scans the new blocks (from above the last scanned one while it holds, else from above
//!    the final one) and, in the same request, again the blocks becoming final, so every block
//!    is final only once scanned in the request that names the new final block: one batch
//!    request per `max_block_range` holding the `eth_getLogs` and the headers needed, matched
//!    against pay addresses with one indexed query, each chunk committed with the cursor
//!    (progress survives a lost lease);
//! 5. settles each transfer whose block is final on its own (receipt succeeded, still in the
//!    block it was seen in): a failing one is counted and retried next cycle, and never holds
//!    back the others. One session's transfers are credited in block order.
//!
//! Requests per caught-up cycle: one when no block came, two when some did, plus one batch of
//! receipts when transfers are due and, on nodes whose logs carry no `blockTimestamp` (TRON),
//! one batch of headers for the blocks holding payments. With `scan = "recipients"` a batch
//! holds one `eth_getLogs` per `max_addresses_per_call` watched addresses (a request per 100
//! calls); otherwise nothing depends on how many sessions are open.

use super::rpc::{
    parse_block_number, parse_header, Answer, BlockHeader, BlockTag, Call, EndpointSpec, Log,
    Receipt, RetryPolicy, RpcClient, RpcError, TransferLog,
};
use crate::config::{NetworkConfig, Scan};
use crate::db::chain::{self as db, CursorAdvance, NewAnomaly, NewTransfer, PendingTransfer};
use crate::domain::address::{evm_checksum, parse_evm_address, parse_tron_address, tron_base58};
use crate::domain::api_key::Mode;
use crate::domain::network::Finality;
use crate::domain::network::{ChainFamily, Network};
use crate::domain::session::TransactionStatus;
use crate::faults::Faults;
use crate::service;
use crate::service::payments::{self, Credit};
use crate::state::AppState;
use alloy_primitives::{B256, U256};
use chrono::{DateTime, Utc};
use futures_util::{stream, StreamExt};
use rust_decimal::Decimal;
use sqlx::PgPool;
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Receipts fetched (and sessions credited) at once during confirmation.
const RECEIPT_CONCURRENCY: usize = 8;
/// Cycles in a row without a usable `finalized` answer before the node is counted by depth.
const TAG_LOST_LIMIT: u32 = 100;
/// How long a node that refused the `finalized` tag is not asked for it again.
const TAG_RETRY: Duration = Duration::from_secs(600);
/// Checkpoints compared at most when walking back after a reorg below the final block.
const WALK_BACK: i64 = 64;
/// Block times kept in memory at most (blocks holding payments, newest kept).
const BLOCK_TIMES_KEPT: usize = 4096;
/// Transfers confirmed per cycle at most (the rest wait for the next cycle).
const CONFIRM_BATCH: i64 = 2000;

/// Why a cycle failed; its text is recorded on the cursor row (`last_error` in `/readyz`).
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("RPC: {0}")]
    Rpc(#[from] RpcError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Crediting a settled transfer failed.
    #[error(transparent)]
    Credit(#[from] service::Error),
    #[error("lost the lease during the cycle; another replica continues")]
    LostLease,
    #[error("RPC URL #{url} serves chain id {found}, not the configured {expected} (set networks.{network}.{mode}.chain_id if that is the chain you mean); not scanning")]
    WrongChain {
        url: usize,
        found: u64,
        expected: u64,
        network: Network,
        mode: Mode,
    },
    #[error("no RPC URL answered eth_chainId")]
    NoChainId,
    #[error("the node does not have block {0}")]
    MissingBlock(u64),
    #[error("asked for block {asked}, the node sent block {sent}")]
    WrongBlock { asked: u64, sent: u64 },
    #[error("block {0} changed during the scan (reorg); scanning again")]
    ChangedDuringScan(u64),
    #[error("block {0} has a bad timestamp")]
    BadTimestamp(u64),
    #[error("block number {0} out of range")]
    OutOfRange(u64),
    #[error("receipt: {0}")]
    Receipt(String),
    #[error("receipt not fetched")]
    ReceiptNotFetched,
    #[error("transfer {0} has no block")]
    NoBlock(i64),
    #[error("transfer {id} is of a token no longer configured ({contract:?})")]
    TokenGone { id: i64, contract: Option<String> },
    #[error("the chain id check's lock was poisoned")]
    Poisoned,
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
    pub unexpected: usize,
    /// Transfers whose settling failed this cycle (retried next cycle).
    pub errors: usize,
    /// Set when the final block's hash changed: the block the scan was rewound to.
    pub rewound_to: Option<u64>,
    /// More blocks wait behind the cursor: run again without waiting.
    pub behind: bool,
    pub rpc_calls: u64,
    /// Bytes of RPC answers received.
    pub rpc_bytes: u64,
    /// Blocks at or below this were final in this cycle (credited once settled).
    pub final_limit: u64,
}

/// The last block scanned, and whether the node still has it with the hash it had.
#[derive(Clone, Copy)]
struct Scanned {
    number: u64,
    holds: bool,
}

/// The chain's tip as one cycle sees it.
struct Tip {
    head: u64,
    /// Blocks at or below this are final: their transfers are credited.
    final_limit: u64,
    /// The header of `final_limit`, where the node sent it (the `finalized` tag).
    final_header: Option<BlockHeader>,
}

pub struct Watcher {
    db: PgPool,
    faults: Arc<Faults>,
    base_url: String,
    net: NetworkConfig,
    rpc: RpcClient,
    owner: Uuid,
    lease: Duration,
    late_window: Duration,
    denylist: Arc<HashSet<[u8; 20]>>,
    contracts: Vec<[u8; 20]>,
    network: Network,
    livemode: bool,
    /// When the RPC URLs' chain ids were last checked, and whether all answered.
    chain_checked: std::sync::Mutex<Option<(std::time::Instant, bool)>>,
    /// The node refused the `finalized` tag: finality by depth until then.
    tag_refused_until: std::sync::Mutex<Option<std::time::Instant>>,
    /// The highest `finalized` block the node named (what stands when an answer is lost).
    last_finalized: AtomicU64,
    /// Cycles in a row whose `finalized` answer was lost.
    tag_lost: AtomicU32,
    /// Times of blocks holding payments whose headers were fetched (TRON's logs carry none),
    /// so scanning a block again does not ask for its header again.
    block_times: std::sync::Mutex<std::collections::BTreeMap<u64, (B256, DateTime<Utc>)>>,
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

/// A block time from a node's timestamp (seconds, or milliseconds on some TRON nodes).
fn time_of(number: u64, timestamp: u64) -> Result<DateTime<Utc>, WatchError> {
    let seconds = if timestamp > 100_000_000_000 {
        timestamp / 1000
    } else {
        timestamp
    };
    i64::try_from(seconds)
        .ok()
        .and_then(|t| DateTime::from_timestamp(t, 0))
        .ok_or(WatchError::BadTimestamp(number))
}

fn block_time(header: &BlockHeader) -> Result<DateTime<Utc>, WatchError> {
    time_of(header.number, header.timestamp)
}

/// A node's answer that means it does not serve the `finalized` tag (java-tron before 4.8
/// answers -32602 "invalid block number"), as opposed to a lost answer or one saying it has
/// no finalized block yet (geth: -32000 "finalized block not found").
fn refuses_tag(e: &RpcError) -> bool {
    match e {
        RpcError::Node { code, message } => {
            let m = message.to_ascii_lowercase();
            matches!(code, -32602 | -32601)
                || ["invalid block number", "not supported", "unsupported"]
                    .iter()
                    .any(|needle| m.contains(needle))
        }
        _ => false,
    }
}

fn to_i64(n: u64) -> Result<i64, WatchError> {
    i64::try_from(n).map_err(|_| WatchError::OutOfRange(n))
}

/// A client for the network's RPC URLs, as configured (headers, rates, batching, chain id).
pub fn rpc_client(net: &NetworkConfig, policy: RetryPolicy) -> anyhow::Result<RpcClient> {
    let endpoints: Vec<EndpointSpec> = net
        .rpc_urls
        .iter()
        .map(|u| EndpointSpec {
            url: u.url.clone(),
            headers: net
                .rpc_headers
                .iter()
                .chain(&u.headers)
                .map(|(k, v)| (k.clone(), v.expose().to_owned()))
                .collect(),
            max_requests_per_second: u.max_requests_per_second,
            max_requests_per_day: u.max_requests_per_day,
        })
        .collect();
    Ok(RpcClient::new(&endpoints, policy, net.max_block_range)?
        .with_max_response_bytes(net.max_response_bytes)
        .with_batches(net.batch)
        .with_chain_id(net.chain_id))
}

impl Watcher {
    pub fn new(state: &AppState, net: &NetworkConfig, policy: RetryPolicy) -> anyhow::Result<Self> {
        let config = &state.config.watcher;
        let rpc = rpc_client(net, policy)?;
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
            late_window: config.late_window,
            denylist: Arc::new(config.denylist.clone()),
            contracts,
            network: net.network,
            livemode: net.mode.livemode(),
            net: net.clone(),
            chain_checked: std::sync::Mutex::new(None),
            tag_refused_until: std::sync::Mutex::new(None),
            last_finalized: AtomicU64::new(0),
            tag_lost: AtomicU32::new(0),
            block_times: std::sync::Mutex::new(std::collections::BTreeMap::new()),
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
        let bytes_before = self.rpc.bytes_received();
        let result = self.tick_inner().await;
        match result {
            Ok(mut report) => {
                report.rpc_calls = self.rpc.calls() - calls_before;
                report.rpc_bytes = self.rpc.bytes_received() - bytes_before;
                Ok(report)
            }
            Err(e) => {
                let _ = db::record_error(
                    &self.db,
                    self.network,
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
        if !self.hold_lease().await? {
            return Ok(TickReport::default());
        }
        // The cycle runs while the lease is renewed; a failed renewal cancels it (each chunk
        // and credit it committed stays committed).
        tokio::select! {
            report = self.cycle() => report,
            lost = self.keep_lease() => Err(lost),
        }
    }

    /// Renews the lease every lease/3; returns when another replica holds it, or when the
    /// database has refused every renewal until the lease ran out.
    async fn keep_lease(&self) -> WatchError {
        let mut renewed = std::time::Instant::now();
        loop {
            tokio::time::sleep(self.lease / 3).await;
            match self.hold_lease().await {
                Ok(true) => renewed = std::time::Instant::now(),
                Ok(false) => return WatchError::LostLease,
                // A busy pool or a blip: the lease still runs; try again until it lapses.
                Err(e) if renewed.elapsed() + self.lease / 3 < self.lease => {
                    tracing::warn!(watcher = %self.name(), error = %e, "could not renew the lease; retrying");
                }
                Err(e) => return e.into(),
            }
        }
    }

    async fn cycle(&self) -> Result<TickReport, WatchError> {
        let mut report = TickReport {
            leader: true,
            ..TickReport::default()
        };
        self.verify_chain().await?;
        let depth = u64::from(self.net.confirmations.max(1));
        let cursor = db::cursor(&self.db, self.network, self.livemode).await?;
        let scanned = cursor
            .as_ref()
            .and_then(|c| c.block_number)
            .and_then(|n| u64::try_from(n).ok());
        let Some(scanned) = scanned else {
            // A fresh start begins at the head: history before the first run is not ours.
            let head = self.rpc.block_number().await?;
            to_i64(head)?;
            report.head = head;
            let header = self.header(head).await?;
            self.store(&[], &[], &header, &header, head).await?;
            tracing::info!(watcher = %self.name(), head, "watcher starts at the head");
            return Ok(report);
        };
        // A cursor from before final blocks were recorded: rescan one confirmation window.
        let recorded_final = cursor
            .as_ref()
            .and_then(|c| c.final_number)
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(scanned.saturating_sub(depth))
            .min(scanned);
        // One request: the head, the last scanned block's header (while it keeps its hash,
        // nothing below it changed: the final block holds and only newer blocks need
        // scanning) or, without one, the final block's header (checked against its recorded
        // hash), and, by tag, the node's finalized block.
        let by_tag = self.net.finality == Finality::Tag && !self.tag_refused();
        let scanned_hash = cursor.as_ref().and_then(|c| c.block_hash.clone());
        let check_scanned = scanned > recorded_final && scanned_hash.is_some();
        let checked = if check_scanned {
            scanned
        } else {
            recorded_final
        };
        let mut calls = vec![
            Call::block_number(),
            Call::header(BlockTag::Number(checked)),
        ];
        if by_tag {
            calls.push(Call::header(BlockTag::Finalized));
        }
        let mut answers = self.rpc.batch(&calls).await?.into_iter();
        let mut next = || {
            answers
                .next()
                .unwrap_or_else(|| Err(RpcError::Transport("no answer".into())))
        };
        let head = next().and_then(|raw| parse_block_number(&raw))?;
        to_i64(head)?;
        report.head = head;
        let checked_answer = next().and_then(|raw| parse_header(&raw));
        let tip = self.tip(head, by_tag.then(&mut next));
        let scanned_holds = check_scanned
            && checked_answer.as_ref().is_ok_and(|h| {
                h.as_ref()
                    .is_some_and(|h| Some(h.hash.to_string()) == scanned_hash)
            });
        // The final block: as recorded where the last scanned block holds (so does every
        // block below it), else its header, to be checked against its checkpoint.
        let recorded_header = match scanned_holds {
            true => {
                self.recorded_final_header(recorded_final, cursor.as_ref())
                    .await?
            }
            false => None,
        };
        let final_answer = match (&recorded_header, check_scanned) {
            (Some(header), _) => Ok(Some(header.clone())),
            (None, false) => checked_answer,
            // The last scanned block changed (a reorg, a lagging node): check the final one.
            (None, true) => self.rpc.block(recorded_final).await,
        };
        report.final_limit = tip.final_limit;
        if head < recorded_final {
            // The node is behind our own final block (a failover to a lagging node): nothing
            // to scan there; ask another URL next time, and settle what is due meanwhile.
            tracing::warn!(watcher = %self.name(), head, final_block = recorded_final,
                "the node is behind the final block; trying another URL");
            self.rpc.prefer_next();
            self.confirm(tip.final_limit, recorded_final, &mut report)
                .await?;
            return Ok(report);
        }
        // A failing scan (one bad block, a misbehaving node) must not hold back the
        // settling of transfers already found: confirm runs either way.
        let scanned = Scanned {
            number: scanned,
            holds: scanned_holds,
        };
        let scan = self.scan(recorded_final, final_answer, scanned, &tip, &mut report);
        let scanned = scan.await;
        // Blocks at or below the final block were scanned again as they became final and
        // are checkpointed: one node's word does not undo a transfer there.
        let checked_final = scanned.as_ref().copied().unwrap_or(recorded_final);
        let settled = self
            .confirm(tip.final_limit, checked_final, &mut report)
            .await;
        scanned?;
        settled?;
        Ok(report)
    }

    /// The final block as the cursor recorded it (number, checkpoint hash, time), or `None`
    /// where the record is incomplete (its header is then asked for).
    async fn recorded_final_header(
        &self,
        number: u64,
        cursor: Option<&db::CursorRow>,
    ) -> Result<Option<BlockHeader>, WatchError> {
        let Some(time) = cursor.and_then(|c| c.safe_time) else {
            return Ok(None);
        };
        let hash = db::checkpoint(&self.db, self.network, self.livemode, to_i64(number)?).await?;
        Ok(hash
            .and_then(|h| B256::from_str(&h).ok())
            .zip(u64::try_from(time.timestamp()).ok())
            .map(|(hash, timestamp)| BlockHeader {
                number,
                hash,
                timestamp,
            }))
    }

    fn tag_refused(&self) -> bool {
        self.tag_refused_until
            .lock()
            .ok()
            .and_then(|until| *until)
            .is_some_and(|until| until > std::time::Instant::now())
    }

    /// Which blocks are final: by depth, or by the node's `finalized` block (`finalized` is
    /// its answer, when asked). A node that refuses the tag is counted by depth (and not asked
    /// again for a while); an answer that was lost, `null` or above the head makes nothing
    /// newly final (the last finalized block seen stands, within the depth rule), until
    /// `TAG_LOST_LIMIT` such cycles in a row count as a refusal.
    fn tip(&self, head: u64, finalized: Option<Answer>) -> Tip {
        let depth = u64::from(self.net.confirmations.max(1));
        let by_depth = Tip {
            head,
            final_limit: (head + 1).saturating_sub(depth),
            final_header: None,
        };
        let Some(answer) = finalized else {
            return by_depth;
        };
        // Never beyond the depth rule either (a node that once named its head finalized).
        let last_seen = Tip {
            head,
            final_limit: self
                .last_finalized
                .load(Ordering::Relaxed)
                .min(by_depth.final_limit),
            final_header: None,
        };
        match answer.and_then(|raw| parse_header(&raw)) {
            Ok(Some(header)) if header.number <= head => {
                self.last_finalized
                    .fetch_max(header.number, Ordering::Relaxed);
                self.tag_lost.store(0, Ordering::Relaxed);
                Tip {
                    head,
                    final_limit: header.number,
                    final_header: Some(header),
                }
            }
            Err(e) if refuses_tag(&e) => self.refuse_tag(by_depth),
            // Lost, `null` (no finalized block yet), or above the head: nothing newly final,
            // unless that lasts: then the node is counted by depth, as one refusing the tag.
            _ if self.tag_lost.fetch_add(1, Ordering::Relaxed) + 1 >= TAG_LOST_LIMIT => {
                self.tag_lost.store(0, Ordering::Relaxed);
                self.refuse_tag(by_depth)
            }
            _ => last_seen,
        }
    }

    fn refuse_tag(&self, by_depth: Tip) -> Tip {
        tracing::warn!(watcher = %self.name(), minutes = TAG_RETRY.as_secs() / 60,
            confirmations = self.net.confirmations,
            "the node refused the `finalized` block tag: counting confirmations instead");
        if let Ok(mut until) = self.tag_refused_until.lock() {
            *until = Some(std::time::Instant::now() + TAG_RETRY);
        }
        by_depth
    }

    /// Scans to the head, in chunks committed with the cursor: from above the last scanned
    /// block while it and the final one (checked first) still hold, else from above the final
    /// block; nothing when no block came since the last scan.
    async fn scan(
        &self,
        recorded_final: u64,
        final_answer: Result<Option<BlockHeader>, RpcError>,
        scanned: Scanned,
        tip: &Tip,
        report: &mut TickReport,
    ) -> Result<u64, WatchError> {
        let head = tip.head;
        let recorded_header = self.expect_header(recorded_final, final_answer)?;
        let (mut final_block, mut final_header) =
            self.check_final(recorded_final, recorded_header).await?;
        if final_block < recorded_final {
            report.rewound_to = Some(final_block);
            // Expiry must not run ahead of the rescan on the old fork's times.
            if !db::rewind_final(
                &self.db,
                self.network,
                self.livemode,
                self.owner,
                to_i64(final_block)?,
                block_time(&final_header)?,
            )
            .await?
            {
                return Err(WatchError::LostLease);
            }
        } else if scanned.holds && scanned.number >= head {
            return Ok(final_block);
        }

        let from = if final_block == recorded_final && scanned.holds {
            scanned.number + 1
        } else {
            final_block + 1
        };
        if from > head {
            return Ok(final_block);
        }
        let to = head.min(from.saturating_add(self.net.max_blocks_per_scan - 1));
        report.behind = to < head;
        // Blocks at or below this are final once scanned; a finalized block far behind the
        // head is not waited for here (a reorg below is still caught by the checkpoints).
        let scan_final = tip
            .final_limit
            .max(head.saturating_sub(self.net.max_blocks_per_scan - 1));
        // Read after the head: a session created later cannot have been paid in these blocks.
        let watched = self.watched().await?;
        let recipients = watched
            .as_deref()
            .map(|addresses| (addresses, self.net.max_addresses_per_call));
        let mut start = from;
        while start <= to {
            let end = to.min(start.saturating_add(self.net.max_block_range - 1));
            let new_final = final_block.max(end.min(scan_final));
            // Blocks become final only when scanned in the request that names the new final
            // block: those first scanned in an earlier cycle are scanned again now (whatever
            // changed in between, or a node's answer that missed them, shows here).
            // One query over both ranges where it fits one query and costs less: by recipient
            // (the address list is sent once; only their transfers come back), or without
            // batches where the ranges touch. A contract scan asks for them apart otherwise,
            // so the blocks between are not downloaded again.
            let batching = self.rpc.batching();
            let mut ranges = vec![(start, end)];
            if final_block + 1 < start && new_final > final_block {
                let fits = end - final_block <= self.net.max_block_range;
                let adjacent = new_final + 1 >= start;
                if fits && (recipients.is_some() || (!batching && adjacent)) {
                    ranges[0].0 = final_block + 1;
                } else {
                    ranges.push((final_block + 1, new_final.min(start - 1)));
                }
            }
            let tagged = tip
                .final_header
                .clone()
                .filter(|h| h.number == new_final && !batching);
            let mut wanted = vec![end];
            if new_final != end && new_final != final_block && tagged.is_none() {
                wanted.push(new_final);
            }
            let (logs, headers) = self
                .rpc
                .logs_and_headers(&self.contracts, recipients, &ranges, &wanted)
                .await?;
            let mut headers = headers.into_iter();
            let missing = || Err(RpcError::Transport("no answer".into()));
            let header = self.expect_header(end, headers.next().unwrap_or_else(missing))?;
            let new_final_header = if new_final == end {
                header.clone()
            } else if new_final == final_block {
                final_header.clone()
            } else if let Some(tagged) = tagged {
                tagged
            } else {
                self.expect_header(new_final, headers.next().unwrap_or_else(missing))?
            };
            // A reorg between the calls, or nodes on two forks: the logs of a block whose
            // header we hold are not from that block.
            for h in [&header, &new_final_header] {
                if logs
                    .iter()
                    .any(|l| l.block_number == h.number && l.block_hash != h.hash && !l.removed)
                {
                    return Err(WatchError::ChangedDuringScan(h.number));
                }
            }
            if let Some(tagged) = tip.final_header.as_ref() {
                if tagged.number == new_final_header.number && tagged.hash != new_final_header.hash
                {
                    return Err(WatchError::ChangedDuringScan(new_final));
                }
            }
            let known = [&header, &new_final_header, &final_header];
            let (transfers, anomalies) = self.match_logs(&logs, &known).await?;
            report.logs += logs.len();
            report.anomalies += anomalies.len();
            report.recorded += self
                .store(&transfers, &anomalies, &header, &new_final_header, head)
                .await?;
            report.scanned = Some((from, end));
            final_block = new_final;
            final_header = new_final_header;
            start = end + 1;
        }
        if report.recorded > 0 {
            tracing::info!(watcher = %self.name(), from, to, recorded = report.recorded, "transfers detected");
        }
        Ok(final_block)
    }

    /// In `Scan::Recipients`, the pay addresses to ask the node about (none: no call at all);
    /// `None` in `Scan::Contract`, where every transfer of the tokens is fetched, and in
    /// `Scan::Auto` when they do not fit in one call.
    async fn watched(&self) -> Result<Option<Vec<[u8; 20]>>, WatchError> {
        if self.net.scan == Scan::Contract {
            return Ok(None);
        }
        let family = family_of(&self.net);
        // `Auto` needs to know only whether they fit one call.
        let limit = (self.net.scan == Scan::Auto)
            .then(|| i64::try_from(self.net.max_addresses_per_call).map_or(i64::MAX, |n| n + 1));
        let texts = db::watched_addresses(
            &self.db,
            self.network,
            self.livemode,
            self.late_window,
            limit,
        )
        .await?;
        let mut addresses = Vec::with_capacity(texts.len());
        for text in texts {
            match address_bytes(family, &text) {
                Ok(raw) => addresses.push(raw),
                Err(m) => tracing::error!(watcher = %self.name(), address = %text, error = %m,
                    "a stored pay address does not parse; it is not watched"),
            }
        }
        if self.net.scan == Scan::Auto && addresses.len() > self.net.max_addresses_per_call {
            return Ok(None);
        }
        Ok(Some(addresses))
    }

    /// The final block, checked against the chain: its header when its hash is the one it
    /// had when it became final; otherwise the newest checkpoint below it that still matches
    /// (a reorg deeper than the confirmations, or a node on another fork), so the blocks
    /// above are scanned again.
    async fn check_final(
        &self,
        number: u64,
        header: BlockHeader,
    ) -> Result<(u64, BlockHeader), WatchError> {
        let recorded =
            db::checkpoint(&self.db, self.network, self.livemode, to_i64(number)?).await?;
        if recorded.is_none_or(|h| h == header.hash.to_string()) {
            return Ok((number, header));
        }
        let older = db::checkpoints_below(
            &self.db,
            self.network,
            self.livemode,
            to_i64(number)?,
            WALK_BACK,
        )
        .await?;
        for checkpoint in &older {
            let Ok(n) = u64::try_from(checkpoint.number) else {
                continue;
            };
            let candidate = self.header(n).await?;
            if candidate.hash.to_string() == checkpoint.hash {
                tracing::warn!(watcher = %self.name(), final_block = number, rescan_from = n + 1,
                    "the final block was replaced (reorg deeper than the confirmations): scanning again from the newest block that still matches");
                return Ok((n, candidate));
            }
        }
        // Nothing recorded matches: go back as far as the records reach.
        let n = older
            .last()
            .and_then(|c| u64::try_from(c.number).ok())
            .unwrap_or(number)
            .saturating_sub(1);
        tracing::error!(watcher = %self.name(), final_block = number, rescan_from = n + 1,
            "no recorded block matches the chain any more: scanning again from the oldest record");
        Ok((n, self.header(n).await?))
    }

    /// Takes or renews this network's lease; false when another replica holds it.
    async fn hold_lease(&self) -> sqlx::Result<bool> {
        db::acquire_lease(
            &self.db,
            self.network,
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
                .map_err(|_| WatchError::Poisoned)?;
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
                Ok(found) => {
                    return Err(WatchError::WrongChain {
                        url: i + 1,
                        found,
                        expected,
                        network: self.network,
                        mode: self.net.mode,
                    })
                }
                Err(_) => all = false,
            }
        }
        if answered == 0 {
            return Err(WatchError::NoChainId);
        }
        if let Ok(mut checked) = self.chain_checked.lock() {
            *checked = Some((std::time::Instant::now(), all));
        }
        Ok(())
    }

    async fn header(&self, number: u64) -> Result<BlockHeader, WatchError> {
        self.expect_header(number, self.rpc.block(number).await)
    }

    /// The header of block `number` from a node's answer, which must be that block.
    fn expect_header(
        &self,
        number: u64,
        answer: Result<Option<BlockHeader>, RpcError>,
    ) -> Result<BlockHeader, WatchError> {
        let Some(header) = answer? else {
            // A node without a block we know exists lags behind: ask another URL next time.
            self.rpc.prefer_next();
            return Err(WatchError::MissingBlock(number));
        };
        if header.number != number {
            return Err(WatchError::WrongBlock {
                asked: number,
                sent: header.number,
            });
        }
        Ok(header)
    }

    /// Transfers to pay addresses of this network's sessions, with their blocks' times, and
    /// anomalies (dust, values too large to store). `known` are headers already fetched.
    async fn match_logs(
        &self,
        logs: &[Log],
        known: &[&BlockHeader],
    ) -> Result<(Vec<NewTransfer>, Vec<NewAnomaly>), WatchError> {
        let family = family_of(&self.net);
        // A node may repeat a log (overlapping ranges, a buggy provider): keep each once.
        let mut seen = HashSet::new();
        let decoded: Vec<(&Log, TransferLog)> = logs
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
        let owners: HashMap<String, db::AddressOwner> =
            db::sessions_by_address(&self.db, self.network, self.livemode, family, &texts)
                .await?
                .into_iter()
                .map(|o| (o.pay_address.clone(), o))
                .collect();

        // The transfers, and the log each came from (for its block's time, filled in below).
        let mut transfers: Vec<NewTransfer> = Vec::with_capacity(decoded.len());
        let mut sources: Vec<&Log> = Vec::with_capacity(decoded.len());
        let mut anomalies = Vec::new();
        for (log, t) in decoded {
            let to_text = address_text(family, &t.to);
            let Some(owner) = owners.get(&to_text) else {
                continue;
            };
            let token_text = address_text(family, &t.token);
            let Some(token) = self.net.tokens.iter().find(|c| c.contract == token_text) else {
                continue;
            };
            let tx_hash = tx_hash_text(family, &log.tx_hash);
            let log_index = to_i64(log.log_index)?;
            let anomaly = |kind: &'static str, detail: String| NewAnomaly {
                tx_hash: tx_hash.clone(),
                log_index,
                kind,
                session_id: Some(owner.session_id.clone()),
                detail,
            };
            let Some(amount) = token_amount(t.value, u32::from(token.decimals)) else {
                anomalies.push(anomaly(
                    "value_out_of_range",
                    format!(
                        "a transfer of {} base units ({} decimals) to {to_text} is too large to store",
                        t.value, token.decimals
                    ),
                ));
                continue;
            };
            if amount < token.min_amount {
                anomalies.push(anomaly(
                    "dust",
                    format!(
                        "{amount} {} to {to_text}, below the minimum {}",
                        token.token.as_str(),
                        token.min_amount
                    ),
                ));
                continue;
            }
            sources.push(log);
            transfers.push(NewTransfer {
                session_id: owner.session_id.clone(),
                tx_hash,
                log_index,
                block_number: to_i64(log.block_number)?,
                block_hash: log.block_hash.to_string(),
                from_address: address_text(family, &t.from),
                to_address: to_text,
                amount,
                unexpected: token_text != owner.currency_contract,
                token_contract: token_text,
                block_time: DateTime::UNIX_EPOCH,
                blocked: self.denylist.contains(&t.from),
            });
        }
        let times = self.block_times(&sources, known).await?;
        for (transfer, log) in transfers.iter_mut().zip(&sources) {
            transfer.block_time = times[&log.block_number];
        }
        Ok((transfers, anomalies))
    }

    /// The time of each block holding one of `logs`: from the log itself where the node
    /// includes it, from a header already fetched, or else from the block's header (one
    /// call per block holding a payment), checked to be the block the log came from.
    async fn block_times(
        &self,
        logs: &[&Log],
        known: &[&BlockHeader],
    ) -> Result<HashMap<u64, DateTime<Utc>>, WatchError> {
        let mut times = HashMap::new();
        let mut missing: HashMap<u64, B256> = HashMap::new();
        for log in logs {
            if times.contains_key(&log.block_number) {
                continue;
            }
            if let Some(seconds) = log.block_timestamp {
                times.insert(log.block_number, time_of(log.block_number, seconds)?);
            } else if let Some(h) = known
                .iter()
                .find(|h| h.number == log.block_number && h.hash == log.block_hash)
            {
                times.insert(log.block_number, block_time(h)?);
            } else if let Some(time) = self.cached_time(log.block_number, &log.block_hash) {
                times.insert(log.block_number, time);
            } else {
                missing.insert(log.block_number, log.block_hash);
            }
        }
        if missing.is_empty() {
            return Ok(times);
        }
        let numbers: Vec<u64> = missing.keys().copied().collect();
        let fetched = self.rpc.headers(&numbers).await?;
        for (number, answer) in numbers.into_iter().zip(fetched) {
            let header = self.expect_header(number, answer)?;
            if missing.get(&header.number) != Some(&header.hash) {
                return Err(WatchError::ChangedDuringScan(header.number));
            }
            let time = block_time(&header)?;
            times.insert(header.number, time);
            if let Ok(mut cache) = self.block_times.lock() {
                cache.insert(header.number, (header.hash, time));
                // Blocks holding payments, kept while they may be scanned again.
                while cache.len() > BLOCK_TIMES_KEPT {
                    cache.pop_first();
                }
            }
        }
        Ok(times)
    }

    fn cached_time(&self, number: u64, hash: &B256) -> Option<DateTime<Utc>> {
        let cache = self.block_times.lock().ok()?;
        cache
            .get(&number)
            .filter(|(cached, _)| cached == hash)
            .map(|(_, time)| *time)
    }

    /// Stores a chunk's transfers and anomalies and moves the cursor to `scanned` (and the
    /// final block to `final_header`), in one transaction.
    async fn store(
        &self,
        transfers: &[NewTransfer],
        anomalies: &[NewAnomaly],
        scanned: &BlockHeader,
        final_header: &BlockHeader,
        head: u64,
    ) -> Result<u64, WatchError> {
        let mut tx = self.db.begin().await?;
        let recorded =
            db::upsert_transfers(&mut tx, self.network, self.livemode, transfers).await?;
        db::insert_anomalies(&mut tx, self.network, self.livemode, anomalies).await?;
        let advance = CursorAdvance {
            block_number: to_i64(scanned.number)?,
            block_hash: scanned.hash.to_string(),
            block_time: block_time(scanned)?,
            final_number: to_i64(final_header.number)?,
            final_hash: final_header.hash.to_string(),
            safe_time: block_time(final_header)?,
            head_number: to_i64(head)?,
        };
        if !db::advance_cursor(&mut tx, self.network, self.livemode, self.owner, &advance).await? {
            tx.rollback().await?;
            return Err(WatchError::LostLease);
        }
        tx.commit().await?;
        Ok(recorded)
    }

    /// Settles transfers that have their confirmations: the receipt must have succeeded and
    /// hold the same log in the same block. Each is settled on its own: one that fails is
    /// counted, logged and tried again next cycle. One session's transfers go in block order,
    /// and stop at the first that is not settled (a later one must not be credited first).
    async fn confirm(
        &self,
        final_limit: u64,
        checked_final: u64,
        report: &mut TickReport,
    ) -> Result<(), WatchError> {
        let mut due = db::due_transfers(
            &self.db,
            self.network,
            self.livemode,
            to_i64(final_limit)?,
            CONFIRM_BATCH,
        )
        .await?;
        if due.is_empty() {
            return Ok(());
        }
        due.sort_by_key(|t| (t.block_number, t.log_index, t.id));
        let hashes: HashSet<String> = due.iter().map(|t| t.tx_hash.clone()).collect();
        let receipts = self.receipts(hashes).await;
        let mut sessions: Vec<Vec<PendingTransfer>> = Vec::new();
        let mut slot: HashMap<String, usize> = HashMap::new();
        for t in due {
            let i = *slot.entry(t.session_id.clone()).or_insert_with(|| {
                sessions.push(Vec::new());
                sessions.len() - 1
            });
            sessions[i].push(t);
        }
        let canonical = std::sync::Mutex::new(HashMap::new());
        let settled: Vec<Vec<(PendingTransfer, Result<Settled, WatchError>)>> =
            stream::iter(sessions.into_iter().map(|group| {
                self.settle_in_order(group, &receipts, (final_limit, checked_final), &canonical)
            }))
            .buffer_unordered(RECEIPT_CONCURRENCY)
            .collect()
            .await;
        let mut first_error = None;
        for (transfer, outcome) in settled.into_iter().flatten() {
            match outcome {
                Ok(Settled::Credit(c)) => match c {
                    Credit::Credited(status) => {
                        report.credited += 1;
                        if status.is_paid() {
                            crate::metrics::session_completed(
                                self.net.network,
                                self.net.mode.livemode(),
                            );
                        }
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
                    Credit::Unexpected => {
                        report.unexpected += 1;
                        tracing::warn!(watcher = %self.name(), session.id = %transfer.session_id,
                            tx = %transfer.tx_hash, "transfer of another token than the session's");
                    }
                    Credit::AlreadySettled | Credit::Dust => {}
                },
                Ok(Settled::NotFound) => report.not_found += 1,
                Ok(Settled::Failed) => report.failed += 1,
                Ok(Settled::Wait) => {}
                Err(e) => {
                    report.errors += 1;
                    tracing::warn!(watcher = %self.name(), session.id = %transfer.session_id,
                        tx = %transfer.tx_hash, error = %e, "could not settle a transfer; trying again next cycle");
                    first_error.get_or_insert_with(|| format!("{}: {e}", transfer.tx_hash));
                }
            }
        }
        if let Some(e) = first_error {
            let message = format!("{} transfer(s) could not be settled: {e}", report.errors);
            let _ =
                db::record_error(&self.db, self.network, self.livemode, self.owner, &message).await;
        }
        Ok(())
    }

    /// One session's due transfers, in block order, until one is not settled.
    async fn settle_in_order(
        &self,
        group: Vec<PendingTransfer>,
        receipts: &HashMap<String, Result<Option<Receipt>, String>>,
        limits: (u64, u64),
        canonical: &std::sync::Mutex<HashMap<u64, B256>>,
    ) -> Vec<(PendingTransfer, Result<Settled, WatchError>)> {
        let mut out = Vec::new();
        for transfer in group {
            let outcome = match receipts.get(&transfer.tx_hash) {
                Some(Ok(receipt)) => {
                    self.settle(&transfer, receipt.clone(), limits, canonical)
                        .await
                }
                Some(Err(e)) => Err(WatchError::Receipt(e.clone())),
                None => Err(WatchError::ReceiptNotFetched),
            };
            let settled = matches!(
                outcome,
                Ok(Settled::Credit(_) | Settled::NotFound | Settled::Failed)
            );
            out.push((transfer, outcome));
            if !settled {
                break;
            }
        }
        out
    }

    /// Each transaction's receipt (or why it could not be had), by its stored hash, in
    /// batch requests.
    async fn receipts(
        &self,
        texts: HashSet<String>,
    ) -> HashMap<String, Result<Option<Receipt>, String>> {
        let mut out = HashMap::with_capacity(texts.len());
        let mut asked = Vec::with_capacity(texts.len());
        for text in texts {
            match parse_tx_hash(&text) {
                None => {
                    let error = format!("stored tx hash {text} is malformed");
                    out.insert(text, Err(error));
                }
                Some(hash) => asked.push((text, hash)),
            }
        }
        let hashes: Vec<B256> = asked.iter().map(|(_, h)| *h).collect();
        match self.rpc.receipts(&hashes).await {
            Ok(answers) => {
                for ((text, _), answer) in asked.into_iter().zip(answers) {
                    out.insert(text, answer.map_err(|e| e.to_string()));
                }
            }
            Err(e) => {
                for (text, _) in asked {
                    out.insert(text, Err(e.to_string()));
                }
            }
        }
        out
    }

    async fn settle(
        &self,
        transfer: &PendingTransfer,
        receipt: Option<Receipt>,
        (final_limit, checked_final): (u64, u64),
        canonical: &std::sync::Mutex<HashMap<u64, B256>>,
    ) -> Result<Settled, WatchError> {
        let stored_block = transfer
            .block_number
            .and_then(|n| u64::try_from(n).ok())
            .ok_or(WatchError::NoBlock(transfer.id))?;
        let stored_hash = transfer.block_hash.as_deref().unwrap_or_default();
        let Some(receipt) = receipt else {
            // No receipt: gone in a reorg, unless its block is still canonical (then the node
            // is only lagging behind itself; ask again next cycle).
            match self.canonical_hash(stored_block, canonical).await? {
                // The node does not have the block (it lags, or failover reached a node that
                // is behind) or still has it: nothing is known yet; ask again next cycle.
                None => return Ok(Settled::Wait),
                Some(h) if h.to_string() == stored_hash => return Ok(Settled::Wait),
                // Another block stands at that height: the transfer's block was replaced.
                Some(_) => {}
            }
            if stored_block <= checked_final && !self.node_agrees(checked_final, canonical).await? {
                return Ok(self.distrust(transfer));
            }
            db::set_outcome(&self.db, transfer.id, TransactionStatus::NotFound).await?;
            tracing::warn!(watcher = %self.name(), tx = %transfer.tx_hash, "transfer vanished (reorg): not credited");
            return Ok(Settled::NotFound);
        };
        if !receipt.succeeded {
            db::set_outcome(&self.db, transfer.id, TransactionStatus::Failed).await?;
            tracing::warn!(watcher = %self.name(), tx = %transfer.tx_hash, "transaction reverted: not credited");
            return Ok(Settled::Failed);
        }
        let family = family_of(&self.net);
        let token = transfer
            .token_contract
            .as_deref()
            .and_then(|c| self.net.tokens.iter().find(|t| t.contract == c));
        let Some(token) = token else {
            return Err(WatchError::TokenGone {
                id: transfer.id,
                contract: transfer.token_contract.clone(),
            });
        };
        let same_transfer = |l: &Log| {
            l.as_transfer().is_some_and(|t| {
                address_text(family, &t.to) == transfer.to_address
                    && address_text(family, &t.token) == token.contract
                    && token_amount(t.value, u32::from(token.decimals)) == Some(transfer.amount)
            })
        };
        let receipt_hash = receipt.block_hash.to_string();
        let in_place = receipt_hash == stored_hash
            && receipt
                .logs
                .iter()
                .any(|l| l.log_index == transfer.log_index as u64 && same_transfer(l));
        if !in_place
            && stored_block <= checked_final
            && !self.node_agrees(checked_final, canonical).await?
        {
            return Ok(self.distrust(transfer));
        }
        if !in_place {
            // Gone from this position: a reorg re-included the transaction elsewhere (its log
            // indexes shift with the block), or dropped it. This row is settled as NotFound;
            // the scan of its new block (again as that block becomes final) records the
            // transfer at its new position (reviving this row if the position is the same),
            // where it waits for its own block to be final.
            db::set_outcome(&self.db, transfer.id, TransactionStatus::NotFound).await?;
            tracing::info!(watcher = %self.name(), tx = %transfer.tx_hash,
                "transfer no longer at its recorded position: recorded again where the rescan finds it");
            return Ok(Settled::NotFound);
        }
        // The receipt's block is the stored one (same hash); judged by the stored number,
        // never by a node-supplied one.
        if stored_block > final_limit {
            return Ok(Settled::Wait);
        }
        Ok(Settled::Credit(
            payments::confirm_and_credit(
                &self.db,
                &self.faults,
                transfer.id,
                &self.base_url,
                &self.net.tokens,
            )
            .await?,
        ))
    }

    /// Whether the node has our final block as recorded: only then is its word taken that a
    /// transfer at or below it is gone (the transfer's block was replaced before it became
    /// final). No record: taken.
    async fn node_agrees(
        &self,
        final_block: u64,
        canonical: &std::sync::Mutex<HashMap<u64, B256>>,
    ) -> Result<bool, WatchError> {
        let Some(recorded) =
            db::checkpoint(&self.db, self.network, self.livemode, to_i64(final_block)?).await?
        else {
            return Ok(true);
        };
        let hash = self.canonical_hash(final_block, canonical).await?;
        Ok(hash.is_some_and(|h| h.to_string() == recorded))
    }

    /// The hash of the node's block at `number` (`None`: it does not have it), asked once per
    /// cycle.
    async fn canonical_hash(
        &self,
        number: u64,
        canonical: &std::sync::Mutex<HashMap<u64, B256>>,
    ) -> Result<Option<B256>, WatchError> {
        let cached = canonical.lock().ok().and_then(|c| c.get(&number).copied());
        if cached.is_some() {
            return Ok(cached);
        }
        let found = self.rpc.block(number).await?.map(|b| b.hash);
        if let (Some(h), Ok(mut c)) = (found, canonical.lock()) {
            c.insert(number, h);
        }
        Ok(found)
    }

    /// A node says a transfer in a block already final is gone, but the node does not have
    /// our final block as recorded: on another fork, or lagging (a real reorg that deep moves
    /// the final block back first, through the checkpoint check). Asked again, of the next URL.
    fn distrust(&self, transfer: &PendingTransfer) -> Settled {
        tracing::warn!(watcher = %self.name(), tx = %transfer.tx_hash,
            "a node says a transfer in a final block is gone; asking another URL");
        self.rpc.prefer_next();
        Settled::Wait
    }

    /// Gives the lease up (on shutdown).
    pub async fn release(&self) {
        if let Err(e) = db::release_lease(&self.db, self.network, self.livemode, self.owner).await {
            tracing::warn!(watcher = %self.name(), error = %e, "could not release the lease");
        }
    }

    /// Runs cycles until `shutdown`: at once again while behind, else every poll interval;
    /// gives the lease up at the end.
    pub async fn run(self, shutdown: CancellationToken) {
        let name = self.name();
        tracing::info!(watcher = %name, urls = self.net.rpc_urls.len(), "watcher started");
        let every = self.net.poll_interval;
        crate::workers::run_worker(&name, every, Duration::from_secs(30), shutdown, || async {
            let report = self.tick().await?;
            if !report.leader {
                tracing::debug!(watcher = %name, "another replica holds the lease");
            }
            Ok::<_, WatchError>(if report.behind {
                crate::workers::Pace::Again
            } else {
                crate::workers::Pace::Wait
            })
        })
        .await;
        self.release().await;
    }
}

enum Settled {
    Credit(Credit),
    NotFound,
    Failed,
    Wait,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_refusal_of_the_tag_counts_as_one() {
        let node = |code: i64, message: &str| RpcError::Node {
            code,
            message: message.into(),
        };
        // java-tron before 4.8, and nodes that do not know the tag.
        assert!(refuses_tag(&node(-32602, "invalid block number")));
        assert!(refuses_tag(&node(-32601, "the method is not available")));
        assert!(refuses_tag(&node(-32000, "finalized tag not supported")));
        // No finalized block yet (geth after a restart), or a failure: lost, not refused.
        assert!(!refuses_tag(&node(-32000, "finalized block not found")));
        assert!(!refuses_tag(&node(-32000, "internal error")));
        assert!(!refuses_tag(&RpcError::Transport("timed out".into())));
        assert!(!refuses_tag(&RpcError::RateLimited { retry_after: None }));
    }
}
