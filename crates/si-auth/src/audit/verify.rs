//! Checking the chain, and reading records out.

use std::io::Write;
use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::{AuditRecord, GENESIS_HASH, chain_hash};
use crate::AuthError;

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyReport {
    /// Every record is present, in order, and unaltered.
    Intact {
        /// How many records.
        records: u64,
        /// The last record's hash (publish it elsewhere to detect truncation).
        head: String,
    },
    /// The first record at which the chain breaks.
    Broken {
        /// Its sequence number (or the number expected where one is missing).
        seq: u64,
        /// What is wrong.
        reason: String,
    },
}

fn open_read_only(path: &Path) -> Result<Connection, AuthError> {
    if !path.exists() {
        return Err(AuthError::store(path, "no audit log here"));
    }
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| AuthError::store(path, e))
}

/// Walks the whole chain and reports the first missing, reordered or altered record.
pub fn verify(path: &Path) -> Result<VerifyReport, AuthError> {
    walk(path, None)
}

/// [`verify`], and also that the chain still holds a record with `head`, a hash
/// copied elsewhere earlier (the gateway logs one every 1,000 records): this finds
/// records cut off at the end, and a chain rewritten from the start.
pub fn verify_with_head(path: &Path, head: &str) -> Result<VerifyReport, AuthError> {
    walk(path, Some(head))
}

fn walk(path: &Path, head: Option<&str>) -> Result<VerifyReport, AuthError> {
    let mut head_seen = head.is_none();
    let conn = open_read_only(path)?;
    let store = |e: rusqlite::Error| AuthError::store(path, e);
    let mut stmt = conn
        .prepare("SELECT seq, record, prev_hash, hash FROM audit ORDER BY seq")
        .map_err(store)?;
    let mut rows = stmt.query([]).map_err(store)?;
    let (mut expected, mut prev) = (1u64, GENESIS_HASH.to_owned());
    while let Some(row) = rows.next().map_err(store)? {
        let seq: i64 = row.get(0).map_err(store)?;
        let json: String = row.get(1).map_err(store)?;
        let (stored_prev, stored_hash): (String, String) =
            (row.get(2).map_err(store)?, row.get(3).map_err(store)?);
        let broken = |reason: String| {
            Ok(VerifyReport::Broken {
                seq: expected,
                reason,
            })
        };
        if u64::try_from(seq).ok() != Some(expected) {
            return broken(format!("record {expected} is missing (next is {seq})"));
        }
        if stored_prev != prev {
            return broken("its link to the previous record does not match".into());
        }
        if chain_hash(&prev, &json) != stored_hash {
            return broken("its contents were changed after it was written".into());
        }
        match serde_json::from_str::<AuditRecord>(&json) {
            Ok(record) if record.seq == expected => {}
            _ => return broken("its contents are not a record of this position".into()),
        }
        head_seen |= head == Some(stored_hash.as_str());
        prev = stored_hash;
        expected += 1;
    }
    if !head_seen {
        return Ok(VerifyReport::Broken {
            seq: expected,
            reason: "no record has the expected head hash: records were cut off at the end, or \
                     the chain was rewritten"
                .into(),
        });
    }
    Ok(VerifyReport::Intact {
        records: expected - 1,
        head: prev,
    })
}

/// Writes the records with `since <= at < until` (milliseconds since the epoch) as
/// JSON lines; returns how many.
pub fn export(
    path: &Path,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    out: &mut impl Write,
) -> Result<u64, AuthError> {
    let conn = open_read_only(path)?;
    let store = |e: rusqlite::Error| AuthError::store(path, e);
    let mut stmt = conn
        .prepare("SELECT record FROM audit WHERE at_ms >= ?1 AND at_ms < ?2 ORDER BY seq")
        .map_err(store)?;
    let mut rows = stmt
        .query([since_ms.unwrap_or(i64::MIN), until_ms.unwrap_or(i64::MAX)])
        .map_err(store)?;
    let mut count = 0;
    while let Some(row) = rows.next().map_err(store)? {
        let json: String = row.get(0).map_err(store)?;
        writeln!(out, "{json}")
            .map_err(|e| AuthError::store(path, format!("cannot write output: {e}")))?;
        count += 1;
    }
    Ok(count)
}
