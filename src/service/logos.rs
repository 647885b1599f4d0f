//! Merchant logos, fetched by the server and served from its own origin, so the payment page
//! makes no request to another host. Raster images only (no SVG: it can carry script), at most
//! 512 KiB, cached for an hour. Live sessions' logos must be on public addresses, like webhooks.

use crate::webhooks::target::{self, PublicOnlyResolver};
use axum::body::Bytes;
use dashmap::DashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const MAX_BYTES: usize = 512 * 1024;
const TTL: Duration = Duration::from_secs(3600);
const MAX_ENTRIES: usize = 2000;
const TYPES: [&str; 4] = ["image/png", "image/jpeg", "image/gif", "image/webp"];

#[derive(Clone)]
pub struct Logo {
    pub content_type: &'static str,
    pub bytes: Bytes,
}

pub struct LogoCache {
    entries: DashMap<String, (Instant, Option<Logo>)>,
    /// `None` if it could not be built: public-only fetches then fail closed.
    guarded: Option<reqwest::Client>,
    open: Option<reqwest::Client>,
}

impl LogoCache {
    pub fn new() -> Self {
        let base = || reqwest::Client::builder().timeout(Duration::from_secs(5));
        // A redirect to an internal IP literal would bypass the resolver: stop there.
        let public_redirects = reqwest::redirect::Policy::custom(|attempt| {
            let internal_literal = match attempt.url().host() {
                Some(url::Host::Ipv4(ip)) => target::is_internal(ip.into()),
                Some(url::Host::Ipv6(ip)) => target::is_internal(ip.into()),
                _ => false,
            };
            if attempt.previous().len() >= 3 || internal_literal {
                attempt.stop()
            } else {
                attempt.follow()
            }
        });
        Self {
            entries: DashMap::new(),
            guarded: base()
                .redirect(public_redirects)
                .no_proxy()
                .dns_resolver(Arc::new(PublicOnlyResolver))
                .build()
                .ok(),
            open: base()
                .redirect(reqwest::redirect::Policy::limited(3))
                .build()
                .ok(),
        }
    }

    /// The logo at `url`, or `None` when it cannot be had (cached either way).
    pub async fn get(&self, url: &str, public_only: bool) -> Option<Logo> {
        let key = format!("{public_only}:{url}");
        if let Some(hit) = self.entries.get(&key) {
            if hit.0.elapsed() < TTL {
                return hit.1.clone();
            }
        }
        let logo = self.fetch(url, public_only).await;
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.clear();
        }
        self.entries.insert(key, (Instant::now(), logo.clone()));
        logo
    }

    async fn fetch(&self, url: &str, public_only: bool) -> Option<Logo> {
        let url = target::check(url, public_only).await.ok()?;
        let client = if public_only {
            self.guarded.as_ref()?
        } else {
            self.open.as_ref()?
        };
        let mut res = client.get(url).send().await.ok()?;
        if !res.status().is_success() {
            return None;
        }
        let declared = res
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })?;
        let content_type = TYPES.into_iter().find(|t| *t == declared)?;
        let mut body = Vec::new();
        while let Some(chunk) = res.chunk().await.ok()? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_BYTES {
                return None;
            }
        }
        Some(Logo {
            content_type,
            bytes: Bytes::from(body),
        })
    }
}

impl Default for LogoCache {
    fn default() -> Self {
        Self::new()
    }
}
