//! When the row read where a record belongs has another number: was the record
//! removed, or renumbered (its `seq` column changed) to somewhere else?

use super::check::{self, Fault};
use super::{PAGE, page_after};
use crate::{AuditError, AuditStore, StoredRecord};

/// What is wrong where record `expected` belongs, given that the row read there,
/// `stored`, has another number.
pub(super) async fn fault(
    store: &dyn AuditStore,
    expected: u64,
    stored: &StoredRecord,
) -> Result<Fault, AuditError> {
    let here = i64::try_from(expected).unwrap_or(i64::MAX);
    if stored.seq < here {
        // Only rows numbered 0 or below come before a record's place: the first
        // page starts at the lowest number stored.
        return Ok(below_one(expected, stored));
    }
    Ok(match find(store, expected, stored).await? {
        Some(seq) => Fault {
            seq: expected,
            reason: check::renumbered(seq),
        },
        None => Fault {
            seq: expected,
            reason: format!("record {expected} is missing (next is {})", stored.seq),
        },
    })
}

/// A row numbered 0 or below, where no record belongs, read before `expected`.
fn below_one(expected: u64, stored: &StoredRecord) -> Fault {
    match check::sealed_record(stored) {
        Some(record) if record.seq > 0 => Fault {
            seq: record.seq,
            reason: check::renumbered(stored.seq),
        },
        _ => Fault {
            seq: expected,
            reason: format!(
                "a row is stored under seq {}, where no record belongs, and holds no intact \
                 record: its seq column was changed, or the row was added",
                stored.seq
            ),
        },
    }
}

/// The stored number of the row holding record `wanted` (intact), looking from
/// `from` to the end of the chain; `None` if no row does.
async fn find(
    store: &dyn AuditStore,
    wanted: u64,
    from: &StoredRecord,
) -> Result<Option<i64>, AuditError> {
    let holds = |stored: &StoredRecord| {
        check::sealed_record(stored).is_some_and(|record| record.seq == wanted)
    };
    if holds(from) {
        return Ok(Some(from.seq));
    }
    // Past the place, so positive: page_after never reads from the start here.
    let mut after = check::row_number(from.seq);
    loop {
        let page = store.page(page_after(after, None, None)).await?;
        let done = page.len() < PAGE;
        if let Some(found) = page.iter().find(|stored| holds(stored)) {
            return Ok(Some(found.seq));
        }
        match page.last() {
            Some(last) if !done => after = check::row_number(last.seq),
            _ => return Ok(None),
        }
    }
}
