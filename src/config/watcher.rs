//! `[watcher]`: what all chain watchers share.

use super::{bounded, err, millis, secs, ConfigError};
use crate::chain::denylist::{self, Denylist};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WatcherConfig {
    /// A watcher's lease on its network; another replica takes over this long after it dies.
    #[serde(rename = "lease_seconds", deserialize_with = "secs")]
    pub lease: Duration,
    /// How often open sessions past `expires_at` are checked.
    #[serde(rename = "expiry_interval_ms", deserialize_with = "millis")]
    pub expiry_interval: Duration,
    pub denylist_file: Option<PathBuf>,
    /// Senders whose transfers block the session: `denylist_file`, read.
    #[serde(skip)]
    pub denylist: Denylist,
}

impl Default for WatcherConfig {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(15),
            expiry_interval: Duration::from_secs(5),
            denylist_file: None,
            denylist: Denylist::new(),
        }
    }
}

impl WatcherConfig {
    pub(super) fn checked(mut self) -> Result<Self, ConfigError> {
        bounded("watcher.lease_seconds", self.lease.as_secs(), 2..=600)?;
        let expiry_ms = self.expiry_interval.as_millis();
        bounded("watcher.expiry_interval_ms", expiry_ms, 50..=600_000)?;
        if let Some(path) = &self.denylist_file {
            self.denylist = denylist::read(path).map_err(|m| err("watcher.denylist_file", m))?;
        }
        Ok(self)
    }
}
