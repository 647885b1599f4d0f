use crate::config::Config;
use crate::domain::address::AccountXpub;
use crate::faults::Faults;
use crate::service::chain_health::HealthCache;
use crate::service::pricing::RateService;
use dashmap::DashMap;
use sqlx::PgPool;
use std::sync::Arc;

/// What every request handler and worker shares.
#[derive(Clone)]
pub struct AppState {
    /// Request handlers' pool (in the workers' copy of the state, the workers' pool).
    pub db: PgPool,
    /// The background workers' own pool, so API load cannot starve crediting, nor the reverse.
    pub workers_db: PgPool,
    pub config: Arc<Config>,
    pub rates: Arc<RateService>,
    pub xpubs: Arc<XpubCache>,
    /// Crash points that tests arm; inert otherwise.
    pub faults: Arc<Faults>,
    pub chain_health: Arc<HealthCache>,
    pub logos: Arc<crate::service::logos::LogoCache>,
    /// Wakes open payment pages when their session changes.
    pub live: Arc<crate::service::live_status::LiveStatus>,
    /// Request limits (per process).
    pub limits: Arc<crate::limits::Limiter>,
    /// The sweepers' last gas-tank readings.
    pub gas_tanks: Arc<crate::sweep::GasTanks>,
    /// Cancelled when the server shuts down: long-lived answers (live-status streams) end.
    pub stopping: tokio_util::sync::CancellationToken,
}

impl AppState {
    /// The state the background workers run with: the same, on the workers' pool.
    pub fn for_workers(&self) -> Self {
        Self {
            db: self.workers_db.clone(),
            ..self.clone()
        }
    }

    pub fn new(db: PgPool, config: Config) -> Self {
        let rates = Arc::new(RateService::new(config.rates.clone()));
        let limits = Arc::new(crate::limits::Limiter::new(&config.rate_limits));
        Self {
            stopping: tokio_util::sync::CancellationToken::new(),
            workers_db: db.clone(),
            db,
            config: Arc::new(config),
            rates,
            xpubs: Arc::new(XpubCache::default()),
            faults: Arc::default(),
            chain_health: Arc::default(),
            logos: Arc::default(),
            live: Arc::default(),
            gas_tanks: Arc::default(),
            limits,
        }
    }
}

/// Parsed xpubs by their text, so each address costs one child derivation.
#[derive(Default)]
pub struct XpubCache(DashMap<String, Arc<AccountXpub>>);

impl XpubCache {
    pub fn get(&self, text: &str) -> Result<Arc<AccountXpub>, String> {
        if let Some(found) = self.0.get(text) {
            return Ok(found.clone());
        }
        let parsed = Arc::new(AccountXpub::parse(text)?);
        self.0.insert(text.to_owned(), parsed.clone());
        Ok(parsed)
    }
}
