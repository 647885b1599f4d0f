//! Request limits kept in this process's memory: token buckets per API key and per client
//! address, and a count of open live-status streams per client address.
//!
//! A bucket is one number, its "theoretical arrival time" (GCRA): the moment it will be full
//! again. A request fits when, after adding one emission interval (1 / rate), that moment is
//! at most `burst` intervals away. A bucket whose moment has passed is full, exactly like a
//! bucket that does not exist, so it can be dropped at any time without changing an answer:
//! that is how idle buckets are evicted. Each table is a `DashMap` (sharded locks, held for a
//! few arithmetic operations); nothing here touches the database.

use crate::config::{RateLimit, RateLimitConfig};
use crate::domain::api_key::{KeyHash, Mode};
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

const NANOS: u64 = 1_000_000_000;
/// Buckets a table holds at most; past that (after a sweep), new clients share one bucket.
pub const MAX_BUCKETS: usize = 100_000;
/// A new key triggers a sweep of full buckets when the last one is this old ...
const SWEEP_EVERY_NS: u64 = 30 * NANOS;
/// ... or, when the table is at its cap, this old (so a flood cannot make every request sweep).
const SWEEP_AT_CAP_EVERY_NS: u64 = NANOS;

/// One request's answer from a bucket, with what the `RateLimit-*` headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The bucket's size (`burst`).
    pub limit: u32,
    /// Requests that would still be allowed right now.
    pub remaining: u32,
    /// Whole seconds until the bucket is full again (0 when it is full).
    pub reset: u64,
    /// Refused: whole seconds until one request fits (at least 1). Allowed: 0.
    pub retry_after: u64,
}

fn ceil_seconds(nanos: u64) -> u64 {
    nanos.div_ceil(NANOS)
}

/// One token bucket per key, all with the same rate.
pub struct Buckets<K> {
    /// Theoretical arrival time per key, in nanoseconds since `epoch`.
    map: DashMap<K, u64>,
    /// Nanoseconds per token.
    interval: u64,
    burst: u32,
    epoch: Instant,
    /// The bucket new keys share while the table is full.
    overflow: K,
    max_entries: usize,
    last_sweep: AtomicU64,
}

impl<K: Eq + Hash + Clone> Buckets<K> {
    pub fn new(rate: RateLimit, overflow: K, max_entries: usize) -> Self {
        Self {
            map: DashMap::new(),
            interval: NANOS / u64::from(rate.per_second.max(1)),
            burst: rate.burst.max(1),
            epoch: Instant::now(),
            overflow,
            max_entries: max_entries.max(1),
            last_sweep: AtomicU64::new(0),
        }
    }

    fn nanos(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// What one more request meets, and the bucket's moment after it.
    fn decide(&self, tat: u64, now: u64) -> (u64, Decision) {
        let window = self.interval.saturating_mul(u64::from(self.burst));
        let after = tat.max(now).saturating_add(self.interval);
        let wait = after - now; // after > now: interval >= 1
        if wait > window {
            let decision = Decision {
                allowed: false,
                limit: self.burst,
                remaining: 0,
                reset: ceil_seconds(tat.saturating_sub(now)),
                retry_after: ceil_seconds(wait - window).max(1),
            };
            return (tat, decision);
        }
        let remaining = (window - wait) / self.interval;
        let decision = Decision {
            allowed: true,
            limit: self.burst,
            remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
            reset: ceil_seconds(wait),
            retry_after: 0,
        };
        (after, decision)
    }

    /// Takes one token from `key`'s bucket if it has one.
    pub fn take(&self, key: K, now: Instant) -> Decision {
        let now = self.nanos(now);
        if let Some(mut tat) = self.map.get_mut(&key) {
            let (next, decision) = self.decide(*tat, now);
            *tat = next;
            return decision;
        }
        let key = self.admit(key, now);
        let mut tat = self.map.entry(key).or_insert(0);
        let (next, decision) = self.decide(*tat, now);
        *tat = next;
        decision
    }

    /// What `take` would answer, taking nothing and creating no bucket.
    pub fn peek(&self, key: &K, now: Instant) -> Decision {
        let now = self.nanos(now);
        let tat = self.map.get(key).map_or(0, |tat| *tat);
        let mut decision = self.decide(tat, now).1;
        if decision.allowed {
            // Before the request, not after it.
            decision.remaining = decision.remaining.saturating_add(1).min(self.burst);
            decision.reset = ceil_seconds(tat.saturating_sub(now));
        }
        decision
    }

    /// Whether `key` has a bucket that is not full (it made a request in the last seconds).
    pub fn contains(&self, key: &K) -> bool {
        self.map.contains_key(key)
    }

    pub fn forget(&self, key: &K) {
        self.map.remove(key);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Drops every full bucket (no answer changes); returns how many were dropped.
    pub fn sweep(&self, now: Instant) -> usize {
        let now = self.nanos(now);
        let before = self.map.len();
        self.map.retain(|_, tat| *tat > now);
        before.saturating_sub(self.map.len())
    }

    /// The key a new client's bucket is kept under: its own while the table has room, else
    /// the shared overflow bucket. Sweeps now and then (one sweep at a time).
    fn admit(&self, key: K, now: u64) -> K {
        let full = self.map.len() >= self.max_entries;
        let last = self.last_sweep.load(Ordering::Relaxed);
        let age = now.saturating_sub(last);
        let due = age >= SWEEP_EVERY_NS || (full && age >= SWEEP_AT_CAP_EVERY_NS);
        if due
            && self
                .last_sweep
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.map.retain(|_, tat| *tat > now);
        }
        if full && self.map.len() >= self.max_entries {
            self.overflow.clone()
        } else {
            key
        }
    }
}

/// Open live-status streams per client address.
pub struct StreamSlots {
    open: DashMap<IpAddr, u32>,
    cap: u32,
}

/// One open stream; dropping it (the stream ended, or the client went away) frees the slot.
pub struct StreamSlot {
    slots: Arc<StreamSlots>,
    client: IpAddr,
}

impl StreamSlots {
    pub fn new(cap: u32) -> Self {
        Self {
            open: DashMap::new(),
            cap,
        }
    }

    /// A slot for `client`, unless it already holds `cap` open streams.
    pub fn acquire(self: &Arc<Self>, client: IpAddr) -> Option<StreamSlot> {
        match self.open.entry(client) {
            Entry::Occupied(mut open) if *open.get() < self.cap => *open.get_mut() += 1,
            Entry::Vacant(open) if self.cap > 0 => {
                open.insert(1);
            }
            _ => return None,
        }
        Some(StreamSlot {
            slots: self.clone(),
            client,
        })
    }

    pub fn open(&self, client: IpAddr) -> u32 {
        self.open.get(&client).map_or(0, |n| *n)
    }

    /// Clients holding at least one open stream (an address with none takes no memory).
    pub fn clients(&self) -> usize {
        self.open.len()
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if let Entry::Occupied(mut open) = self.slots.open.entry(self.client) {
            if *open.get() <= 1 {
                open.remove();
            } else {
                *open.get_mut() -= 1;
            }
        }
    }
}

/// Every limit of this process.
pub struct Limiter {
    live_keys: Buckets<KeyHash>,
    test_keys: Buckets<KeyHash>,
    pub clients: Buckets<IpAddr>,
    pub streams: Arc<StreamSlots>,
}

impl Limiter {
    pub fn new(config: &RateLimitConfig) -> Self {
        // No real key hashes to all zeros, and no client connects from the broadcast address.
        let overflow_ip = IpAddr::V4(Ipv4Addr::BROADCAST);
        Self {
            live_keys: Buckets::new(config.live, [0; 32], MAX_BUCKETS),
            test_keys: Buckets::new(config.test, [0; 32], MAX_BUCKETS),
            clients: Buckets::new(config.ip, overflow_ip, MAX_BUCKETS),
            streams: Arc::new(StreamSlots::new(config.ip_streams)),
        }
    }

    /// The buckets of keys of one mode (their limits differ).
    pub fn keys(&self, mode: Mode) -> &Buckets<KeyHash> {
        match mode {
            Mode::Live => &self.live_keys,
            Mode::Test => &self.test_keys,
        }
    }
}

/// The identity a client address is limited under: IPv4 addresses one by one, IPv6 by their
/// /64 (what one subscriber or host usually holds), IPv4-mapped IPv6 as IPv4.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn buckets(per_second: u32, burst: u32) -> Buckets<u32> {
        Buckets::new(RateLimit { per_second, burst }, u32::MAX, 1000)
    }

    #[test]
    fn a_burst_then_refusals_then_refill() {
        let b = buckets(10, 3);
        let t0 = Instant::now();
        let taken: Vec<Decision> = (0..3).map(|_| b.take(1, t0)).collect();
        assert!(taken.iter().all(|d| d.allowed && d.limit == 3));
        assert_eq!(
            taken.iter().map(|d| d.remaining).collect::<Vec<_>>(),
            [2, 1, 0]
        );
        // 3 tokens at 10/s: full again after 0.3 s, reported as 1 whole second.
        assert_eq!(taken[2].reset, 1);
        let refused = b.take(1, t0);
        assert!(!refused.allowed);
        assert_eq!((refused.remaining, refused.retry_after), (0, 1));
        // A refusal takes nothing: one interval later exactly one more fits.
        let t1 = t0 + Duration::from_millis(100);
        assert!(b.take(1, t1).allowed);
        assert!(!b.take(1, t1).allowed);
        // Idle long enough, the bucket is full again.
        let t2 = t1 + Duration::from_millis(300);
        assert_eq!(b.peek(&1, t2).remaining, 3);
        assert_eq!(b.take(1, t2).remaining, 2);
    }

    #[test]
    fn retry_after_and_reset_count_whole_seconds() {
        let b = buckets(1, 2);
        let t0 = Instant::now();
        assert!(b.take(7, t0).allowed);
        let second = b.take(7, t0);
        assert!(second.allowed);
        assert_eq!(second.reset, 2);
        let refused = b.take(7, t0 + Duration::from_millis(10));
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, 1);
        assert_eq!(refused.reset, 2);
        // Slow buckets: one token per second, but Retry-After never says 0.
        let refused = b.take(7, t0 + Duration::from_millis(999));
        assert_eq!(refused.retry_after, 1);
        assert!(b.take(7, t0 + Duration::from_millis(1000)).allowed);
    }

    #[test]
    fn keys_do_not_share_buckets_and_peek_takes_nothing() {
        let b = buckets(1, 1);
        let now = Instant::now();
        assert!(b.take(1, now).allowed);
        assert!(!b.take(1, now).allowed);
        assert!(b.peek(&2, now).allowed);
        assert!(!b.contains(&2), "peek creates no bucket");
        assert!(b.take(2, now).allowed);
        assert!(!b.peek(&1, now).allowed);
    }

    #[test]
    fn full_buckets_are_swept_and_the_table_is_capped() {
        let b = Buckets::new(
            RateLimit {
                per_second: 10,
                burst: 5,
            },
            u32::MAX,
            100,
        );
        let t0 = Instant::now();
        for client in 0..1000 {
            b.take(client, t0);
        }
        // 100 own buckets and the shared one; clients past the cap share it.
        assert!(b.len() <= 101, "{}", b.len());
        assert!(b.contains(&u32::MAX));
        assert!(!b.contains(&999));
        // After 0.1 s every bucket that took one token is full again and goes; the shared
        // one, drained by 900 clients, stays until it has refilled.
        let later = t0 + Duration::from_millis(100);
        assert_eq!(b.sweep(later), 100);
        assert_eq!(b.len(), 1);
        assert_eq!(b.sweep(later + Duration::from_secs(1)), 1);
        assert!(b.is_empty());
        // Keys that arrive after the sweep get buckets of their own again.
        assert!(b.take(5000, later).allowed);
        assert!(b.contains(&5000));
    }

    #[test]
    fn a_flood_at_the_cap_sweeps_by_itself() {
        let b = Buckets::new(
            RateLimit {
                per_second: 100,
                burst: 1,
            },
            u32::MAX,
            10,
        );
        let t0 = Instant::now();
        for client in 0..10 {
            b.take(client, t0);
        }
        // More than a second later those ten are full; a new client's arrival sweeps them.
        let later = t0 + Duration::from_secs(2);
        assert!(b.take(100, later).allowed);
        assert!(b.contains(&100));
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn stream_slots_are_counted_per_client_and_freed_on_drop() {
        let slots = Arc::new(StreamSlots::new(2));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = slots.acquire(a).unwrap();
        let second = slots.acquire(a).unwrap();
        assert!(slots.acquire(a).is_none());
        assert!(slots.acquire(b).is_some(), "another client is not affected");
        assert_eq!(slots.open(b), 0, "dropped at once");
        drop(first);
        assert_eq!(slots.open(a), 1);
        let third = slots.acquire(a).unwrap();
        drop((second, third));
        assert_eq!(slots.clients(), 0, "no entry left behind");
        let none = Arc::new(StreamSlots::new(0));
        assert!(none.acquire(a).is_none());
        assert_eq!(none.clients(), 0);
    }

    #[test]
    fn ipv6_clients_are_limited_by_their_64() {
        let k = |s: &str| client_key(s.parse().unwrap());
        assert_eq!(k("2001:db8:1:2:aaaa::1"), k("2001:db8:1:2:bbbb::2"));
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
        assert_eq!(k("::ffff:192.0.2.7"), k("192.0.2.7"));
        assert_ne!(k("192.0.2.7"), k("192.0.2.8"));
    }
}
