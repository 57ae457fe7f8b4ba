//! Who the client is: the socket's address, or, only when the connection comes from
//! a configured trusted proxy, the address that proxy reports.

use std::net::IpAddr;

use http::HeaderMap;

/// The client address of a request, put in its extensions by the router.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ClientAddr(pub IpAddr);

/// `peer` unless it is a trusted proxy; then the rightmost `X-Forwarded-For` entry
/// that is not itself a trusted proxy (entries further left are whatever the client
/// chose to send), else `X-Real-IP`, else `peer`.
pub(crate) fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for entry in forwarded.iter().rev() {
        match entry.parse::<IpAddr>() {
            Ok(ip) if trusted.contains(&ip) => continue,
            Ok(ip) => return ip,
            // Garbage in the chain: trust nothing to its left.
            Err(_) => return peer,
        }
    }
    headers
        .get("x-real-ip")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(peer)
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
        let real_ip = headers(&[("x-real-ip", "198.51.100.8")]);
        assert_eq!(
            client_ip(proxy, &real_ip, &[proxy]),
            "198.51.100.8".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &[proxy]), proxy);
    }
}
