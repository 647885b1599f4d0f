//! Sends webhook deliveries: claims due ones (`FOR UPDATE SKIP LOCKED` plus a lapsing
//! claim, so replicas never send one delivery at once and a crashed one's claims come back;
//! endpoints, and sessions within an endpoint, take turns, so no backlog holds up the others),
//! signs, POSTs with a timeout and no redirects, records every attempt, and schedules retries.

use super::signing;
use super::target::PublicOnlyResolver;
use crate::config::WebhooksConfig;
use crate::db::webhooks::{self as db, AttemptRecord, ClaimedDelivery};
use crate::domain::event::{AttemptOutcome, DeliveryStatus};
use chrono::Utc;
use futures_util::{stream, StreamExt};
use rand::Rng;
use serde_json::json;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const BATCH: i64 = 32;

/// How many due deliveries one claim ranks to take turns fairly (shared by the endpoints).
const CANDIDATES: i64 = 32 * BATCH;
const IN_FLIGHT: usize = 8;

pub struct Dispatcher {
    db: PgPool,
    config: WebhooksConfig,
    /// Public addresses only, unless the operator allows private ones (in both modes).
    client: reqwest::Client,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct DispatchReport {
    pub attempted: usize,
    pub succeeded: usize,
}

impl Dispatcher {
    pub fn new(db: PgPool, config: &WebhooksConfig) -> anyhow::Result<Self> {
        let base = || {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(config.timeout)
                .connect_timeout(config.timeout.min(Duration::from_secs(5)))
                .user_agent(concat!(
                    "checkout-server-webhooks/",
                    env!("CARGO_PKG_VERSION")
                ))
        };
        let client = if config.allow_private_targets {
            base().build()?
        } else {
            // No proxy: a proxy would resolve the name itself, past the guard.
            base()
                .no_proxy()
                .dns_resolver(Arc::new(PublicOnlyResolver))
                .build()?
        };
        Ok(Self {
            db,
            config: config.clone(),
            client,
        })
    }

    /// Sends what is due now.
    pub async fn tick(&self) -> sqlx::Result<DispatchReport> {
        // A claim outlives the whole batch: each send (DNS check included) is bounded by
        // `per_send`, and the batch goes out IN_FLIGHT at a time.
        let waves = (BATCH as u32).div_ceil(IN_FLIGHT as u32);
        let hold = self.per_send() * waves + Duration::from_secs(30);
        let claimed = db::claim_due(&self.db, BATCH, CANDIDATES, hold).await?;
        let results: Vec<sqlx::Result<bool>> =
            stream::iter(claimed.into_iter().map(|d| self.send(d)))
                .buffer_unordered(IN_FLIGHT)
                .collect()
                .await;
        let mut report = DispatchReport::default();
        for r in results {
            report.attempted += 1;
            if r? {
                report.succeeded += 1;
            }
        }
        Ok(report)
    }

    fn per_send(&self) -> Duration {
        self.config.timeout + Duration::from_secs(10)
    }

    async fn send(&self, d: ClaimedDelivery) -> sqlx::Result<bool> {
        let body = serde_json::to_vec(&json!({
            "id": d.event_id,
            "event_type": d.event_type,
            "created": d.created_at.timestamp(),
            "livemode": d.livemode,
            "data": d.data,
        }))
        .unwrap_or_default();
        let now = Utc::now();
        // The old secret signs too until its rotation's overlap is over.
        let previous = match (&d.previous_secret, d.previous_secret_until) {
            (Some(previous), Some(until)) if until > now => Some(previous.as_str()),
            _ => None,
        };
        let headers = signing::headers(&d.secret, previous, &d.event_id, now.timestamp(), &body);
        let guard_literal = !self.config.allow_private_targets;
        let started = Instant::now();
        let attempt = async {
            // A refused target looks like any unreachable one: the log must not tell a
            // merchant which internal addresses exist.
            let url = super::target::check(&d.url, guard_literal)
                .await
                .map_err(|_| AttemptOutcome::ConnectionFailed)?;
            let mut req = self
                .client
                .post(url)
                .header("content-type", "application/json")
                .body(body);
            for (k, v) in &headers {
                req = req.header(k, v);
            }
            match req.send().await {
                Ok(res) => Ok(res.status()),
                Err(e) if e.is_timeout() => Err(AttemptOutcome::Timeout),
                Err(_) => Err(AttemptOutcome::ConnectionFailed),
            }
        };
        let result = tokio::time::timeout(self.per_send(), attempt)
            .await
            .unwrap_or(Err(AttemptOutcome::Timeout));
        let duration_ms = i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX);
        let (status_code, outcome) = match result {
            Ok(status) if status.is_success() => {
                (Some(i32::from(status.as_u16())), AttemptOutcome::Delivered)
            }
            Ok(status) => (Some(i32::from(status.as_u16())), AttemptOutcome::HttpError),
            Err(outcome) => (None, outcome),
        };
        let ok = outcome == AttemptOutcome::Delivered;
        crate::metrics::webhook_attempt(outcome.as_str());
        let attempt = AttemptRecord {
            delivery_id: d.id,
            claim_token: d.claim_token,
            duration_ms,
            status_code,
            outcome,
        };
        let retry_index = usize::try_from(d.attempts).unwrap_or(usize::MAX);
        let (delivery_status, next) = if ok {
            (DeliveryStatus::Succeeded, None)
        } else if let Some(delay) = self.config.retry_schedule.get(retry_index) {
            // ±10 % so a receiver's recovery is not met by every retry at once.
            let jitter = rand::thread_rng().gen_range(0.9..=1.1);
            let delay = chrono::Duration::from_std(delay.mul_f64(jitter))
                .unwrap_or(chrono::Duration::hours(24));
            (DeliveryStatus::Pending, Some(Utc::now() + delay))
        } else {
            (DeliveryStatus::Failed, None)
        };
        if !ok {
            tracing::warn!(event.id = %d.event_id, attempt = d.attempts + 1, outcome = %attempt.outcome,
                status = ?status_code, delivery = %delivery_status, "webhook delivery failed");
        }
        db::finish_attempt(&self.db, &attempt, delivery_status, next).await?;
        Ok(ok)
    }

    /// Sends until `shutdown`: at once again while a full batch went out, else every poll
    /// interval.
    pub async fn run(self, shutdown: CancellationToken) {
        crate::workers::run_worker(
            "webhooks",
            self.config.poll_interval,
            Duration::from_secs(30),
            shutdown,
            || async {
                let report = self.tick().await?;
                Ok::<_, sqlx::Error>(if report.attempted as i64 == BATCH {
                    crate::workers::Pace::Again
                } else {
                    crate::workers::Pace::Wait
                })
            },
        )
        .await;
    }
}
