//! The audit trail: one record per request, metadata only, append-only and
//! tamper-evident.
//!
//! A record says who (user, role, location, client address), what (method, path,
//! agent, model, backend), and how it went (status, tokens, latency): never a
//! prompt, an answer, a token or a key. Each record's hash covers the previous
//! record's hash, so editing, removing or reordering a record breaks the chain at
//! that point. What a store keeps beside the record for lookups (its number, its
//! time in milliseconds) is checked against the hashed record, so changing it
//! breaks the chain too.
//!
//! - [`AuditRecord`] and [`chain`]: the record and how it is sealed into the chain.
//! - [`AuditStore`]: where records are kept; each database engine implements it
//!   (the SQLite one lives with the other store implementations).
//! - [`verify`] and [`export`]: checking the chain and reading records out, for any
//!   store.
//!
//! This crate knows nothing of HTTP, of any database engine, or of who the users
//! are.

pub mod chain;
mod read;

use serde::{Deserialize, Serialize};

pub use chain::{ChainHead, GENESIS_HASH, SealedRecord};
pub use read::{VerifyReport, export, verify};

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
    /// The gateway that wrote it, where several share one chain. Absent
    /// otherwise, so records without it hash as they always did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// The API key the request came with, if any (`user` is then `key:NAME`, or
    /// the front end's user the key acted for). Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
}

/// A record could not be written to the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the audit trail cannot be written")]
pub struct AuditUnavailable;

/// The audit trail could not be read, or output not written.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The store failed.
    #[error("audit log {place}: {message}")]
    Store {
        /// The database file or server.
        place: String,
        /// What failed.
        message: String,
    },
    /// Exported records could not be written out.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
    /// A record read for export is not as it was written; [`verify`] says more.
    #[error("audit record {seq} was altered: {reason}")]
    Altered {
        /// The record's sequence number.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
}

/// A record as stored: every column of its row. The hash covers `prev_hash` and
/// `json`; `seq` and `at_ms` repeat, for lookups, what `json` says (its `seq`, and
/// its `at` as [`at_millis`]), so checking them against it binds them to the hash
/// too, without sealing anything differently from the chains already written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    /// Its sequence number as stored (any integer: a changed row may hold one no
    /// record has, such as 0 or below).
    pub seq: i64,
    /// When it was made, milliseconds since the epoch as stored (the time windows
    /// of [`Page`] select on it).
    pub at_ms: i64,
    /// The record's canonical JSON, which its hash covers.
    pub json: String,
    /// The previous record's hash.
    pub prev_hash: String,
    /// Its hash.
    pub hash: String,
}

/// Which records to read: those after `after_seq`, at most `limit`, in order;
/// with a time window (milliseconds since the epoch, `since <= at < until`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    /// Records after this sequence number; 0 reads from the first row, even one
    /// numbered 0 or below (no record is), so that a record renumbered there is
    /// still seen.
    pub after_seq: u64,
    /// At most this many.
    pub limit: usize,
    /// Only records at or after this time.
    pub since_ms: Option<i64>,
    /// Only records before this time.
    pub until_ms: Option<i64>,
}

/// Where the audit trail is kept.
#[async_trait::async_trait]
pub trait AuditStore: Send + Sync + std::fmt::Debug {
    /// Appends `record` and returns once it is committed. An error means it could
    /// not be written (the gateway then refuses to complete the request).
    async fn append(&self, record: AuditRecord) -> Result<(), AuditUnavailable>;

    /// Appends `record` without waiting for the outcome (for paths that cannot
    /// wait, such as a response dropped by a client that went away).
    fn append_detached(&self, record: AuditRecord);

    /// Returns once every record appended before the call is committed (or
    /// reported lost): for a clean stop. Stores that commit on drop need nothing.
    async fn flush(&self) {}

    /// The stored records of `page`, in chain order.
    async fn page(&self, page: Page) -> Result<Vec<StoredRecord>, AuditError>;

    /// The chain's last sequence number and hash as the store keeps them beside
    /// the records, if it does (so that [`verify`] finds records cut off the
    /// end); `None` where it does not.
    async fn head(&self) -> Result<Option<ChainHead>, AuditError> {
        Ok(None)
    }
}

/// Milliseconds since the Unix epoch of an RFC 3339 time (0 if unparsable).
pub fn at_millis(at: &str) -> i64 {
    humantime::parse_rfc3339_weak(at)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The current time as the records write it.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}
