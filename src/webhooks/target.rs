//! Where a webhook may be sent: http(s) only, and in live mode never to loopback, private,
//! link-local (cloud metadata) or other internal addresses, unless the operator allows it.
//! The check runs at registration and again at send time through the HTTP client's resolver,
//! which connects only to the addresses it let through (no DNS rebinding in between).

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, SocketAddr};

/// Addresses a public webhook must not reach.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1])) // carrier-grade NAT
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
                || (o[0] == 198 && (18..20).contains(&o[1])) // benchmarking
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local, incl. fd00:ec2::254
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] == 0x64 && s[1] == 0xff9b) // NAT64 of anything
        }
    }
}

/// Parses and checks a target URL; with `guard`, also resolves it and refuses internal
/// addresses. Returns the URL as given.
pub async fn check(url: &str, guard: bool) -> Result<url::Url, String> {
    if url.len() > 2048 {
        return Err("must be at most 2048 characters".into());
    }
    let parsed = url::Url::parse(url).map_err(|_| "is not an absolute URL".to_string())?;
    // Stored normalized, which can be longer than sent; the column takes up to 8,192.
    if parsed.as_str().len() > 8192 {
        return Err("is too long once normalized".into());
    }
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("must be an http or https URL".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("must not carry credentials".into());
    }
    let host = parsed
        .host()
        .ok_or_else(|| "has no host".to_string())?
        .to_owned();
    if !guard {
        return Ok(parsed);
    }
    let port = parsed.port_or_known_default().unwrap_or(443);
    let addrs: Vec<IpAddr> = match host {
        url::Host::Ipv4(ip) => vec![IpAddr::V4(ip)],
        url::Host::Ipv6(ip) => vec![IpAddr::V6(ip)],
        url::Host::Domain(name) => tokio::net::lookup_host((name.as_str(), port))
            .await
            .map_err(|_| format!("host '{name}' does not resolve"))?
            .map(|a| a.ip())
            .collect(),
    };
    if addrs.is_empty() {
        return Err("host does not resolve".into());
    }
    if let Some(ip) = addrs.into_iter().find(|ip| is_internal(*ip)) {
        return Err(format!(
            "resolves to an internal address ({ip}); live webhooks must reach a public address"
        ));
    }
    Ok(parsed)
}

/// A resolver that drops internal addresses, so a live delivery connects only to a public one.
pub struct PublicOnlyResolver;

impl Resolve for PublicOnlyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| !is_internal(a.ip()))
                .collect();
            if found.is_empty() {
                return Err(format!("'{host}' resolves to no public address").into());
            }
            let addrs: Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "255.255.255.255",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn live_targets_are_checked() {
        assert!(check("http://127.0.0.1:9000/hook", true).await.is_err());
        assert!(check("http://[::1]/hook", true).await.is_err());
        assert!(check("http://169.254.169.254/latest", true).await.is_err());
        assert!(check("http://localhost/hook", true).await.is_err());
        assert!(check("ftp://example.com/", true).await.is_err());
        assert!(check("https://user:pw@example.com/", false).await.is_err());
        assert!(check("http://127.0.0.1:9000/hook", false).await.is_ok());
        assert!(check("https://93.184.216.34/hook", true).await.is_ok());
    }
}
