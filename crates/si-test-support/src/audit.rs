//! Reading an audit trail back, as the tests check it.

use si_audit::{AuditStore, Page, StoredRecord};

/// The first `limit` records of `store`, as stored.
pub async fn first_records(store: &dyn AuditStore, limit: usize) -> Vec<StoredRecord> {
    store
        .page(Page {
            after_seq: 0,
            limit,
            since_ms: None,
            until_ms: None,
        })
        .await
        .unwrap()
}
