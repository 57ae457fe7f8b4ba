//! Writing the chain. A caller that finds nothing queued and the writer free
//! commits its record itself, on its own thread: a lone request then costs no
//! hand-off to another thread and back, which on a quiet server is most of the
//! cost. Otherwise the record joins the queue, and the writer thread commits
//! what is queued in one transaction (group commit), so that under load the
//! request threads never wait for each other's commits.
//!
//! A commit in WAL mode with `synchronous = NORMAL` is a write to the page cache,
//! no fsync. The one slow step, copying the WAL back into the database
//! (checkpoint, with an fsync), runs on a background thread with its own
//! connection, never on a request.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use si_audit::{AuditRecord, AuditUnavailable, ChainHead};
use tokio::sync::oneshot;

/// A record waiting to be committed, and who waits for it (if anyone).
type Pending = (
    AuditRecord,
    Option<oneshot::Sender<Result<(), AuditUnavailable>>>,
);

/// Most records committed in one transaction.
const MAX_BATCH: usize = 512;
/// How often the WAL is copied back into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// The open audit log's writer.
pub(super) struct AuditLog {
    shared: Arc<Shared>,
    path: PathBuf,
    threads: Vec<JoinHandle<()>>,
    stop_checkpoints: Option<Sender<()>>,
}

/// What callers and the writer thread share.
struct Shared {
    /// False once the writer thread has stopped (it never should while open):
    /// callers then commit themselves rather than queue for no one.
    writer_alive: std::sync::atomic::AtomicBool,
    queue: Mutex<Queue>,
    queued: Condvar,
    writer: Mutex<Writer>,
    path: PathBuf,
}

#[derive(Default)]
struct Queue {
    pending: Vec<Pending>,
    closed: bool,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The connection and the chain's head.
struct Writer {
    conn: Connection,
    head: ChainHead,
}

impl AuditLog {
    /// Starts writing to `conn`, the open log at `path`.
    pub(super) fn start(conn: Connection, path: &Path) -> Result<Self, String> {
        let head = chain_head(&conn).map_err(|e| e.to_string())?;
        let shared = Arc::new(Shared {
            writer_alive: std::sync::atomic::AtomicBool::new(true),
            queue: Mutex::new(Queue::default()),
            queued: Condvar::new(),
            writer: Mutex::new(Writer { conn, head }),
            path: path.to_owned(),
        });
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("audit-writer".into())
                .spawn(move || shared.write_loop())
                .map_err(|e| e.to_string())?
        };
        let (stop, stopped) = mpsc::channel();
        let checkpoint_path = path.to_owned();
        let checkpointer = std::thread::Builder::new()
            .name("audit-checkpoint".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
                    checkpoint(&checkpoint_path);
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(AuditLog {
            shared,
            path: path.to_owned(),
            threads: vec![writer, checkpointer],
            stop_checkpoints: Some(stop),
        })
    }

    /// Appends `record` and returns once it is committed. When nothing else is
    /// being written, the commit (a write to the page cache) runs on the calling
    /// thread.
    pub(super) async fn append(&self, record: AuditRecord) -> Result<(), AuditUnavailable> {
        let (done, committed) = oneshot::channel();
        self.shared.submit((record, Some(done)));
        committed.await.unwrap_or(Err(AuditUnavailable))
    }

    /// Appends `record` without waiting for the outcome.
    pub(super) fn append_detached(&self, record: AuditRecord) {
        self.shared.submit((record, None));
    }
}

impl Shared {
    /// Commits `pending` here if the queue is empty and the writer free, else
    /// queues it for the writer thread.
    fn submit(&self, pending: Pending) {
        let mut queue = lock(&self.queue);
        let alone = queue.pending.is_empty();
        if alone || !self.writer_alive.load(std::sync::atomic::Ordering::Acquire) {
            let writer = match self.writer.try_lock() {
                Ok(writer) => Some(writer),
                Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
                Err(TryLockError::WouldBlock) if alone => None,
                // No writer thread: wait for the writer ourselves.
                Err(TryLockError::WouldBlock) => Some(lock(&self.writer)),
            };
            if let Some(mut writer) = writer {
                // Anything left queued for a stopped writer thread goes too.
                let mut batch: Vec<Pending> = queue.pending.drain(..).collect();
                batch.push(pending);
                drop(queue);
                let outcome = writer.write(&mut batch, &self.path);
                drop(writer);
                for (_, done) in batch {
                    if let Some(done) = done {
                        let _ = done.send(outcome);
                    }
                }
                return;
            }
        }
        queue.pending.push(pending);
        drop(queue);
        self.queued.notify_one();
    }

    /// The writer thread: commits what is queued, in batches, until closed and
    /// drained.
    fn write_loop(&self) {
        /// Marks the writer gone however the loop ends (a panic included).
        struct Alive<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for Alive<'_> {
            fn drop(&mut self) {
                self.0.store(false, std::sync::atomic::Ordering::Release);
            }
        }
        let _alive = Alive(&self.writer_alive);
        loop {
            let mut batch = {
                let mut queue = lock(&self.queue);
                while queue.pending.is_empty() && !queue.closed {
                    queue = self.queued.wait(queue).unwrap_or_else(|e| e.into_inner());
                }
                if queue.pending.is_empty() {
                    return;
                }
                let take = queue.pending.len().min(MAX_BATCH);
                queue.pending.drain(..take).collect::<Vec<_>>()
            };
            let outcome = lock(&self.writer).write(&mut batch, &self.path);
            for (_, done) in batch {
                if let Some(done) = done {
                    let _ = done.send(outcome);
                }
            }
        }
    }
}

impl Drop for AuditLog {
    /// Commits what is queued and checkpoints before returning.
    fn drop(&mut self) {
        lock(&self.shared.queue).closed = true;
        self.shared.queued.notify_all();
        drop(self.stop_checkpoints.take());
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        checkpoint(&self.path);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Writer {
    /// Commits `batch` in one transaction. On failure the transaction rolled back
    /// and the chain on disk is intact; the records are reported lost.
    fn write(&mut self, batch: &mut [Pending], path: &Path) -> Result<(), AuditUnavailable> {
        match write_batch(&mut self.conn, &self.head, batch) {
            Ok(head) => {
                head.log_now_and_then(self.head.seq);
                self.head = head;
                Ok(())
            }
            Err(e) => {
                // Loudly, without the records' contents.
                tracing::error!(path = %path.display(), records = batch.len(), error = %e, "audit write failed");
                Err(AuditUnavailable)
            }
        }
    }
}

/// Copies the WAL back into the database, without waiting for readers or writers.
fn checkpoint(path: &Path) {
    let done = Connection::open(path).and_then(|conn| {
        conn.busy_timeout(Duration::from_millis(100))?;
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
    });
    if let Err(e) = done {
        tracing::debug!(path = %path.display(), error = %e, "audit checkpoint skipped");
    }
}

/// The last record's sequence number and hash.
fn chain_head(conn: &Connection) -> rusqlite::Result<ChainHead> {
    let head = conn
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
        )
        .optional()?;
    Ok(
        head.map_or_else(ChainHead::default, |(seq, hash)| ChainHead {
            seq: u64::try_from(seq).unwrap_or(0),
            hash,
        }),
    )
}

fn write_batch(
    conn: &mut Connection,
    head: &ChainHead,
    batch: &mut [Pending],
) -> rusqlite::Result<ChainHead> {
    let tx = conn.transaction()?;
    let mut head = head.clone();
    {
        // Prepared once per connection, not once per record.
        let mut insert = tx.prepare_cached(
            "INSERT INTO audit (seq, at_ms, record, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for (record, _) in batch.iter_mut() {
            let sealed = head
                .seal(record)
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            insert.execute(params![
                i64::try_from(sealed.seq).unwrap_or(i64::MAX),
                sealed.at_ms,
                sealed.json,
                sealed.prev_hash,
                sealed.hash
            ])?;
        }
    }
    tx.commit()?;
    Ok(head)
}
