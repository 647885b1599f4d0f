//! `[watcher]`: what all chain watchers share.

use super::{bounded, err, hours, millis, secs, ConfigError};
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
    /// Expired and completed sessions' addresses stay watched this long after `expires_at`,
    /// so late payments to them are still seen.
    #[serde(rename = "late_window_hours", deserialize_with = "hours")]
    pub late_window: Duration,
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
            late_window: Duration::from_secs(72 * 3600),
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
        let late_hours = self.late_window.as_secs() / 3600;
        bounded("watcher.late_window_hours", late_hours, 1..=24 * 90)?;
        if let Some(path) = &self.denylist_file {
            self.denylist = denylist::read(path).map_err(|m| err("watcher.denylist_file", m))?;
        }
        Ok(self)
    }
}
