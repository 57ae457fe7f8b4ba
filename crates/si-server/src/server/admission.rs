//! Which connections a listener takes: at most a cap open at once, and at most a
//! share of them from one client address, so that neither a flood nor one client can
//! take every connection (and with them the process's descriptors). A connection
//! past either limit is answered at once with a short error and closed, before its
//! request is read: the accept loop never waits, so a flood cannot delay anyone
//! else's connection.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::client_ip::address_key;

/// Most refused connections reading out their request at once.
const MAX_LINGERING: usize = 64;
/// How long a refused connection may read out its request.
const LINGER: Duration = Duration::from_secs(1);

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The listener has its cap of connections open.
    Full { cap: usize },
    /// The client's address has its share open.
    AddressFull { per_address: usize },
}

impl Refused {
    fn reason(self) -> &'static str {
        match self {
            Refused::Full { .. } => "listener_full",
            Refused::AddressFull { .. } => "address_full",
        }
    }
}

/// A listener's connection limits and what is open now.
#[derive(Clone, Debug)]
pub(crate) struct Admission {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The listener, as the metrics name it.
    listener: &'static str,
    cap: usize,
    per_address: usize,
    /// Addresses without a share limit (trusted proxies carry many clients).
    exempt: Vec<IpAddr>,
    open: Mutex<Open>,
    /// Refused connections reading out their request before they close.
    lingering: Arc<Semaphore>,
    /// The whole responses that refuse a connection, made once.
    full: Bytes,
    address_full: Bytes,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// An admitted connection; dropping it frees its place.
#[derive(Debug)]
pub(crate) struct Admitted {
    inner: Arc<Inner>,
    /// The address it counts against (`None`: exempt).
    address: Option<IpAddr>,
}

impl Admission {
    /// Limits for `listener`: `cap` connections, `per_address` from one address
    /// except from `exempt` ones.
    pub(crate) fn new(
        listener: &'static str,
        cap: usize,
        per_address: usize,
        exempt: &[IpAddr],
    ) -> Self {
        let full = Refused::Full { cap };
        let address_full = Refused::AddressFull { per_address };
        Admission {
            inner: Arc::new(Inner {
                listener,
                cap,
                per_address,
                exempt: exempt.iter().map(|ip| ip.to_canonical()).collect(),
                open: Mutex::default(),
                lingering: Arc::new(Semaphore::new(MAX_LINGERING)),
                full: crate::error::refused_connection(full),
                address_full: crate::error::refused_connection(address_full),
            }),
        }
    }

    /// Takes a place for a connection from `peer`, or says why there is none.
    pub(crate) fn admit(&self, peer: IpAddr) -> Result<Admitted, Refused> {
        let inner = &self.inner;
        let peer = peer.to_canonical();
        let address = (!inner.exempt.contains(&peer)).then(|| address_key(peer));
        let mut open = inner.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.total >= inner.cap {
            return Err(self.refused(Refused::Full { cap: inner.cap }));
        }
        if let Some(address) = address {
            let count = open.by_address.entry(address).or_insert(0);
            if *count >= inner.per_address {
                return Err(self.refused(Refused::AddressFull {
                    per_address: inner.per_address,
                }));
            }
            *count += 1;
        }
        open.total += 1;
        crate::metrics::connections_open(inner.listener, open.total);
        Ok(Admitted {
            inner: inner.clone(),
            address,
        })
    }

    /// The bytes that answer a connection refused for `refused`.
    fn refusal(&self, refused: Refused) -> Bytes {
        match refused {
            Refused::Full { .. } => self.inner.full.clone(),
            Refused::AddressFull { .. } => self.inner.address_full.clone(),
        }
    }

    /// Answers `stream` with the refusal and closes it. The answer is sent straight
    /// to the socket (a fresh socket's buffer has room for it), then the sending
    /// side is shut. Closing with the client's request still unread would make the
    /// kernel reset the connection, which can destroy the answer on its way; so,
    /// while few refused connections are doing so, what the client sends is read
    /// and dropped for up to a second first.
    pub(crate) fn refuse(&self, stream: TcpStream, refused: Refused) {
        let socket = socket2::SockRef::from(&stream);
        let _ = socket.send(&self.refusal(refused));
        let _ = socket.shutdown(std::net::Shutdown::Write);
        let Ok(lingering) = self.inner.lingering.clone().try_acquire_owned() else {
            return;
        };
        tokio::spawn(async move {
            let _lingering = lingering;
            let mut stream = stream;
            let mut sink = [0u8; 4096];
            let drain = async {
                for _ in 0..16 {
                    if !matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(LINGER, drain).await;
        });
    }

    fn refused(&self, refused: Refused) -> Refused {
        crate::metrics::connection_refused(self.inner.listener, refused.reason());
        refused
    }

    /// Connections open now.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.inner
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .total
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.inner.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(address) = self.address
            && let Some(count) = open.by_address.get_mut(&address)
        {
            *count -= 1;
            if *count == 0 {
                open.by_address.remove(&address);
            }
        }
        crate::metrics::connections_open(self.inner.listener, open.total);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn one_address_gets_its_share_and_others_still_get_in() {
        let admission = Admission::new("test", 10, 3, &[]);
        let flood: Vec<_> = (0..3)
            .map(|_| admission.admit(ip("10.0.0.1")).unwrap())
            .collect();
        assert_eq!(
            admission.admit(ip("10.0.0.1")).unwrap_err(),
            Refused::AddressFull { per_address: 3 }
        );
        // The IPv4-mapped form is the same client.
        assert!(admission.admit(ip("::ffff:10.0.0.1")).is_err());
        let other = admission.admit(ip("10.0.0.2")).unwrap();
        assert_eq!(admission.open(), 4);
        drop(flood);
        assert_eq!(admission.open(), 1);
        assert!(admission.admit(ip("10.0.0.1")).is_ok());
        drop(other);
    }

    #[test]
    fn an_ipv6_client_counts_by_its_64() {
        let admission = Admission::new("test", 10, 2, &[]);
        let _a = admission.admit(ip("2001:db8:1:2::1")).unwrap();
        let _b = admission.admit(ip("2001:db8:1:2:ffff::9")).unwrap();
        assert!(admission.admit(ip("2001:db8:1:2::77")).is_err());
        assert!(admission.admit(ip("2001:db8:1:3::1")).is_ok());
    }

    #[test]
    fn the_cap_holds_for_everyone_and_proxies_are_exempt_from_shares() {
        let admission = Admission::new("test", 4, 1, &[ip("10.9.9.9")]);
        let proxied: Vec<_> = (0..3)
            .map(|_| admission.admit(ip("10.9.9.9")).unwrap())
            .collect();
        let _one = admission.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(
            admission.admit(ip("10.0.0.2")).unwrap_err(),
            Refused::Full { cap: 4 }
        );
        assert_eq!(
            admission.admit(ip("10.9.9.9")).unwrap_err(),
            Refused::Full { cap: 4 }
        );
        drop(proxied);
        assert!(admission.admit(ip("10.0.0.2")).is_ok());
    }

    #[test]
    fn refusals_are_whole_http_responses() {
        let admission = Admission::new("test", 1, 1, &[]);
        let text = String::from_utf8(
            admission
                .refusal(Refused::AddressFull { per_address: 1 })
                .to_vec(),
        )
        .unwrap();
        assert!(
            text.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "too_many_connections_from_address");
        let text = String::from_utf8(admission.refusal(Refused::Full { cap: 1 }).to_vec()).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nretry-after: 1\r\n"), "{text}");
    }
}
