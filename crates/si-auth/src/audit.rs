//! The audit trail: one record per request, metadata only, append-only and
//! tamper-evident.
//!
//! A record says who (user, role, location, client address), what (method, path,
//! agent, model, backend), and how it went (status, tokens, latency): never a
//! prompt, an answer, a token or a key. Each record's hash covers the previous
//! record's hash, so editing, removing or reordering a record breaks the chain at
//! that point ([`verify`]).
//!
//! Records are written by one thread in batches, one SQLite transaction per batch
//! (atomic: a crash never leaves half a record). [`AuditLog::append`] waits until
//! its record is committed, so a request's record exists before the request is
//! finished; waiting costs one batch commit (WAL, no fsync per commit).

mod verify;

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use crate::AuthError;

pub use verify::{VerifyReport, export, verify, verify_with_head};

/// The audit log's file name inside the data directory.
pub const AUDIT_FILE: &str = "audit.db";

/// The hash before the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Most records committed in one transaction.
const MAX_BATCH: usize = 512;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit (
    seq       INTEGER PRIMARY KEY NOT NULL,
    at_ms     INTEGER NOT NULL,
    record    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_at ON audit (at_ms);
";

/// What one request did. Field order is the canonical order the hash covers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// Position in the chain, assigned when written (from 1).
    pub seq: u64,
    /// When the request arrived, RFC 3339 UTC with milliseconds.
    pub at: String,
    /// The request id (also sent back as `x-request-id`).
    pub request_id: String,
    /// Authenticated user, if any.
    pub user: Option<String>,
    /// The user's role.
    pub role: Option<String>,
    /// The location from the token.
    pub location: Option<String>,
    /// Client address.
    pub client_ip: String,
    /// HTTP method.
    pub method: String,
    /// Path (never the query string).
    pub path: String,
    /// Agent that was asked.
    pub agent: Option<String>,
    /// Model that answered.
    pub model: Option<String>,
    /// Backend that answered.
    pub backend: Option<String>,
    /// Status sent to the client (499 if the client went away first).
    pub status: u16,
    /// Prompt tokens, from the model server's usage report.
    pub prompt_tokens: Option<u64>,
    /// Completion tokens, from the model server's usage report.
    pub completion_tokens: Option<u64>,
    /// Milliseconds from arrival to the last byte.
    pub latency_ms: f64,
}

/// SHA-256 over the previous hash and the record's canonical JSON.
pub(crate) fn chain_hash(prev_hash: &str, record_json: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(b"\n");
    hasher.update(record_json.as_bytes());
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

type Pending = (
    AuditRecord,
    Option<oneshot::Sender<Result<(), AuditUnavailable>>>,
);

/// A record could not be written to the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the audit trail cannot be written")]
pub struct AuditUnavailable;

/// Tries per batch before its records are reported lost.
const WRITE_ATTEMPTS: u32 = 3;
/// The head of the chain is logged every this many records, so a copy of it lives
/// outside the database (see `verify --expect-head`).
const HEAD_LOG_EVERY: u64 = 1000;

/// The open audit log and its writer thread.
#[derive(Debug)]
pub struct AuditLog {
    sender: Option<Sender<Pending>>,
    writer: Option<JoinHandle<()>>,
    path: PathBuf,
}

impl AuditLog {
    /// Opens (creating, mode 0600) the log at `path` and starts its writer.
    pub fn open(path: &Path) -> Result<Self, AuthError> {
        Self::open_with(path, std::time::Duration::from_secs(5))
    }

    /// [`AuditLog::open`], waiting at most `busy` for a lock on the database.
    pub(crate) fn open_with(path: &Path, busy: std::time::Duration) -> Result<Self, AuthError> {
        let conn = open_db(path, busy)?;
        let head = chain_head(&conn).map_err(|e| AuthError::store(path, e))?;
        let (sender, receiver) = mpsc::channel();
        let writer_path = path.to_owned();
        let writer = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || write_loop(conn, head, receiver, &writer_path))
            .map_err(|e| AuthError::store(path, e))?;
        Ok(AuditLog {
            sender: Some(sender),
            writer: Some(writer),
            path: path.to_owned(),
        })
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `record` and waits until it is committed.
    /// Appends `record` and waits until it is committed. An error means it could
    /// not be written (the gateway then refuses to complete the request).
    pub async fn append(&self, record: AuditRecord) -> Result<(), AuditUnavailable> {
        let (done, committed) = oneshot::channel();
        if !self.send(record, Some(done)) {
            return Err(AuditUnavailable);
        }
        committed.await.unwrap_or(Err(AuditUnavailable))
    }

    /// Appends `record` without waiting (for paths that cannot wait, such as a
    /// response body dropped by a client that went away).
    pub fn append_detached(&self, record: AuditRecord) {
        self.send(record, None);
    }

    fn send(
        &self,
        record: AuditRecord,
        done: Option<oneshot::Sender<Result<(), AuditUnavailable>>>,
    ) -> bool {
        let sent = self
            .sender
            .as_ref()
            .is_some_and(|s| s.send((record, done)).is_ok());
        if !sent {
            tracing::error!(path = %self.path.display(), "audit writer stopped; record lost");
        }
        sent
    }
}

impl Drop for AuditLog {
    /// Flushes what is queued before returning.
    fn drop(&mut self) {
        drop(self.sender.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

fn open_db(path: &Path, busy: std::time::Duration) -> Result<Connection, AuthError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        crate::secret::create_private_dir(parent).map_err(|e| AuthError::store(path, e))?;
    }
    let conn = Connection::open(path).map_err(|e| AuthError::store(path, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| AuthError::store(path, e))?;
    }
    conn.busy_timeout(busy)
        .and_then(|()| conn.pragma_update(None, "journal_mode", "WAL"))
        .and_then(|()| conn.pragma_update(None, "synchronous", "NORMAL"))
        .and_then(|()| conn.execute_batch(SCHEMA))
        .map_err(|e| AuthError::store(path, e))?;
    Ok(conn)
}

/// The last record's sequence number and hash.
fn chain_head(conn: &Connection) -> rusqlite::Result<(u64, String)> {
    let head = conn
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
        )
        .optional()?;
    Ok(head.map_or((0, GENESIS_HASH.to_owned()), |(seq, hash)| {
        (u64::try_from(seq).unwrap_or(0), hash)
    }))
}

fn write_loop(
    mut conn: Connection,
    mut head: (u64, String),
    receiver: Receiver<Pending>,
    path: &Path,
) {
    while let Ok(first) = receiver.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let mut outcome = Err(AuditUnavailable);
        for attempt in 1..=WRITE_ATTEMPTS {
            match write_batch(&mut conn, &head, &mut batch) {
                Ok(new_head) => {
                    log_head_now_and_then(head.0, &new_head);
                    head = new_head;
                    outcome = Ok(());
                    break;
                }
                // The transaction rolled back: the chain on disk is intact. Say so
                // loudly, without the records' contents.
                Err(e) => {
                    tracing::error!(path = %path.display(), records = batch.len(), attempt, error = %e, "audit write failed");
                    std::thread::sleep(std::time::Duration::from_millis(50 * u64::from(attempt)));
                }
            }
        }
        for (_, done) in batch {
            if let Some(done) = done {
                let _ = done.send(outcome);
            }
        }
    }
}

fn log_head_now_and_then(before: u64, (seq, hash): &(u64, String)) {
    if before / HEAD_LOG_EVERY != seq / HEAD_LOG_EVERY {
        tracing::info!(seq, hash = %hash, "audit chain head");
    }
}

fn write_batch(
    conn: &mut Connection,
    head: &(u64, String),
    batch: &mut [Pending],
) -> rusqlite::Result<(u64, String)> {
    let tx = conn.transaction()?;
    let (mut seq, mut prev) = head.clone();
    for (record, _) in batch.iter_mut() {
        seq += 1;
        record.seq = seq;
        let json = serde_json::to_string(record)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        let hash = chain_hash(&prev, &json);
        let at_ms = at_millis(&record.at);
        tx.execute(
            "INSERT INTO audit (seq, at_ms, record, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                i64::try_from(seq).unwrap_or(i64::MAX),
                at_ms,
                json,
                prev,
                hash
            ],
        )?;
        prev = hash;
    }
    tx.commit()?;
    Ok((seq, prev))
}

/// Milliseconds since the Unix epoch of an RFC 3339 time (0 if unparsable).
pub(crate) fn at_millis(at: &str) -> i64 {
    humantime::parse_rfc3339_weak(at)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The current time as the records write it.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests;
