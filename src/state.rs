use crate::config::Config;
use crate::domain::address::AccountXpub;
use crate::domain::network::ChainFamily;
use crate::faults::Faults;
use crate::service::chain_health::HealthCache;
use crate::service::pricing::RateService;
use dashmap::DashMap;
use sqlx::PgPool;
use std::ops::Range;
use std::sync::Arc;

/// What every request handler and worker shares; a clone is one reference count.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

#[derive(Clone)]
pub struct Shared {
    /// Request handlers' pool (in the workers' copy of the state, the workers' pool).
    pub db: PgPool,
    /// The background workers' own pool, so API load cannot starve crediting, nor the reverse.
    pub workers_db: PgPool,
    pub config: Arc<Config>,
    pub rates: Arc<RateService>,
    pub xpubs: Arc<XpubCache>,
    /// Address indexes this process reserved and has not handed out yet.
    pub address_blocks: Arc<AddressBlocks>,
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
        Self(Arc::new(Shared {
            db: self.workers_db.clone(),
            ..Shared::clone(&self.0)
        }))
    }

    /// One pool for both request handlers and workers (tests, one-off commands).
    pub fn new(db: PgPool, config: Config) -> Self {
        Self::with_pools(db.clone(), db, config)
    }

    pub fn with_pools(db: PgPool, workers_db: PgPool, config: Config) -> Self {
        let rates = Arc::new(RateService::new(config.rates.clone()));
        let limits = Arc::new(crate::limits::Limiter::new(&config.rate_limits));
        Self(Arc::new(Shared {
            stopping: tokio_util::sync::CancellationToken::new(),
            workers_db,
            db,
            config: Arc::new(config),
            rates,
            xpubs: Arc::new(XpubCache::default()),
            address_blocks: Arc::default(),
            faults: Arc::default(),
            chain_health: Arc::default(),
            logos: Arc::default(),
            live: Arc::default(),
            gas_tanks: Arc::default(),
            limits,
        }))
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

/// Address indexes reserved from `address_allocators` a block at a time, so most creates run
/// no allocation statement. A graceful stop hands the unused rest back unless another process
/// reserved after it; otherwise (or after a crash) that rest, at most `BLOCK - 1` indexes per
/// key, is a gap. A block is reserved only when a create needs its first index, so no block
/// is left wholly unused.
#[derive(Default)]
pub struct AddressBlocks(DashMap<(ChainFamily, String), Arc<tokio::sync::Mutex<Range<i64>>>>);

impl AddressBlocks {
    pub const BLOCK: i64 = 16;

    /// The next index of this key, never handed out before by any process.
    pub async fn next(&self, db: &PgPool, family: ChainFamily, key_id: &str) -> sqlx::Result<i64> {
        let block = self
            .0
            .entry((family, key_id.to_owned()))
            .or_default()
            .clone();
        let mut block = block.lock().await;
        if block.is_empty() {
            let first =
                crate::db::sessions::allocate_address_indexes(db, family, key_id, Self::BLOCK)
                    .await?;
            *block = first..first + Self::BLOCK;
        }
        let index = block.start;
        block.start += 1;
        Ok(index)
    }

    /// Hands back what is left of each block where no later reservation followed it, so a
    /// stop leaves no gap; a create after this reserves a new block.
    pub async fn give_back(&self, db: &PgPool) {
        let blocks: Vec<_> = self
            .0
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        for ((family, key_id), block) in blocks {
            let mut block = block.lock().await;
            if block.is_empty() {
                continue;
            }
            match crate::db::sessions::return_address_indexes(
                db,
                family,
                &key_id,
                block.start,
                block.end,
            )
            .await
            {
                Ok(true) => block.end = block.start,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "unused address indexes not handed back"),
            }
        }
    }
}
