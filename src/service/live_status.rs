//! Live status for open payment pages: one `LISTEN` connection per process, fanned out to the
//! streams that watch each session. Postgres announces every change a page shows (see the
//! `live_status` migration); an idle stream holds no database connection and runs no query.
//! While the listener is down, streams fall back to polling. The same connection hears key
//! revocations, for the authentication cache.

use crate::db::merchants::Merchant;
use crate::domain::api_key::KeyHash;
use crate::domain::network::Network;
use crate::service::hosted::PageView;
use crate::service::Error;
use crate::state::AppState;
use dashmap::DashMap;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Mutex};
use tokio_util::sync::CancellationToken;

const SESSION_CHANNEL: &str = "checkout_session";
const HEAD_CHANNEL: &str = "checkout_head";
const KEY_REVOKED_CHANNEL: &str = "checkout_key_revoked";

/// How long an authenticated key is trusted without asking Postgres again. A revocation is
/// announced and forgotten at once; this bounds it when the announcement is lost.
pub const AUTH_TTL: Duration = Duration::from_secs(5);

/// Keys that authenticated lately, by their hash: most requests then skip the key lookup.
#[derive(Default)]
pub struct AuthCache {
    keys: DashMap<KeyHash, (Instant, Merchant)>,
}

impl AuthCache {
    pub fn get(&self, hash: &KeyHash) -> Option<Merchant> {
        let entry = self.keys.get(hash)?;
        let (at, merchant) = &*entry;
        (at.elapsed() < AUTH_TTL).then(|| merchant.clone())
    }

    pub fn insert(&self, hash: KeyHash, merchant: Merchant) {
        // Bounded by the keys that exist: unknown keys are never cached. Stale entries go when
        // the map grows.
        if self.keys.len() >= 10_000 {
            self.keys.retain(|_, (at, _)| at.elapsed() < AUTH_TTL);
        }
        self.keys.insert(hash, (Instant::now(), merchant));
    }

    fn forget(&self, hex_hash: &str) {
        let mut hash = [0u8; 32];
        if hex::decode_to_slice(hex_hash, &mut hash).is_ok() {
            self.keys.remove(&hash);
        }
    }
}

/// The senders the listener wakes: one per watched session, one per chain head.
#[derive(Default)]
pub struct LiveStatus {
    sessions: DashMap<String, Arc<Watched>>,
    heads: DashMap<(Network, bool), watch::Sender<()>>,
    listening: AtomicBool,
    streams: AtomicUsize,
    /// Forgets revoked keys as their revocation is announced.
    pub auth: AuthCache,
}

/// One watched session: its wake-up signal, and the view last read for its streams.
struct Watched {
    changed: watch::Sender<()>,
    /// When the read began, and what it found: streams woken before that moment share it,
    /// so a change read (and rendered) once reaches all of a session's pages.
    latest: Mutex<Option<(Instant, Option<Arc<LiveView>>)>>,
}

/// A session's public view as the streams send it, rendered once.
pub struct LiveView {
    pub view: PageView,
    /// The event's data: the view's JSON.
    pub data: String,
    /// The JSON without the clock, to tell a change from a mere re-read.
    pub comparable: String,
}

impl LiveView {
    pub fn render(view: PageView) -> Self {
        let mut json = view.to_json();
        let data = json.to_string();
        if let Some(o) = json.as_object_mut() {
            o.remove("server_time");
        }
        Self {
            comparable: json.to_string(),
            data,
            view,
        }
    }
}

/// A stream's interest in one session; dropping it forgets the session when no one else
/// watches it.
pub struct Subscription {
    hub: Arc<LiveStatus>,
    id: String,
    watched: Arc<Watched>,
    pub changed: watch::Receiver<()>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.streams.fetch_sub(1, Ordering::Relaxed);
        // This receiver still counts: the last one leaves one.
        self.hub
            .sessions
            .remove_if(&self.id, |_, w| w.changed.receiver_count() <= 1);
    }
}

impl Subscription {
    /// The session's view as of `woken` or later: read once for all its streams.
    pub async fn view(
        &self,
        state: &AppState,
        woken: Instant,
    ) -> Result<Option<Arc<LiveView>>, Error> {
        let mut latest = self.watched.latest.lock().await;
        if let Some((read_at, view)) = &*latest {
            if *read_at >= woken {
                return Ok(view.clone());
            }
        }
        let read_at = Instant::now();
        let view = PageView::load(state, &self.id)
            .await?
            .map(|v| Arc::new(LiveView::render(v)));
        *latest = Some((read_at, view.clone()));
        Ok(view)
    }
}

impl LiveStatus {
    /// Notifications arrive: streams may wait for them instead of polling.
    pub fn listening(&self) -> bool {
        self.listening.load(Ordering::Relaxed)
    }

    pub fn subscribe(self: &Arc<Self>, session_id: &str) -> Subscription {
        let watched = self
            .sessions
            .entry(session_id.to_owned())
            .or_insert_with(|| {
                Arc::new(Watched {
                    changed: watch::channel(()).0,
                    latest: Mutex::new(None),
                })
            })
            .clone();
        self.streams.fetch_add(1, Ordering::Relaxed);
        Subscription {
            hub: self.clone(),
            id: session_id.to_owned(),
            changed: watched.changed.subscribe(),
            watched,
        }
    }

    /// Wakes on every new head of `network` in this mode (confirmation counts change).
    pub fn head(&self, network: Network, livemode: bool) -> watch::Receiver<()> {
        self.heads
            .entry((network, livemode))
            .or_insert_with(|| watch::channel(()).0)
            .subscribe()
    }

    /// Streams open now.
    pub fn open_streams(&self) -> usize {
        self.streams.load(Ordering::Relaxed)
    }

    fn announce(&self, channel: &str, payload: &str) {
        match channel {
            SESSION_CHANNEL => {
                if let Some(w) = self.sessions.get(payload) {
                    w.changed.send_replace(());
                }
            }
            KEY_REVOKED_CHANNEL => self.auth.forget(payload),
            HEAD_CHANNEL => {
                let head = payload
                    .split_once(':')
                    .and_then(|(network, mode)| Some((network.parse().ok()?, mode.parse().ok()?)));
                if let Some(tx) = head.and_then(|key| self.heads.get(&key)) {
                    tx.send_replace(());
                }
            }
            _ => {}
        }
    }

    /// Every stream looks again, and every key is asked again: notifications may have been
    /// missed.
    fn wake_all(&self) {
        self.auth.keys.clear();
        for w in self.sessions.iter() {
            w.changed.send_replace(());
        }
        for tx in self.heads.iter() {
            tx.send_replace(());
        }
    }

    /// Listens until `shutdown`, reconnecting after a lost connection (streams poll meanwhile).
    pub async fn run(self: Arc<Self>, db: PgPool, shutdown: CancellationToken) {
        let mut retry = Duration::from_millis(250);
        while !shutdown.is_cancelled() {
            let mut listener = match connect(&db).await {
                Ok(listener) => listener,
                Err(e) => {
                    tracing::warn!(error = %e, "live status: cannot listen; pages poll");
                    tokio::select! {
                        _ = tokio::time::sleep(retry) => {}
                        _ = shutdown.cancelled() => break,
                    }
                    retry = (retry * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
            retry = Duration::from_millis(250);
            self.listening.store(true, Ordering::Relaxed);
            // Whatever changed before the (re)connection was not announced to this process.
            self.wake_all();
            loop {
                let next = tokio::select! {
                    next = listener.try_recv() => next,
                    _ = shutdown.cancelled() => break,
                };
                match next {
                    Ok(Some(n)) => self.announce(n.channel(), n.payload()),
                    Ok(None) => {
                        tracing::warn!("live status: listener connection lost; reconnecting");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "live status: listener failed; reconnecting");
                        break;
                    }
                }
            }
            self.listening.store(false, Ordering::Relaxed);
            self.wake_all();
        }
    }
}

async fn connect(db: &PgPool) -> sqlx::Result<PgListener> {
    let mut listener = PgListener::connect_with(db).await?;
    listener
        .listen_all([SESSION_CHANNEL, HEAD_CHANNEL, KEY_REVOKED_CHANNEL])
        .await?;
    Ok(listener)
}
