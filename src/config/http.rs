//! The HTTP side: `[http]` connection limits, `[rate_limits]`, `[idempotency]`, `[hosted]`.

use super::{bounded, err, hours, millis, secs, ConfigError};
use axum::http::HeaderName;
use ipnet::{IpNet, Ipv4Net};
use serde::Deserialize;
use std::time::Duration;

/// Connection-level limits of the HTTP server.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// A request head not received whole within this is dropped (slowloris).
    #[serde(rename = "header_read_timeout_ms", deserialize_with = "millis")]
    pub header_read_timeout: Duration,
    /// A request whose answer (body read included) takes longer gets 408.
    #[serde(rename = "request_timeout_ms", deserialize_with = "millis")]
    pub request_timeout: Duration,
    /// Open connections from one client address (an IPv6 /64) at most; more are answered 429
    /// and closed. Trusted proxies (`rate_limits.trusted_proxies`) are exempt.
    pub max_connections_per_ip: usize,
    /// Open connections in all; more are answered 429 and closed.
    pub max_connections: usize,
    /// Request line plus headers, in bytes; more is answered 431.
    pub max_header_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections_per_ip: 100,
            max_connections: 10_000,
            max_header_bytes: 32 * 1024,
        }
    }
}

impl HttpConfig {
    pub(super) fn checked(self) -> Result<Self, ConfigError> {
        let header_read_ms = self.header_read_timeout.as_millis();
        bounded("http.header_read_timeout_ms", header_read_ms, 100..=300_000)?;
        let request_ms = self.request_timeout.as_millis();
        bounded("http.request_timeout_ms", request_ms, 100..=600_000)?;
        let per_ip = self.max_connections_per_ip;
        bounded("http.max_connections_per_ip", per_ip, 1..=100_000)?;
        bounded("http.max_connections", self.max_connections, 1..=1_000_000)?;
        let header_bytes = self.max_header_bytes;
        bounded("http.max_header_bytes", header_bytes, 4096..=512 * 1024)?;
        Ok(self)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdempotencyConfig {
    /// A claim older than this whose request never finished is taken over.
    #[serde(rename = "lock_timeout_seconds", deserialize_with = "secs")]
    pub lock_timeout: Duration,
    /// Keys are kept at least this long.
    #[serde(rename = "retention_hours", deserialize_with = "hours")]
    pub retention: Duration,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        Self {
            lock_timeout: Duration::from_secs(60),
            retention: Duration::from_secs(24 * 3600),
        }
    }
}

impl IdempotencyConfig {
    pub(super) fn checked(self) -> Result<Self, ConfigError> {
        let lock_secs = self.lock_timeout.as_secs();
        bounded("idempotency.lock_timeout_seconds", lock_secs, 1..=3600)?;
        let retention_hours = self.retention.as_secs() / 3600;
        bounded("idempotency.retention_hours", retention_hours, 24..=24 * 90)?;
        Ok(self)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostedConfig {
    /// Origins allowed to frame the page (`?embed=1`); none by default.
    pub frame_ancestors: Vec<String>,
}

impl HostedConfig {
    /// Keeps each origin in its serialized form (`https://shop.example`).
    pub(super) fn checked(mut self) -> Result<Self, ConfigError> {
        for (i, origin) in self.frame_ancestors.iter_mut().enumerate() {
            let not_an_origin = || {
                let key = format!("hosted.frame_ancestors[{i}]");
                err(key, "is not an origin such as https://shop.example")
            };
            let parsed = url::Url::parse(origin).map_err(|_| not_an_origin())?;
            let serialized = parsed.origin().ascii_serialization();
            if !matches!(parsed.scheme(), "http" | "https")
                || parsed.path() != "/"
                || parsed.query().is_some()
                || origin.trim_end_matches('/') != serialized
            {
                return Err(not_an_origin());
            }
            *origin = serialized;
        }
        Ok(self)
    }
}

/// A token bucket: `burst` requests at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

/// Request limits, kept in each process's memory (see README, "Rate limits").
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    /// Per live API key, over all its routes.
    pub live: RateLimit,
    /// Per test API key.
    pub test: RateLimit,
    /// Per client address on the public routes (hosted page, view, events, logo, assets);
    /// failed authentications are charged here too.
    pub ip: RateLimit,
    /// Open live-status streams (SSE) per client address.
    pub ip_streams: u32,
    /// The header a trusted proxy puts the client's address in (`X-Forwarded-For`,
    /// `Forwarded`, `X-Real-IP` …); `None`: the TCP peer is the client.
    pub client_ip_header: Option<HeaderName>,
    /// Peers whose `client_ip_header` is believed.
    pub trusted_proxies: Vec<IpNet>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        let bucket = |per_second, burst| RateLimit { per_second, burst };
        Self {
            live: bucket(100, 200),
            test: bucket(25, 50),
            ip: bucket(20, 40),
            ip_streams: 20,
            client_ip_header: None,
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawRateLimits {
    live_per_second: Option<u32>,
    live_burst: Option<u32>,
    test_per_second: Option<u32>,
    test_burst: Option<u32>,
    ip_per_second: Option<u32>,
    ip_burst: Option<u32>,
    ip_streams: Option<u32>,
    client_ip_header: Option<String>,
    trusted_proxies: Vec<String>,
}

impl TryFrom<RawRateLimits> for RateLimitConfig {
    type Error = ConfigError;

    fn try_from(raw: RawRateLimits) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let limit = |name: &str, value: Option<u32>, default: u32| {
            let key = format!("rate_limits.{name}");
            bounded(&key, value.unwrap_or(default), 1..=1_000_000)
        };
        let bucket = |name: &str, per_second, burst, default: RateLimit| {
            let per_second = limit(
                &format!("{name}_per_second"),
                per_second,
                default.per_second,
            )?;
            let burst = limit(&format!("{name}_burst"), burst, default.burst)?;
            Ok::<_, ConfigError>(RateLimit { per_second, burst })
        };
        let live = bucket("live", raw.live_per_second, raw.live_burst, defaults.live)?;
        let test = bucket("test", raw.test_per_second, raw.test_burst, defaults.test)?;
        let ip = bucket("ip", raw.ip_per_second, raw.ip_burst, defaults.ip)?;
        let ip_streams = limit("ip_streams", raw.ip_streams, defaults.ip_streams)?;
        let client_ip_header = raw.client_ip_header.map(|name| {
            HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
                let message = format!("'{name}' is not a header name such as X-Forwarded-For");
                err("rate_limits.client_ip_header", message)
            })
        });
        let client_ip_header = client_ip_header.transpose()?;
        let mut trusted_proxies = Vec::new();
        for (i, text) in raw.trusted_proxies.iter().enumerate() {
            let key = format!("rate_limits.trusted_proxies[{i}]");
            trusted_proxies
                .push(parse_ip_net(text).map_err(|m| err(key, format!("'{text}' {m}")))?);
        }
        match (&client_ip_header, trusted_proxies.is_empty()) {
            (Some(_), true) => Err(err(
                "rate_limits.client_ip_header",
                "is believed only from rate_limits.trusted_proxies: list your proxies' addresses",
            )),
            (None, false) => Err(err(
                "rate_limits.trusted_proxies",
                "needs rate_limits.client_ip_header, the header those proxies set (X-Forwarded-For …)",
            )),
            _ => Ok(Self {
                live,
                test,
                ip,
                ip_streams,
                client_ip_header,
                trusted_proxies,
            }),
        }
    }
}

/// An address (`10.0.0.7`, `::1`) or a network (`10.0.0.0/8`, `fd00::/8`) whose host bits are
/// zero; an IPv4-mapped IPv6 form is read as the IPv4 one.
fn parse_ip_net(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    let net = match text.parse::<std::net::IpAddr>() {
        Ok(ip) => IpNet::from(ip),
        Err(_) => text
            .parse::<IpNet>()
            .map_err(|_| "is not an IP address or network such as 10.0.0.0/8".to_string())?,
    };
    if net.trunc() != net {
        return Err(format!(
            "has bits set past its prefix (the network is {})",
            net.trunc()
        ));
    }
    Ok(match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4),
            None => net,
        },
        other => other,
    })
}
