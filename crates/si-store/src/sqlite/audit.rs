//! The audit trail in a SQLite file (`audit.db`), written in batches by
//! [`writer`], read a page at a time.

mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::types::FromSql;
use rusqlite::{Connection, OpenFlags, Row, params};
use si_audit::{AuditError, AuditRecord, AuditStore, AuditUnavailable, Page, StoredRecord};

use super::migrate;
use writer::AuditLog;

/// The audit database, for writing (the gateway) or reading only (`si-cli audit`).
#[derive(Debug)]
pub struct SqliteAudit {
    path: PathBuf,
    /// `None` when opened to read only.
    writer: Option<AuditLog>,
    /// For reading pages.
    reader: Arc<Mutex<Connection>>,
}

impl SqliteAudit {
    /// Opens (creating, mode 0600) the log at `path` to write to it, waiting at
    /// most 200 ms for a lock held by another process before a write fails.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        Self::open_with(path, Duration::from_millis(200))
    }

    /// [`SqliteAudit::open`], waiting at most `busy` for a lock.
    pub fn open_with(path: &Path, busy: Duration) -> Result<Self, AuditError> {
        let failed = |e: String| AuditError::Store {
            place: path.display().to_string(),
            message: e,
        };
        let conn = super::open_private(path, busy, migrate::AUDIT).map_err(failed)?;
        let writer = AuditLog::start(conn, path).map_err(failed)?;
        let reader = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| failed(e.to_string()))?;
        Ok(SqliteAudit {
            path: path.to_owned(),
            writer: Some(writer),
            reader: Arc::new(Mutex::new(reader)),
        })
    }

    /// Opens an existing log at `path` to read it; a missing file is an error, not
    /// an empty chain.
    pub fn open_read_only(path: &Path) -> Result<Self, AuditError> {
        let failed = |message: String| AuditError::Store {
            place: path.display().to_string(),
            message,
        };
        if !path.exists() {
            return Err(failed("no audit log here".into()));
        }
        let reader = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| failed(e.to_string()))?;
        Ok(SqliteAudit {
            path: path.to_owned(),
            writer: None,
            reader: Arc::new(Mutex::new(reader)),
        })
    }
}

#[async_trait]
impl AuditStore for SqliteAudit {
    async fn append(&self, record: AuditRecord) -> Result<(), AuditUnavailable> {
        match &self.writer {
            Some(writer) => writer.append(record).await,
            None => Err(AuditUnavailable),
        }
    }

    fn append_detached(&self, record: AuditRecord) {
        if let Some(writer) = &self.writer {
            writer.append_detached(record);
        }
    }

    async fn page(&self, page: Page) -> Result<Vec<StoredRecord>, AuditError> {
        let (reader, path) = (self.reader.clone(), self.path.clone());
        let failed = move |message: String| AuditError::Store {
            place: path.display().to_string(),
            message,
        };
        let failed_join = failed.clone();
        tokio::task::spawn_blocking(move || {
            let conn = reader
                .lock()
                .map_err(|_| failed("connection lock poisoned".into()))?;
            read_page(&conn, page).map_err(failed)
        })
        .await
        .map_err(|e| failed_join(format!("database task failed: {e}")))?
    }
}

fn read_page(conn: &Connection, page: Page) -> Result<Vec<StoredRecord>, String> {
    let sql = |e: rusqlite::Error| e.to_string();
    // From the start, rows numbered 0 or below too: none should exist, and
    // verify must see one that does.
    let first = match page.after_seq {
        0 => i64::MIN,
        after => match i64::try_from(after) {
            Ok(after) if after < i64::MAX => after + 1,
            _ => return Ok(Vec::new()),
        },
    };
    let mut stmt = conn
        .prepare_cached(&page_sql(page.since_ms.is_some(), page.until_ms.is_some()))
        .map_err(sql)?;
    let mut rows = stmt
        .query(params![
            first,
            page.since_ms,
            page.until_ms,
            i64::try_from(page.limit).unwrap_or(i64::MAX)
        ])
        .map_err(sql)?;
    let mut records = Vec::new();
    while let Some(row) = rows.next().map_err(sql)? {
        // seq is the rowid, always an integer; other columns may have been set
        // to a value of another type, which names the row and the column.
        let seq: i64 = row.get(0).map_err(sql)?;
        records.push(StoredRecord {
            seq,
            at_ms: column(row, 1, seq)?,
            json: column(row, 2, seq)?,
            prev_hash: column(row, 3, seq)?,
            hash: column(row, 4, seq)?,
        });
    }
    Ok(records)
}

/// The query for a page from `?1` on, at most `?4` rows, `since` `?2` and
/// `until` `?3` if bounded. Without a bound, no condition on at_ms, so that every
/// row is read whatever it holds there; plain comparisons keep the search on the
/// primary key (an `?2 IS NULL OR` form would scan the whole table every page).
fn page_sql(since: bool, until: bool) -> String {
    let window = match (since, until) {
        (false, false) => "",
        (true, false) => "AND at_ms >= ?2",
        (false, true) => "AND at_ms < ?3",
        (true, true) => "AND at_ms >= ?2 AND at_ms < ?3",
    };
    format!(
        "SELECT seq, at_ms, record, prev_hash, hash FROM audit
         WHERE seq >= ?1 {window} ORDER BY seq LIMIT ?4"
    )
}

/// Column `index` of `row`, the row numbered `seq`.
fn column<T: FromSql>(row: &Row<'_>, index: usize, seq: i64) -> Result<T, String> {
    row.get(index)
        .map_err(|e| format!("the row numbered {seq}: {e}"))
}

#[cfg(test)]
mod tests;
