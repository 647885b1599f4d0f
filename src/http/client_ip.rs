//! Who the client is: the TCP peer, or, when the peer is a trusted proxy, the address that
//! proxy reports in the configured header.
//!
//! Proxies append the address they received a request from, so a list such as
//! `X-Forwarded-For: <forged>, <client>, <proxy 1>` is read from the right: trusted proxies
//! are skipped and the first address that is not one of them is the client. Anything to its
//! left could have been written by the client itself and is never believed. An entry that is
//! not an address stops the walk at the last trusted hop.

use crate::config::RateLimitConfig;
use axum::http::{HeaderMap, HeaderName};
use std::net::{IpAddr, SocketAddr};

pub fn client_ip(peer: IpAddr, headers: &HeaderMap, config: &RateLimitConfig) -> IpAddr {
    let peer = peer.to_canonical();
    let Some(header) = &config.client_ip_header else {
        return peer;
    };
    let trusted = |ip: IpAddr| config.trusted_proxies.iter().any(|net| net.contains(&ip));
    if !trusted(peer) {
        return peer;
    }
    let forwarded = header == HeaderName::from_static("forwarded");
    let mut hop = peer;
    for value in headers.get_all(header).iter().rev() {
        let Ok(text) = value.to_str() else {
            return hop;
        };
        for entry in text.rsplit(',').map(str::trim).filter(|e| !e.is_empty()) {
            let parsed = if forwarded {
                forwarded_for(entry).and_then(parse_hop)
            } else {
                parse_hop(entry)
            };
            let Some(ip) = parsed else {
                return hop;
            };
            if !trusted(ip) {
                return ip;
            }
            hop = ip;
        }
    }
    // Every hop is a trusted proxy: the request started inside; the farthest one is the client.
    hop
}

/// `203.0.113.7`, `203.0.113.7:51234`, `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:443`.
fn parse_hop(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(addr) = entry.parse::<SocketAddr>() {
        return Some(addr.ip().to_canonical());
    }
    entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .and_then(|e| e.parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
}

/// The `for=` parameter of one RFC 7239 `Forwarded` element, unquoted.
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then(|| value.trim().trim_matches('"'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn config(header: Option<&'static str>, trusted: &[&str]) -> RateLimitConfig {
        RateLimitConfig {
            client_ip_header: header.map(HeaderName::from_static),
            trusted_proxies: trusted.iter().map(|t| t.parse().unwrap()).collect(),
            ..RateLimitConfig::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(name: &'static str, values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(name, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    const PROXY: &str = "10.0.0.5";

    fn xff(values: &[&[u8]]) -> IpAddr {
        let c = config(Some("x-forwarded-for"), &["10.0.0.0/8", "192.168.1.1/32"]);
        client_ip(ip(PROXY), &headers("x-forwarded-for", values), &c)
    }

    #[test]
    fn without_a_configured_header_the_peer_is_the_client() {
        let h = headers("x-forwarded-for", &[b"203.0.113.9"]);
        assert_eq!(client_ip(ip(PROXY), &h, &config(None, &[])), ip("10.0.0.5"));
        // IPv4-mapped peers (a dual-stack listener) read as IPv4.
        assert_eq!(
            client_ip(ip("::ffff:198.51.100.1"), &h, &config(None, &[])),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn the_header_is_believed_only_from_trusted_peers() {
        let c = config(Some("x-forwarded-for"), &["10.0.0.0/8"]);
        let h = headers("x-forwarded-for", &[b"203.0.113.9"]);
        assert_eq!(client_ip(ip("198.51.100.1"), &h, &c), ip("198.51.100.1"));
        assert_eq!(client_ip(ip("10.1.2.3"), &h, &c), ip("203.0.113.9"));
        // No header from a trusted proxy: the proxy is all we know.
        assert_eq!(
            client_ip(ip("10.1.2.3"), &HeaderMap::new(), &c),
            ip("10.1.2.3")
        );
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        assert_eq!(xff(&[b"203.0.113.9"]), ip("203.0.113.9"));
        // The client forged the leftmost entries; our proxies appended the real ones.
        assert_eq!(
            xff(&[b"1.1.1.1, 198.51.100.77, 203.0.113.9, 192.168.1.1"]),
            ip("203.0.113.9")
        );
        // Several header lines form one list, in order.
        assert_eq!(
            xff(&[b"1.1.1.1", b"203.0.113.9,10.9.9.9"]),
            ip("203.0.113.9")
        );
        // Ports and brackets, as some proxies write them; IPv6.
        assert_eq!(xff(&[b"203.0.113.9:50123"]), ip("203.0.113.9"));
        assert_eq!(xff(&[b"[2001:db8::7]:443"]), ip("2001:db8::7"));
        assert_eq!(xff(&[b"[2001:db8::7]"]), ip("2001:db8::7"));
        assert_eq!(xff(&[b"2001:db8::7"]), ip("2001:db8::7"));
        // Every hop trusted: the farthest.
        assert_eq!(xff(&[b"10.7.7.7, 10.8.8.8"]), ip("10.7.7.7"));
        // Empty entries are skipped.
        assert_eq!(xff(&[b" , 203.0.113.9 ,"]), ip("203.0.113.9"));
    }

    #[test]
    fn garbage_stops_at_the_last_trusted_hop_and_never_panics() {
        assert_eq!(xff(&[b"not-an-ip"]), ip(PROXY));
        assert_eq!(xff(&[b"203.0.113.9, garbage, 10.1.1.1"]), ip("10.1.1.1"));
        assert_eq!(xff(&[b"unknown"]), ip(PROXY));
        assert_eq!(xff(&[b"\xff\xfe"]), ip(PROXY));
        assert_eq!(xff(&[b"1.2.3.4.5", b"[::1"]), ip(PROXY));
        assert_eq!(xff(&[b"999.1.1.1"]), ip(PROXY));
        assert_eq!(xff(&[b""]), ip(PROXY));
        assert_eq!(xff(&[",".repeat(10_000).as_bytes()]), ip(PROXY));
        assert_eq!(xff(&["10.0.0.1,".repeat(5_000).as_bytes()]), ip("10.0.0.1"));
    }

    #[test]
    fn forwarded_and_single_address_headers() {
        let c = config(Some("forwarded"), &["10.0.0.0/8"]);
        let h = headers(
            "forwarded",
            &[b"for=1.1.1.1, for=\"[2001:db8:cafe::17]:4711\";proto=https, For=10.0.0.9;by=10.0.0.1"],
        );
        assert_eq!(client_ip(ip(PROXY), &h, &c), ip("2001:db8:cafe::17"));
        let h = headers("forwarded", &[b"proto=https;for=_hidden"]);
        assert_eq!(client_ip(ip(PROXY), &h, &c), ip(PROXY));
        let h = headers("forwarded", &[b"proto=https"]);
        assert_eq!(client_ip(ip(PROXY), &h, &c), ip(PROXY));

        let c = config(Some("x-real-ip"), &["10.0.0.0/8"]);
        let h = headers("x-real-ip", &[b"203.0.113.50"]);
        assert_eq!(client_ip(ip(PROXY), &h, &c), ip("203.0.113.50"));
    }
}
