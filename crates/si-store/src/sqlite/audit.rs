//! The audit trail in a SQLite file (`audit.db`), written in batches by
//! [`writer`], read a page at a time.

mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, params};
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
            read_page(&conn, page).map_err(|e| failed(e.to_string()))
        })
        .await
        .map_err(|e| failed_join(format!("database task failed: {e}")))?
    }
}

fn read_page(conn: &Connection, page: Page) -> rusqlite::Result<Vec<StoredRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, record, prev_hash, hash FROM audit
         WHERE seq > ?1 AND at_ms >= ?2 AND at_ms < ?3 ORDER BY seq LIMIT ?4",
    )?;
    let rows = stmt.query_map(
        params![
            i64::try_from(page.after_seq).unwrap_or(i64::MAX),
            page.since_ms.unwrap_or(i64::MIN),
            page.until_ms.unwrap_or(i64::MAX),
            i64::try_from(page.limit).unwrap_or(i64::MAX)
        ],
        |r| {
            Ok(StoredRecord {
                seq: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                json: r.get(1)?,
                prev_hash: r.get(2)?,
                hash: r.get(3)?,
            })
        },
    )?;
    rows.collect()
}

#[cfg(test)]
mod tests;
