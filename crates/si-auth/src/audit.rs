//! The audit trail: one record per request, metadata only, append-only and
//! tamper-evident.
//!
//! A record says who (user, role, location, client address), what (method, path,
//! agent, model, backend), and how it went (status, tokens, latency): never a
//! prompt, an answer, a token or a key. Each record's hash covers the previous
//! record's hash, so editing, removing or reordering a record breaks the chain at
//! that point ([`verify`]).
//!
//! Records are committed in batches, one SQLite transaction per batch (atomic: a
//! crash never leaves half a record), by whichever caller finds the writer free
//! ([`AuditLog`]). [`AuditLog::append`] returns once its record is committed, so a
//! request's record exists before the request is finished.

mod verify;
mod writer;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use verify::{VerifyReport, export, verify, verify_with_head};
pub use writer::AuditLog;

/// The audit log's file name inside the data directory.
pub const AUDIT_FILE: &str = "audit.db";

/// The hash before the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

pub(crate) const SCHEMA: &str = "
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
    /// For a workflow step: the step (its run is `request_id`). Absent otherwise,
    /// so records without it hash as they always did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
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

/// A record could not be written to the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the audit trail cannot be written")]
pub struct AuditUnavailable;

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
