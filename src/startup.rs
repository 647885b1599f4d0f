//! Builds the app, binds, runs until a shutdown signal.

use crate::config::Config;
use crate::domain::api_key::Mode;
use crate::domain::network::Network;
use crate::state::AppState;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

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
    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let router = crate::http::router(self.state);
        tracing::info!(addr = %self.local_addr, "listening");
        // The peer address feeds the per-client limits (see `http::client_ip`).
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(self.listener, service)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await?;
        tracing::info!("HTTP server stopped");
        Ok(())
    }
}

/// Enables TRON and BSC as simulated test networks unless the config gives them test RPCs.
pub fn enable_demo_networks(config: &mut Config) {
    for network in [Network::Tron, Network::Bsc] {
        let net = config.network_mut(network, Mode::Test);
        if net.rpc_urls.is_empty() {
            net.simulated = true;
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
