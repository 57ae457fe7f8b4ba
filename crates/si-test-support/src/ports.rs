//! Free TCP ports.

/// `N` different TCP ports free on 127.0.0.1 now: all are held until every one
/// is chosen, so that the kernel cannot hand out one twice.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
}
