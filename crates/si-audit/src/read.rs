//! Checking the chain, and reading records out, from any [`AuditStore`].

use std::io::Write;

use crate::chain::{GENESIS_HASH, chain_hash};
use crate::{AuditError, AuditRecord, AuditStore, Page};

/// Records read from the store at a time.
const PAGE: usize = 1000;

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

/// Walks the whole chain and reports the first missing, reordered or altered
/// record. With `expect_head`, a hash copied elsewhere earlier (the gateway logs
/// one every 1,000 records), it also checks that some record still has it: this
/// finds records cut off at the end, and a chain rewritten from the start.
pub async fn verify(
    store: &dyn AuditStore,
    expect_head: Option<&str>,
) -> Result<VerifyReport, AuditError> {
    let mut head_seen = expect_head.is_none();
    let (mut expected, mut prev) = (1u64, GENESIS_HASH.to_owned());
    loop {
        let page = store.page(page_after(expected - 1, None, None)).await?;
        let done = page.len() < PAGE;
        for stored in page {
            let broken = |reason: String| {
                Ok(VerifyReport::Broken {
                    seq: expected,
                    reason,
                })
            };
            if stored.seq != expected {
                return broken(format!(
                    "record {expected} is missing (next is {})",
                    stored.seq
                ));
            }
            if stored.prev_hash != prev {
                return broken("its link to the previous record does not match".into());
            }
            if chain_hash(&prev, &stored.json) != stored.hash {
                return broken("its contents were changed after it was written".into());
            }
            match serde_json::from_str::<AuditRecord>(&stored.json) {
                Ok(record) if record.seq == expected => {}
                _ => return broken("its contents are not a record of this position".into()),
            }
            head_seen |= expect_head == Some(stored.hash.as_str());
            prev = stored.hash;
            expected += 1;
        }
        if done {
            break;
        }
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
pub async fn export(
    store: &dyn AuditStore,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    out: &mut (dyn Write + Send),
) -> Result<u64, AuditError> {
    let (mut after, mut count) = (0, 0);
    loop {
        let page = store.page(page_after(after, since_ms, until_ms)).await?;
        let done = page.len() < PAGE;
        for stored in page {
            writeln!(out, "{}", stored.json)?;
            after = stored.seq;
            count += 1;
        }
        if done {
            return Ok(count);
        }
    }
}

fn page_after(after_seq: u64, since_ms: Option<i64>, until_ms: Option<i64>) -> Page {
    Page {
        after_seq,
        limit: PAGE,
        since_ms,
        until_ms,
    }
}
