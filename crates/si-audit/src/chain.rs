//! Sealing records into the chain: each record's hash is SHA-256 over the previous
//! record's hash and the record's canonical JSON.

use sha2::{Digest, Sha256};

use crate::{AuditRecord, at_millis};

/// The hash before the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The head of the chain is logged every this many records, so a copy of it lives
/// outside the database (see `verify --expect-head`).
const HEAD_LOG_EVERY: u64 = 1000;

/// The last record's sequence number and hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainHead {
    /// The last sequence number (0: empty).
    pub seq: u64,
    /// The last hash ([`GENESIS_HASH`]: empty).
    pub hash: String,
}

impl Default for ChainHead {
    fn default() -> Self {
        ChainHead {
            seq: 0,
            hash: GENESIS_HASH.to_owned(),
        }
    }
}

/// A record ready to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedRecord {
    /// Its sequence number.
    pub seq: u64,
    /// When it was made, milliseconds since the epoch (for time windows).
    pub at_ms: i64,
    /// Its canonical JSON.
    pub json: String,
    /// The previous record's hash.
    pub prev_hash: String,
    /// Its hash.
    pub hash: String,
}

impl ChainHead {
    /// Numbers `record` as the next one, seals it, and moves the head past it.
    pub fn seal(&mut self, record: &mut AuditRecord) -> Result<SealedRecord, serde_json::Error> {
        record.seq = self.seq + 1;
        let json = serde_json::to_string(record)?;
        let hash = chain_hash(&self.hash, &json);
        let sealed = SealedRecord {
            seq: record.seq,
            at_ms: at_millis(&record.at),
            json,
            prev_hash: std::mem::replace(&mut self.hash, hash.clone()),
            hash,
        };
        self.seq = sealed.seq;
        Ok(sealed)
    }

    /// Logs the head when a batch ending here crossed a multiple of 1,000 records
    /// since `before`.
    pub fn log_now_and_then(&self, before: u64) {
        if before / HEAD_LOG_EVERY != self.seq / HEAD_LOG_EVERY {
            tracing::info!(seq = self.seq, hash = %self.hash, "audit chain head");
        }
    }
}

/// SHA-256 over the previous hash and the record's canonical JSON.
pub fn chain_hash(prev_hash: &str, record_json: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealing_numbers_links_and_covers_every_record() {
        let mut head = ChainHead::default();
        let mut first = AuditRecord {
            at: "2026-12-01T08:00:00.000Z".into(),
            status: 200,
            ..AuditRecord::default()
        };
        let mut second = first.clone();
        let a = head.seal(&mut first).unwrap();
        let b = head.seal(&mut second).unwrap();
        assert_eq!((a.seq, b.seq, head.seq), (1, 2, 2));
        assert_eq!(a.prev_hash, GENESIS_HASH);
        assert_eq!(b.prev_hash, a.hash);
        assert_eq!(head.hash, b.hash);
        assert_eq!(a.at_ms, 1_796_112_000_000);
        assert_eq!(b.hash, chain_hash(&a.hash, &b.json));
        // The same content at another position hashes differently.
        assert_ne!(a.hash, b.hash);
        assert!(b.json.contains("\"seq\":2"));
    }
}
