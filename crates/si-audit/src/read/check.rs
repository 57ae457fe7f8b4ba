//! What one stored row must satisfy on its own. Its hash covers its link and its
//! record; its `seq` and `at_ms` columns are checked against the record, so a
//! change to any column shows, and chains written before these checks need no
//! new hash.

use std::time::{Duration, UNIX_EPOCH};

use crate::chain::chain_hash;
use crate::{AuditRecord, StoredRecord, at_millis};

/// A record that is not as it was written: which one, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Fault {
    /// The record's sequence number.
    pub(super) seq: u64,
    /// What is wrong, naming the column.
    pub(super) reason: String,
}

/// How a row, taken alone, differs from what was written.
#[derive(Debug)]
pub(super) enum RowFault {
    /// Its hash does not cover its link and record: one of the three was changed
    /// (only its neighbours can tell which).
    Unsealed,
    /// Its record column, though covered by its hash, is not a record.
    Unreadable(serde_json::Error),
    /// It is stored under another number than its record's.
    Renumbered {
        /// The number in the record.
        record_seq: u64,
    },
    /// Its `at_ms` column is not its record's time.
    Retimed {
        /// The time in the record.
        at: String,
    },
}

impl RowFault {
    /// The fault as reported, for the row `stored`.
    pub(super) fn at(&self, stored: &StoredRecord) -> Fault {
        let seq = row_number(stored.seq);
        match self {
            RowFault::Unsealed => Fault {
                seq,
                reason: "its record, prev_hash or hash column was changed after it was \
                         written: its hash no longer covers its link and record"
                    .into(),
            },
            RowFault::Unreadable(e) => Fault {
                seq,
                reason: format!("its record column does not hold an audit record: {e}"),
            },
            RowFault::Renumbered { record_seq } => Fault {
                seq: *record_seq,
                reason: renumbered(stored.seq),
            },
            RowFault::Retimed { at } => Fault {
                seq,
                reason: format!(
                    "its at_ms column says {} but its record was made at {at}: the at_ms column \
                     was changed, which moves the record in or out of time windows",
                    describe_ms(stored.at_ms)
                ),
            },
        }
    }
}

/// Checks `stored` without its neighbours and returns its record: its hash covers
/// its link and record, its record parses, and its `seq` and `at_ms` columns say
/// what the record says.
pub(super) fn row(stored: &StoredRecord) -> Result<AuditRecord, RowFault> {
    if !sealed(stored) {
        return Err(RowFault::Unsealed);
    }
    let record = serde_json::from_str::<AuditRecord>(&stored.json).map_err(RowFault::Unreadable)?;
    if i64::try_from(record.seq).ok() != Some(stored.seq) || record.seq == 0 {
        return Err(RowFault::Renumbered {
            record_seq: record.seq,
        });
    }
    // at_ms was always written as at_millis(at), so an unchanged row agrees.
    if at_millis(&record.at) != stored.at_ms {
        return Err(RowFault::Retimed { at: record.at });
    }
    Ok(record)
}

/// Whether `stored`'s hash covers its link and its record.
pub(super) fn sealed(stored: &StoredRecord) -> bool {
    chain_hash(&stored.prev_hash, &stored.json) == stored.hash
}

/// The record `stored` holds, if its hash still covers it (so the record is as
/// written, whatever its other columns say).
pub(super) fn sealed_record(stored: &StoredRecord) -> Option<AuditRecord> {
    sealed(stored)
        .then(|| serde_json::from_str(&stored.json).ok())
        .flatten()
}

/// Why a record is stored under `stored_seq`, which is not its number.
pub(super) fn renumbered(stored_seq: i64) -> String {
    format!("it is stored under seq {stored_seq}: its seq column was changed")
}

/// A stored number as a record number (0 for one no record can have).
pub(super) fn row_number(stored_seq: i64) -> u64 {
    u64::try_from(stored_seq).unwrap_or(0)
}

/// `ms` as an RFC 3339 time where it is one.
fn describe_ms(ms: i64) -> String {
    // humantime cannot write times before 1970 or after 9999.
    const YEAR_10000_MS: u64 = 253_402_300_800_000;
    u64::try_from(ms)
        .ok()
        .filter(|ms| *ms < YEAR_10000_MS)
        .map(|ms| humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)))
        .map_or_else(|| format!("{ms} ms since 1970"), |time| time.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ChainHead;

    fn stored() -> StoredRecord {
        let mut record = AuditRecord {
            at: "2026-12-01T08:00:00.000Z".into(),
            status: 200,
            ..AuditRecord::default()
        };
        let sealed = ChainHead::default().seal(&mut record).unwrap();
        StoredRecord {
            seq: 1,
            at_ms: sealed.at_ms,
            json: sealed.json,
            prev_hash: sealed.prev_hash,
            hash: sealed.hash,
        }
    }

    #[test]
    fn a_row_as_written_passes() {
        assert_eq!(row(&stored()).unwrap().seq, 1);
    }

    #[test]
    fn each_column_is_checked() {
        let retimed = StoredRecord {
            at_ms: stored().at_ms - 1,
            ..stored()
        };
        let fault = row(&retimed).unwrap_err().at(&retimed);
        assert_eq!(fault.seq, 1);
        assert!(
            fault.reason.contains("says 2026-12-01T07:59:59.999Z"),
            "{fault:?}"
        );
        assert!(fault.reason.contains("at_ms column"), "{fault:?}");

        let renumbered = StoredRecord {
            seq: -4,
            ..stored()
        };
        let fault = row(&renumbered).unwrap_err().at(&renumbered);
        assert_eq!(fault.seq, 1);
        assert!(fault.reason.contains("under seq -4"), "{fault:?}");

        for changed in [
            StoredRecord {
                json: stored().json.replace("200", "201"),
                ..stored()
            },
            StoredRecord {
                hash: stored().hash.replace(|_| true, "a"),
                ..stored()
            },
            StoredRecord {
                prev_hash: stored().hash,
                ..stored()
            },
        ] {
            assert!(matches!(row(&changed), Err(RowFault::Unsealed)));
        }
    }

    #[test]
    fn times_outside_what_rfc3339_can_write_are_shown_as_numbers() {
        assert_eq!(describe_ms(-1), "-1 ms since 1970");
        assert_eq!(describe_ms(i64::MAX), format!("{} ms since 1970", i64::MAX));
        assert_eq!(describe_ms(0), "1970-01-01T00:00:00.000Z");
    }
}
