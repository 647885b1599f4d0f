//! Builds the app, binds, runs until a shutdown signal.

use crate::config::Config;
use crate::domain::api_key::Mode;
use crate::domain::network::Network;
use crate::state::AppState;
use dashmap::DashMap;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::{Service, ServiceExt};

/// How long shutdown waits for in-flight requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: AppState,
}

impl Application {
    pub async fn bind(state: AppState, addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        let local_addr = listener.local_addr()?;
        Ok(Self {
            listener,
            local_addr,
            state,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` is cancelled; in-flight requests finish first.
    ///
    /// HTTP/1.1 through hyper directly (axum's `serve` sets no head timeout): a request head
    /// must arrive within `http.header_read_timeout`, and one client address holds at most
    /// `http.max_connections_per_ip` connections (more are answered 429 and closed).
    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let limits = self.state.config.http.clone();
        let trusted_proxies = self.state.config.rate_limits.trusted_proxies.clone();
        let stopping = self.state.stopping.clone();
        let live = self.state.live.clone();
        let (address_blocks, db) = (self.state.address_blocks.clone(), self.state.db.clone());
        tokio::spawn(live.run(self.state.db.clone(), shutdown.clone()));
        let router = crate::http::router(self.state);
        let mut make_service = router.into_make_service_with_connect_info::<SocketAddr>();
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            // Heads up to our own limit reach the router, which answers 431 in our shape.
            .max_buf_size((limits.max_header_bytes * 4).max(64 * 1024));
        let graceful = GracefulShutdown::new();
        let open = Arc::new(OpenConnections::default());
        tracing::info!(addr = %self.local_addr, "listening");
        loop {
            let (stream, remote) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, do not spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = shutdown.cancelled() => break,
            };
            let proxy = trusted_proxies.iter().any(|net| net.contains(&remote.ip()));
            let Some(slot) = ConnectionSlot::take(&open, remote.ip(), proxy, &limits) else {
                tokio::spawn(refuse_busy(stream, limits.max_connections_per_ip));
                continue;
            };
            let Ok(service) = make_service.call(remote).await;
            let service = TowerToHyperService::new(service.map_request(
                |req: hyper::Request<hyper::body::Incoming>| req.map(axum::body::Body::new),
            ));
            let connection = graceful.watch(http1.serve_connection(TokioIo::new(stream), service));
            tokio::spawn(async move {
                let _ = connection.await;
                drop(slot);
            });
        }
        drop(self.listener);
        stopping.cancel();
        // In-flight requests finish; whatever still runs after the grace period is cut.
        if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after the grace period: closing them");
        }
        address_blocks.give_back(&db).await;
        tracing::info!("HTTP server stopped");
        Ok(())
    }
}

/// Open connections, in all and per client address (an IPv6 /64 counts as one address).
#[derive(Default)]
struct OpenConnections {
    total: std::sync::atomic::AtomicUsize,
    per_address: DashMap<IpAddr, usize>,
}

/// One open connection, counted until dropped.
struct ConnectionSlot {
    open: Arc<OpenConnections>,
    /// `None` for a trusted proxy: it carries many clients, only the total counts it.
    address: Option<IpAddr>,
}

impl ConnectionSlot {
    fn take(
        open: &Arc<OpenConnections>,
        ip: IpAddr,
        trusted_proxy: bool,
        limits: &crate::config::HttpConfig,
    ) -> Option<Self> {
        use std::sync::atomic::Ordering;
        if open.total.fetch_add(1, Ordering::SeqCst) >= limits.max_connections {
            open.total.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        let address = (!trusted_proxy).then(|| crate::limits::client_key(ip));
        if let Some(address) = address {
            let mut count = open.per_address.entry(address).or_insert(0);
            if *count >= limits.max_connections_per_ip {
                drop(count);
                open.total.fetch_sub(1, Ordering::SeqCst);
                return None;
            }
            *count += 1;
        }
        Some(Self {
            open: open.clone(),
            address,
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.open
            .total
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        if let Some(address) = self.address {
            // The entry goes when its last connection does, so the map stays small.
            self.open.per_address.remove_if_mut(&address, |_, count| {
                *count -= 1;
                *count == 0
            });
        }
    }
}

/// Too many connections (from one address, or in all): a 429 in our error shape, then close.
async fn refuse_busy(mut stream: tokio::net::TcpStream, limit: usize) {
    use tokio::io::AsyncWriteExt;
    let error = crate::http::error::ApiError::rate_limited(1);
    let body = error.body().to_string();
    let head = format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nratelimit-limit: {limit}\r\nratelimit-remaining: 0\r\nratelimit-reset: 1\r\nrequest-id: {}\r\nconnection: close\r\n\r\n",
        body.len(),
        uuid::Uuid::new_v4()
    );
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), write).await;
}

// ---- background workers ----

pub fn spawn_idempotency_cleanup(
    state: AppState,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let every = Duration::from_secs(600);
        crate::workers::run_worker("idempotency-cleanup", every, every, shutdown, || async {
            match crate::workers::idempotency_cleanup_tick(&state).await? {
                0 => {}
                n => tracing::info!(deleted = n, "expired idempotency keys deleted"),
            }
            Ok::<_, sqlx::Error>(crate::workers::Pace::Wait)
        })
        .await;
    })
}

pub fn spawn_expiry(state: AppState, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let every = state.config.watcher.expiry_interval;
        crate::workers::run_worker(
            "expiry",
            every,
            Duration::from_secs(60),
            shutdown,
            || async {
                let expired = crate::workers::expiry_tick(&state).await?;
                if !expired.is_empty() {
                    tracing::info!(count = expired.len(), "sessions expired");
                }
                crate::workers::late_events_tick(&state).await?;
                Ok::<_, sqlx::Error>(crate::workers::Pace::Wait)
            },
        )
        .await;
    })
}

/// One watcher task per network and mode read from a chain.
pub fn spawn_watchers(
    state: &AppState,
    shutdown: CancellationToken,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut handles = Vec::new();
    for net in state.config.enabled_networks() {
        if !net.watched() {
            continue;
        }
        let watcher = crate::chain::watcher::Watcher::new(
            state,
            net,
            crate::chain::rpc::RetryPolicy::default(),
        )?;
        handles.push(tokio::spawn(watcher.run(shutdown.clone())));
    }
    Ok(handles)
}

/// Every background loop of `serve`: the composition production runs (tests step the
/// `workers::*_tick` functions instead, or spawn these).
pub fn spawn_workers(
    state: &AppState,
    shutdown: CancellationToken,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let state = &state.for_workers();
    let mut handles = spawn_watchers(state, shutdown.clone())?;
    let dispatcher =
        crate::webhooks::dispatcher::Dispatcher::new(state.db.clone(), &state.config.webhooks)?;
    handles.push(tokio::spawn(dispatcher.run(shutdown.clone())));
    handles.push(spawn_expiry(state.clone(), shutdown.clone()));
    handles.push(spawn_idempotency_cleanup(state.clone(), shutdown.clone()));
    for sweep in &state.config.sweeps {
        let sweeper = crate::sweep::sweeper::Sweeper::new(state, sweep)?;
        handles.push(tokio::spawn(sweeper.run(shutdown.clone())));
    }
    Ok(handles)
}

/// Serves `GET /metrics` on `addr` until `shutdown`.
pub async fn serve_metrics(
    state: &AppState,
    addr: SocketAddr,
    shutdown: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!("cannot serve metrics on {addr} (METRICS_ADDR; off turns them off): {e}")
    })?;
    let local = listener.local_addr()?;
    let router = crate::metrics::router(state.clone());
    tokio::spawn(crate::metrics::run_upkeep(shutdown.clone()));
    tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "metrics server failed");
        }
    });
    tracing::info!(addr = %local, "metrics on /metrics");
    Ok(local)
}

/// Enables TRON and BSC as simulated test networks unless the config gives them test RPCs.
pub fn enable_demo_networks(config: &mut Config) {
    for network in [Network::Tron, Network::Bsc] {
        let net = config.network_mut(network, Mode::Test);
        if net.rpc_urls.is_empty() {
            net.simulate();
        }
    }
}

/// Cancels the token on ctrl-c or SIGTERM.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => tracing::info!("ctrl-c: shutting down"),
            _ = term => tracing::info!("SIGTERM: shutting down"),
        }
        token.cancel();
    });
}
