//! Which configured backend a process serves, from the TCP port it listens on
//! (Linux `/proc`; elsewhere, or without permission, nothing is matched).

use si_core::Config;

/// The backend whose port process `pid` listens on, if any.
pub fn backend_of(config: &Config, pid: u32) -> Option<String> {
    let sockets = socket_inodes(pid);
    if sockets.is_empty() {
        return None;
    }
    let ports = listening_ports(&sockets);
    config
        .backends
        .iter()
        .find(|b| ports.contains(&b.url.port))
        .map(|b| b.name.clone())
}

/// Inodes of the sockets `pid` has open.
fn socket_inodes(pid: u32) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// Local ports of listening TCP sockets among `inodes`.
fn listening_ports(inodes: &[u64]) -> Vec<u16> {
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        ports.extend(
            text.lines()
                .skip(1)
                .filter_map(|line| listening_port(line, inodes)),
        );
    }
    ports
}

/// One `/proc/net/tcp` line: `sl local rem st … inode`; state 0A is LISTEN.
fn listening_port(line: &str, inodes: &[u64]) -> Option<u16> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
    if *state != "0A" || !inodes.contains(&inode.parse().ok()?) {
        return None;
    }
    u16::from_str_radix(local.rsplit(':').next()?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_socket_line_gives_its_port() {
        let line = "   3: 0100007F:1F92 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0000000000000000 100 0 0 10 0";
        assert_eq!(listening_port(line, &[4242]), Some(8082));
        assert_eq!(listening_port(line, &[7]), None);
        let established = line.replace(" 0A ", " 01 ");
        assert_eq!(listening_port(&established, &[4242]), None);
    }

    #[test]
    fn this_process_is_no_backend() {
        let config = Config::builtin().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(backend_of(&config, std::process::id()), None);
    }
}
