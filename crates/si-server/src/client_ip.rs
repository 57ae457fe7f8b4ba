//! Who the client is: the socket's address, or, only when the connection comes from
//! a configured trusted proxy, the address that proxy reports.

use std::net::{IpAddr, Ipv6Addr};

use http::HeaderMap;

/// `peer` unless it is a trusted proxy; then the rightmost `X-Forwarded-For` entry
/// that is not itself a trusted proxy (entries further left are whatever the client
/// chose to send), else `X-Real-IP`, else `peer`.
pub(crate) fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    // A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d.
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|t| t.to_canonical() == *ip);
    if !is_trusted(&peer) {
        return peer;
    }
    let mut forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .peekable();
    if forwarded.peek().is_none() {
        return headers
            .get("x-real-ip")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<IpAddr>().ok())
            .map_or(peer, |ip| ip.to_canonical());
    }
    let forwarded: Vec<&str> = forwarded.collect();
    for entry in forwarded.iter().rev() {
        match entry.parse::<IpAddr>().map(|ip| ip.to_canonical()) {
            Ok(ip) if is_trusted(&ip) => continue,
            Ok(ip) => return ip,
            // Garbage in the chain: trust nothing to its left.
            Err(_) => return peer,
        }
    }
    // Only proxies in the chain: the nearest one is all we know.
    peer
}

/// The address a client counts as (rate limits, failed logins, connection
/// shares): IPv4 whole, IPv6 by its /64, since one host or site owns a whole /64
/// and could otherwise pick a fresh address per request.
pub(crate) fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
    }
}

/// [`address_key`] as text, for the stores that count by address.
pub(crate) fn address_bucket(ip: IpAddr) -> String {
    match address_key(ip) {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("{:x}/64", u128::from(v6) >> 64),
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let outsider: IpAddr = "203.0.113.9".parse().unwrap();
        let spoof = headers(&[("x-forwarded-for", "1.2.3.4"), ("x-real-ip", "1.2.3.4")]);
        assert_eq!(client_ip(outsider, &spoof, &[proxy]), outsider);
        assert_eq!(
            client_ip(proxy, &spoof, &[proxy]),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        // The client may prepend anything; the proxy appends the real peer.
        let chain = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7")]);
        assert_eq!(
            client_ip(proxy, &chain, &[proxy]),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        let two_proxies = headers(&[("x-forwarded-for", "198.51.100.7, 10.0.0.3")]);
        let trusted = ["10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap()];
        assert_eq!(
            client_ip(proxy, &two_proxies, &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        let garbage = headers(&[("x-forwarded-for", "1.2.3.4, not-an-ip")]);
        assert_eq!(client_ip(proxy, &garbage, &[proxy]), proxy);
        let mapped: IpAddr = "::ffff:10.0.0.2".parse().unwrap();
        assert_eq!(
            client_ip(mapped, &chain, &[proxy]),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        let only_proxies = headers(&[("x-forwarded-for", "10.0.0.2"), ("x-real-ip", "6.6.6.6")]);
        assert_eq!(client_ip(proxy, &only_proxies, &[proxy]), proxy);
        let real_ip = headers(&[("x-real-ip", "198.51.100.8")]);
        assert_eq!(
            client_ip(proxy, &real_ip, &[proxy]),
            "198.51.100.8".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &[proxy]), proxy);
    }

    #[test]
    fn ipv6_addresses_are_counted_by_their_64() {
        let a = address_bucket("2001:db8:1:2::1".parse().unwrap());
        assert_eq!(a, address_bucket("2001:db8:1:2:ffff::9".parse().unwrap()));
        assert_ne!(a, address_bucket("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(
            address_bucket("::ffff:10.0.0.1".parse().unwrap()),
            "10.0.0.1"
        );
    }
}
