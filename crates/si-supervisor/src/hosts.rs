//! `si-cli up --host NAME` in a configuration shared by several GPU hosts: this
//! host runs its own backends and leaves the others to theirs.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};

use si_core::Config;

use crate::SupervisorError;

/// Keeps in `config` only the backends the GPU host `host` runs (this machine),
/// and writes to `out` one line for each one left to another host. Fails, with
/// nothing started, when none is left for this one.
pub fn keep_this_hosts_backends(
    config: &mut Config,
    host: &str,
    out: &mut impl std::io::Write,
) -> Result<(), SupervisorError> {
    let placement = config
        .place_on_host(host, names_this_machine)
        .map_err(|e| SupervisorError::NotStarted(vec![e.to_string()]))?;
    for backend in &placement.elsewhere {
        writeln!(
            out,
            "left to another host: {} → {}",
            backend.name,
            backend.host_name()
        )
        .map_err(SupervisorError::io("cannot write output"))?;
    }
    config.backends = placement.here;
    Ok(())
}

/// Whether `host` (a backend URL's host) is an address of this machine, or a
/// name that resolves to one: the only addresses a server started here can
/// listen on.
fn names_this_machine(host: &str) -> bool {
    match host.parse::<IpAddr>() {
        Ok(ip) => is_local(ip),
        // An unknown name is not this machine's; llama-server could not listen
        // on it either.
        Err(_) => (host, 0)
            .to_socket_addrs()
            .is_ok_and(|mut addresses| addresses.any(|a| is_local(a.ip()))),
    }
}

/// The kernel lets a socket bind only to an address of one of this machine's
/// interfaces (or the unspecified one), which is exactly the question.
fn is_local(ip: IpAddr) -> bool {
    UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_this_machines_addresses_are_local_and_others_are_not() {
        assert!(names_this_machine("127.0.0.1"));
        assert!(names_this_machine("localhost"));
        // TEST-NET-1 (RFC 5737): assigned to no machine.
        assert!(!names_this_machine("192.0.2.1"));
        assert!(!names_this_machine("no-such-host.invalid"));
    }
}
