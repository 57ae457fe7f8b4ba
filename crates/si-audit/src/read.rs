//! Checking the chain, and reading records out, from any [`AuditStore`].

use std::io::Write;

use crate::chain::{GENESIS_HASH, chain_hash};
use crate::{AuditError, AuditStore, Page, StoredRecord};
use check::{Fault, RowFault};

mod check;
mod misplaced;

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
/// record, naming the column that was changed: `seq`, `at_ms`, `record`,
/// `prev_hash` or `hash`. With `expect_head`, a hash copied elsewhere earlier (the
/// gateway logs one every 1,000 records), it also checks that some record still
/// has it: this finds records cut off at the end, and a chain rewritten from the
/// start.
pub async fn verify(
    store: &dyn AuditStore,
    expect_head: Option<&str>,
) -> Result<VerifyReport, AuditError> {
    let mut head_seen = expect_head.is_none();
    let kept_head = store.head().await?;
    let (mut expected, mut prev) = (1u64, GENESIS_HASH.to_owned());
    loop {
        let page = store.page(page_after(expected - 1, None, None)).await?;
        let done = page.len() < PAGE;
        for stored in page {
            let place = Place {
                seq: expected,
                prev_hash: &prev,
                expect_head,
            };
            if let Some(Fault { seq, reason }) = place.fault(store, &stored).await? {
                return Ok(VerifyReport::Broken { seq, reason });
            }
            head_seen |= expect_head == Some(stored.hash.as_str());
            if let Some(head) = &kept_head
                && head.seq == expected
                && head.hash != stored.hash
            {
                return Ok(VerifyReport::Broken {
                    seq: expected,
                    reason: "its hash is not the one the chain's head, kept beside it, says: \
                             the chain was rewritten from here or before"
                        .into(),
                });
            }
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
    // A store that keeps the head beside the chain finds records cut off the end
    // by itself. Read before the walk, it may be behind records written since,
    // never ahead of those found.
    if let Some(head) = kept_head
        && head.seq > expected - 1
    {
        return Ok(VerifyReport::Broken {
            seq: expected,
            reason: format!(
                "the chain's head, kept beside it, says {} records, but {} were found: records \
                 were cut off at the end",
                head.seq,
                expected - 1
            ),
        });
    }
    Ok(VerifyReport::Intact {
        records: expected - 1,
        head: prev,
    })
}

/// Writes the records with `since <= at < until` (milliseconds since the epoch) as
/// JSON lines; returns how many. Each record read is checked on its own (its hash,
/// and that its `seq` and `at_ms` columns say what it says), and an altered one
/// stops the export with [`AuditError::Altered`]. The window is read from the
/// `at_ms` column, so a record whose time was moved out of it is not read here at
/// all: [`verify`], which reads every record, finds that.
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
            let record = check::row(&stored).map_err(|fault| {
                let Fault { seq, reason } = fault.at(&stored);
                AuditError::Altered { seq, reason }
            })?;
            writeln!(out, "{}", stored.json)?;
            // The row passed: its number is its record's, from 1, so pages advance.
            after = record.seq;
            count += 1;
        }
        if done {
            return Ok(count);
        }
    }
}

/// Where a record belongs in the chain, as [`verify`] reaches it.
struct Place<'a> {
    /// The number it must have.
    seq: u64,
    /// The previous record's hash, already checked.
    prev_hash: &'a str,
    /// The head hash the caller expects.
    expect_head: Option<&'a str>,
}

impl Place<'_> {
    /// What is wrong with `stored`, read at this place, if anything. The unhashed
    /// columns are judged by the record only once the hash vouches for it, so that
    /// each fault names the column that was changed.
    async fn fault(
        &self,
        store: &dyn AuditStore,
        stored: &StoredRecord,
    ) -> Result<Option<Fault>, AuditError> {
        let here = i64::try_from(self.seq).ok();
        if here != Some(stored.seq) {
            return misplaced::fault(store, self.seq, stored).await.map(Some);
        }
        if let Some(record) = check::sealed_record(stored)
            && record.seq != self.seq
        {
            return Ok(Some(self.broken(format!(
                "its row holds record {}: a seq column was changed",
                record.seq
            ))));
        }
        if stored.prev_hash != self.prev_hash {
            return Ok(Some(self.broken(
                "its prev_hash column does not hold the previous record's hash".into(),
            )));
        }
        Ok(match check::row(stored) {
            Ok(_) => None,
            Err(RowFault::Unsealed) => Some(self.unsealed(store, stored).await?),
            Err(fault) => Some(fault.at(stored)),
        })
    }

    /// Tells which of the record and hash columns of `stored` was changed, from
    /// the copy of its hash the next record (or the expected head) holds.
    async fn unsealed(
        &self,
        store: &dyn AuditStore,
        stored: &StoredRecord,
    ) -> Result<Fault, AuditError> {
        let next = store
            .page(Page {
                limit: 1,
                ..page_after(self.seq, None, None)
            })
            .await?;
        let witness = match next.first() {
            Some(next) if i64::try_from(self.seq + 1).ok() == Some(next.seq) => {
                Some((next.prev_hash.as_str(), "the next record"))
            }
            _ => self.expect_head.map(|head| (head, "the expected head")),
        };
        let reason = match witness {
            Some((hash, holder)) if hash == stored.hash => format!(
                "its record column was changed after it was written: it no longer matches its \
                 hash, which {holder} also holds"
            ),
            Some((hash, holder)) if hash == chain_hash(self.prev_hash, &stored.json) => {
                format!("its hash column was changed: {holder} holds its record's true hash")
            }
            // Its link is checked already; the record or the hash is not.
            _ => "its record column or its hash column was changed after it was written: \
                  they no longer match"
                .to_owned(),
        };
        Ok(self.broken(reason))
    }

    fn broken(&self, reason: String) -> Fault {
        Fault {
            seq: self.seq,
            reason,
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
