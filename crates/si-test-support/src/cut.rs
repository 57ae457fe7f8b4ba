//! A cable to cut: a TCP forwarder between the gateway and a server it depends
//! on (PostgreSQL, Redis). [`Cut::cut`] is what a restart or an outage of that
//! server looks like from the gateway: every open connection is reset and new
//! ones are closed at once; [`Cut::restore`] puts the server back. The server
//! itself is the real one, shared by other tests, so it is never stopped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A forwarder from a local port to `target`.
pub struct Cut {
    /// Where to connect instead of the server.
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    /// Bumped at each cut; connections end when it changes.
    generation: watch::Sender<u64>,
    accept: tokio::task::JoinHandle<()>,
}

impl Cut {
    /// Forwards a fresh local port to `target`.
    pub async fn start(target: SocketAddr) -> Cut {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let (generation, _) = watch::channel(0u64);
        let accept = {
            let up = up.clone();
            let generation = generation.clone();
            tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        continue; // dropped: closed at once
                    }
                    let mut changed = generation.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut server) = TcpStream::connect(target).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = changed.changed() => {
                                // A reset, as a crashed server's kernel would send.
                                let _ = client.set_zero_linger();
                            }
                        }
                    });
                }
            })
        };
        Cut {
            addr,
            up,
            generation,
            accept,
        }
    }

    /// Resets every connection and closes new ones until [`Cut::restore`].
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// `url` with its host and port replaced by this forwarder's.
    pub fn url(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").unwrap();
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        let user = authority
            .rsplit_once('@')
            .map(|(user, _)| format!("{user}@"));
        format!(
            "{scheme}://{}{}/{path}",
            user.unwrap_or_default(),
            self.addr
        )
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        self.accept.abort();
        self.generation.send_modify(|g| *g += 1);
    }
}
