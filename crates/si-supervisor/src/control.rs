//! The supervisor's control socket: `si-cli status` and `si-cli stop` talk to a
//! running `si-cli up` through a Unix socket in the data directory (mode 0600, so
//! only the user it runs as can stop it). One line in (`status` or `stop`), one
//! JSON document or `stopped` out.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::SupervisorError;
use crate::state::{Shared, Snapshot};

/// The socket's file name in the data directory.
pub const SOCKET: &str = "supervisor.sock";

/// Where the control socket of the supervisor for this data directory is.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET)
}

/// Why a request to the supervisor failed.
#[derive(Debug)]
pub enum ClientError {
    /// Nothing listens on the socket.
    NotRunning,
    /// It answered something else, or broke off.
    Failed(String),
}

/// What `status` answers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusReply {
    /// The supervisor's own process id.
    pub pid: u32,
    /// Every process, model servers first, then the gateway.
    pub processes: Snapshot,
}

/// Binds the socket, refusing if another supervisor answers on it and replacing a
/// stale one left by a supervisor that was killed.
pub async fn bind(path: &Path) -> Result<UnixListener, SupervisorError> {
    let at = |what: &str| SupervisorError::io(format!("{what} {}", path.display()));
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(SupervisorError::AlreadyRunning(path.to_owned()));
        }
        std::fs::remove_file(path).map_err(at("cannot remove the stale socket"))?;
    }
    let listener = UnixListener::bind(path).map_err(at("cannot listen on"))?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(at("cannot restrict"))?;
    Ok(listener)
}

/// Answers requests until `finished` is cancelled, then finishes the answers under
/// way. `stop` cancels `stop`, and its answer waits until the supervisor has
/// stopped everything.
pub async fn serve(
    listener: UnixListener,
    shared: Shared,
    stop: CancellationToken,
    finished: CancellationToken,
) {
    let mut answers = tokio::task::JoinSet::new();
    loop {
        while answers.try_join_next().is_some() {}
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    // Out of descriptors, say: wait rather than spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = finished.cancelled() => break,
        };
        // The socket is 0600, but only from just after it was bound: check who
        // is asking, too.
        let own = rustix::process::getuid().as_raw();
        match stream.peer_cred() {
            Ok(peer) if peer.uid() == own || peer.uid() == 0 => {}
            _ => continue,
        }
        let (shared, stop, finished) = (shared.clone(), stop.clone(), finished.clone());
        answers.spawn(answer(stream, shared, stop, finished));
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while answers.join_next().await.is_some() {}
    })
    .await;
}

/// Reads one request from `stream` and answers it.
async fn answer(
    stream: UnixStream,
    shared: Shared,
    stop: CancellationToken,
    finished: CancellationToken,
) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(64);
    let read = tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line));
    if !matches!(read.await, Ok(Ok(_))) {
        return;
    }
    let reply = match line.trim() {
        "status" => {
            let reply = StatusReply {
                pid: std::process::id(),
                processes: shared.snapshot(),
            };
            serde_json::to_string(&reply).unwrap_or_default()
        }
        "stop" => {
            stop.cancel();
            finished.cancelled().await;
            "stopped".to_owned()
        }
        _ => "unknown request: expected `status` or `stop`".to_owned(),
    };
    let _ = write.write_all(format!("{reply}\n").as_bytes()).await;
}

async fn request(path: &Path, what: &str, timeout: Duration) -> Result<String, ClientError> {
    let mut stream = match UnixStream::connect(path).await {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(ClientError::NotRunning);
        }
        Err(e) => {
            return Err(ClientError::Failed(format!(
                "cannot reach the supervisor at {}: {e}",
                path.display()
            )));
        }
    };
    let exchange = async {
        stream.write_all(format!("{what}\n").as_bytes()).await?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).await?;
        Ok::<_, io::Error>(line)
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(line)) if !line.is_empty() => Ok(line),
        Ok(Ok(_)) => Err(ClientError::Failed(
            "the supervisor closed the connection without answering".into(),
        )),
        Ok(Err(e)) => Err(ClientError::Failed(format!(
            "the supervisor's answer broke off: {e}"
        ))),
        Err(_) => Err(ClientError::Failed(format!(
            "the supervisor did not answer within {} s",
            timeout.as_secs()
        ))),
    }
}

/// Asks the supervisor for every process's state.
pub async fn status(path: &Path) -> Result<StatusReply, ClientError> {
    let line = request(path, "status", Duration::from_secs(5)).await?;
    serde_json::from_str(&line)
        .map_err(|e| ClientError::Failed(format!("the supervisor's answer is not status: {e}")))
}

/// Asks the supervisor to stop everything, and waits until it has, at most
/// `timeout`.
pub async fn stop(path: &Path, timeout: Duration) -> Result<(), ClientError> {
    match request(path, "stop", timeout).await?.trim() {
        "stopped" => Ok(()),
        other => Err(ClientError::Failed(format!(
            "unexpected answer from the supervisor: {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_supervisor_is_refused_and_a_stale_socket_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_path(dir.path());
        let first = bind(&path).await.unwrap();
        let error = bind(&path).await.unwrap_err().to_string();
        assert!(error.contains("already running here"), "{error}");
        drop(first);
        // The file outlives its listener, as after a SIGKILL: it is replaced.
        assert!(path.exists());
        let _second = bind(&path).await.unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }

    #[tokio::test]
    async fn status_and_unknown_requests_are_answered() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_path(dir.path());
        let listener = bind(&path).await.unwrap();
        let (stop, finished) = (CancellationToken::new(), CancellationToken::new());
        let server = tokio::spawn(serve(
            listener,
            Shared::default(),
            stop.clone(),
            finished.clone(),
        ));
        let reply = status(&path).await.unwrap();
        assert_eq!(reply.pid, std::process::id());
        assert!(reply.processes.is_empty());
        let answer = request(&path, "restart", Duration::from_secs(5))
            .await
            .unwrap();
        assert!(answer.starts_with("unknown request"), "{answer}");
        assert!(!stop.is_cancelled());
        finished.cancel();
        server.await.unwrap();
    }
}
