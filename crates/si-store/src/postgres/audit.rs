//! The audit chain in PostgreSQL: one chain for every gateway sharing the
//! database. Each gateway queues its records for one writer task, which commits
//! what is queued in one transaction (group commit): it locks the chain's head
//! row, seals the batch after the last record whichever gateway wrote it, inserts
//! it in one statement and moves the head. A caller of [`AuditStore::append`]
//! returns only once its record is committed, so no answer leaves a gateway
//! before its record is in the database, and a gateway killed at any moment loses
//! no record of an answered request.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Object, Pool};
use si_audit::{
    AuditError, AuditRecord, AuditStore, AuditUnavailable, ChainHead, Page, StoredRecord,
};
use tokio::sync::{mpsc, oneshot};

/// Most records committed in one transaction.
const MAX_BATCH: usize = 512;

/// A record waiting to be committed, and who waits for it (if anyone); or, with
/// no record, a caller waiting for everything queued before it.
type Pending = (
    Option<AuditRecord>,
    Option<oneshot::Sender<Result<(), AuditUnavailable>>>,
);

/// The audit chain in a PostgreSQL database.
#[derive(Debug)]
pub struct PostgresAudit {
    pool: Pool,
    place: String,
    queue: mpsc::UnboundedSender<Pending>,
}

impl PostgresAudit {
    /// Starts the writer task on `pool` (the database at `place`), which names
    /// `gateway` in every record. Must be called within a tokio runtime.
    pub(super) fn start(pool: Pool, place: String, gateway: &str) -> Self {
        let (queue, queued) = mpsc::unbounded_channel();
        let writer = Writer {
            pool: pool.clone(),
            place: place.clone(),
            gateway: gateway.to_owned(),
            connection: None,
        };
        tokio::spawn(writer.run(queued));
        PostgresAudit { pool, place, queue }
    }

    fn failed(&self, message: impl std::fmt::Display) -> AuditError {
        AuditError::Store {
            place: self.place.clone(),
            message: message.to_string(),
        }
    }
}

#[async_trait]
impl AuditStore for PostgresAudit {
    async fn append(&self, record: AuditRecord) -> Result<(), AuditUnavailable> {
        let (done, committed) = oneshot::channel();
        self.queue
            .send((Some(record), Some(done)))
            .map_err(|_| AuditUnavailable)?;
        committed.await.unwrap_or(Err(AuditUnavailable))
    }

    fn append_detached(&self, record: AuditRecord) {
        if self.queue.send((Some(record), None)).is_err() {
            tracing::error!(place = %self.place, "audit writer stopped; a record was lost");
        }
    }

    async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.queue.send((None, Some(done))).is_ok() {
            let _ = flushed.await;
        }
    }

    async fn head(&self) -> Result<Option<ChainHead>, AuditError> {
        let client = self.pool.get().await.map_err(|e| self.failed(e))?;
        let row = client
            .query_one("SELECT seq, hash FROM audit_head", &[])
            .await
            .map_err(|e| self.failed(e))?;
        let seq: i64 = row.try_get(0).map_err(|e| self.failed(e))?;
        Ok(Some(ChainHead {
            seq: u64::try_from(seq).map_err(|_| self.failed(format!("the head is at {seq}")))?,
            hash: row.try_get(1).map_err(|e| self.failed(e))?,
        }))
    }

    async fn page(&self, page: Page) -> Result<Vec<StoredRecord>, AuditError> {
        let first = match page.after_seq {
            // From the start, rows numbered 0 or below too: none should exist, and
            // verify must see one that does.
            0 => i64::MIN,
            after => match i64::try_from(after) {
                Ok(after) if after < i64::MAX => after + 1,
                _ => return Ok(Vec::new()),
            },
        };
        let limit = i64::try_from(page.limit).unwrap_or(i64::MAX);
        let client = self.pool.get().await.map_err(|e| self.failed(e))?;
        let rows = client
            .query(
                "SELECT seq, at_ms, record, prev_hash, hash FROM audit
                 WHERE seq >= $1
                   AND ($2::BIGINT IS NULL OR at_ms >= $2)
                   AND ($3::BIGINT IS NULL OR at_ms < $3)
                 ORDER BY seq LIMIT $4",
                &[&first, &page.since_ms, &page.until_ms, &limit],
            )
            .await
            .map_err(|e| self.failed(e))?;
        rows.iter()
            .map(|row| {
                let seq: i64 = row.try_get(0).map_err(|e| self.failed(e))?;
                let column =
                    |e: tokio_postgres::Error| self.failed(format!("the row numbered {seq}: {e}"));
                Ok(StoredRecord {
                    seq,
                    at_ms: row.try_get(1).map_err(column)?,
                    json: row.try_get(2).map_err(column)?,
                    prev_hash: row.try_get(3).map_err(column)?,
                    hash: row.try_get(4).map_err(column)?,
                })
            })
            .collect()
    }
}

/// The task that commits one gateway's records.
struct Writer {
    pool: Pool,
    place: String,
    gateway: String,
    /// The connection it writes on, kept between batches (a pooled connection
    /// is checked with a round trip each time it is taken).
    connection: Option<Object>,
}

impl Writer {
    /// Commits what is queued, a batch at a time, until every sender is gone.
    async fn run(mut self, mut queued: mpsc::UnboundedReceiver<Pending>) {
        let mut batch = Vec::new();
        while queued.recv_many(&mut batch, MAX_BATCH).await > 0 {
            let mut records: Vec<AuditRecord> = Vec::with_capacity(batch.len());
            for (record, _) in &mut batch {
                records.extend(record.take());
            }
            for record in &mut records {
                record.gateway.get_or_insert_with(|| self.gateway.clone());
            }
            let outcome = if records.is_empty() {
                Ok(())
            } else {
                self.write(&mut records).await.map_err(|e| {
                    // Loudly, without the records' contents.
                    tracing::error!(place = %self.place, records = records.len(), error = %e, "audit write failed");
                    AuditUnavailable
                })
            };
            for (_, done) in batch.drain(..) {
                if let Some(done) = done {
                    let _ = done.send(outcome);
                }
            }
        }
    }

    /// Commits `records`; once more on a fresh connection if the kept one had
    /// closed before the batch was sent (the database restarted since the last
    /// batch). A batch that may have been committed is never sent again: its
    /// records would be in the chain twice.
    async fn write(&mut self, records: &mut [AuditRecord]) -> Result<(), String> {
        for attempt in 0..2 {
            let connection = match self.connection.take() {
                Some(connection) => connection,
                None => self.pool.get().await.map_err(|e| super::with_causes(&e))?,
            };
            let outcome = tokio::time::timeout(BATCH_TIMEOUT, commit_batch(&connection, records))
                .await
                .unwrap_or_else(|_| {
                    Err(Failed::Uncertain(format!(
                        "no answer within {} s",
                        BATCH_TIMEOUT.as_secs()
                    )))
                });
            match outcome {
                Ok(()) => {
                    self.connection = Some(connection);
                    return Ok(());
                }
                // Possibly inside a transaction or broken: never reused, and
                // never returned to the pool.
                Err(Failed::BeforeSending(e)) if connection.is_closed() && attempt == 0 => {
                    drop(Object::take(connection));
                    tracing::debug!(error = %e, "audit connection closed; writing on a new one");
                }
                Err(Failed::BeforeSending(e) | Failed::Uncertain(e)) => {
                    drop(Object::take(connection));
                    return Err(e);
                }
            }
        }
        Err("the audit database closed every connection".into())
    }
}

/// Longest a batch may take, its wait for the head row's lock included. Past it,
/// the batch's callers get 503 rather than a hung answer.
const BATCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a batch was not committed.
enum Failed {
    /// Before the batch was sent: nothing of it can have been committed.
    BeforeSending(String),
    /// After: it may have been.
    Uncertain(String),
}

const HEAD: &str = "SELECT seq, hash FROM audit_head FOR UPDATE";
const INSERT: &str = "WITH added AS (
         INSERT INTO audit (seq, at_ms, record, prev_hash, hash)
         SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[])
     )
     UPDATE audit_head SET seq = $6, hash = $7";

/// Seals `records` after the chain's head and commits them, in one transaction
/// that holds the head row's lock: other gateways' batches wait for it, then
/// follow on. Two round trips, each of two pipelined statements: `BEGIN` and
/// the head's lock, then the batch and `COMMIT` (which, after a failed insert,
/// ends the transaction without committing anything).
async fn commit_batch(client: &Object, records: &mut [AuditRecord]) -> Result<(), Failed> {
    let sql = |e: tokio_postgres::Error| Failed::BeforeSending(super::with_causes(&e));
    // Prepared once per connection.
    let head_statement = client.prepare_cached(HEAD).await.map_err(sql)?;
    let insert = client.prepare_cached(INSERT).await.map_err(sql)?;
    // Read committed whatever the database's default: under a stricter level, a
    // writer that waited for the lock would fail instead of reading the new head.
    // A writer that vanishes while holding the lock is ended by the server within
    // seconds, so that the other gateways' writers go on.
    let (begun, head) = tokio::join!(
        client.batch_execute(
            "BEGIN ISOLATION LEVEL READ COMMITTED;
             SET LOCAL lock_timeout = '5s';
             SET LOCAL idle_in_transaction_session_timeout = '10s'"
        ),
        client.query_one(&head_statement, &[])
    );
    begun.map_err(sql)?;
    let head = head.map_err(sql)?;
    let before: i64 = head.try_get(0).map_err(sql)?;
    let mut head = ChainHead {
        seq: u64::try_from(before)
            .map_err(|_| Failed::BeforeSending(format!("the chain's head is at {before}")))?,
        hash: head.try_get(1).map_err(sql)?,
    };
    let mut columns = Columns::with_capacity(records.len());
    for record in records.iter_mut() {
        let unsealable = |e: &dyn std::fmt::Display| Failed::BeforeSending(e.to_string());
        let sealed = head.seal(record).map_err(|e| unsealable(&e))?;
        columns
            .seq
            .push(i64::try_from(sealed.seq).map_err(|e| unsealable(&e))?);
        columns.at_ms.push(sealed.at_ms);
        columns.json.push(sealed.json);
        columns.prev_hash.push(sealed.prev_hash);
        columns.hash.push(sealed.hash);
    }
    let last = i64::try_from(head.seq).map_err(|e| Failed::BeforeSending(e.to_string()))?;
    let values: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
        &columns.seq,
        &columns.at_ms,
        &columns.json,
        &columns.prev_hash,
        &columns.hash,
        &last,
        &head.hash,
    ];
    let (inserted, committed) = tokio::join!(
        client.execute(&insert, &values),
        client.batch_execute("COMMIT")
    );
    let uncertain = |e: tokio_postgres::Error| Failed::Uncertain(super::with_causes(&e));
    inserted.map_err(uncertain)?;
    committed.map_err(uncertain)?;
    head.log_now_and_then(u64::try_from(before).unwrap_or(0));
    Ok(())
}

/// A batch's rows, column by column, for one `INSERT ... SELECT FROM UNNEST`.
struct Columns {
    seq: Vec<i64>,
    at_ms: Vec<i64>,
    json: Vec<String>,
    prev_hash: Vec<String>,
    hash: Vec<String>,
}

impl Columns {
    fn with_capacity(n: usize) -> Self {
        Columns {
            seq: Vec::with_capacity(n),
            at_ms: Vec::with_capacity(n),
            json: Vec::with_capacity(n),
            prev_hash: Vec::with_capacity(n),
            hash: Vec::with_capacity(n),
        }
    }
}
