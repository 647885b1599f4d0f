//! `[webhooks]`: delivery of events to merchants.

use super::{bounded, err, millis, secs_list, ConfigError};
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    pub allow_private_targets: bool,
    /// One delivery attempt's limit.
    #[serde(rename = "timeout_ms", deserialize_with = "millis")]
    pub timeout: Duration,
    /// Waits before each retry; after the last, the delivery is `failed`.
    #[serde(rename = "retry_schedule_seconds", deserialize_with = "secs_list")]
    pub retry_schedule: Vec<Duration>,
    #[serde(rename = "poll_interval_ms", deserialize_with = "millis")]
    pub poll_interval: Duration,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            allow_private_targets: false,
            timeout: Duration::from_secs(10),
            retry_schedule: [15, 60, 300, 3600, 6 * 3600, 24 * 3600]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            poll_interval: Duration::from_secs(1),
        }
    }
}

impl WebhooksConfig {
    pub(super) fn checked(self) -> Result<Self, ConfigError> {
        let timeout_ms = self.timeout.as_millis();
        bounded("webhooks.timeout_ms", timeout_ms, 100..=60_000)?;
        let week = Duration::from_secs(7 * 24 * 3600);
        if self.retry_schedule.len() > 20 || self.retry_schedule.iter().any(|s| *s > week) {
            return Err(err(
                "webhooks.retry_schedule_seconds",
                "at most 20 waits of at most 7 days each",
            ));
        }
        let poll_ms = self.poll_interval.as_millis();
        bounded("webhooks.poll_interval_ms", poll_ms, 10..=60_000)?;
        Ok(self)
    }
}
