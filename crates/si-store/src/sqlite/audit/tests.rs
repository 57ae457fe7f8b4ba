use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{Connection, params};
use si_audit::chain::chain_hash;
use si_audit::{AuditStore, VerifyReport, at_millis, now_rfc3339};

use super::*;

fn reader(path: &Path) -> Result<SqliteAudit, AuditError> {
    SqliteAudit::open_read_only(path)
}

async fn verify(path: &Path) -> Result<VerifyReport, AuditError> {
    si_audit::verify(&reader(path)?, None).await
}

async fn verify_with_head(path: &Path, head: &str) -> Result<VerifyReport, AuditError> {
    si_audit::verify(&reader(path)?, Some(head)).await
}

async fn export(
    path: &Path,
    since: Option<i64>,
    until: Option<i64>,
    out: &mut Vec<u8>,
) -> Result<u64, AuditError> {
    si_audit::export(&reader(path)?, since, until, out).await
}

fn record(n: u64) -> AuditRecord {
    AuditRecord {
        at: now_rfc3339(),
        request_id: format!("req-{n}"),
        user: Some("doctor1".into()),
        role: Some("clinician".into()),
        location: Some("hospital-01".into()),
        client_ip: "127.0.0.1".into(),
        method: "POST".into(),
        path: "/v1/chat/completions".into(),
        agent: Some("Clinical".into()),
        model: Some("biomistral-7b".into()),
        backend: Some("biomistral-7b-8085".into()),
        status: 200,
        prompt_tokens: Some(14),
        completion_tokens: Some(3),
        latency_ms: 12.5,
        ..AuditRecord::default()
    }
}

fn sql(path: &Path, statement: &str) {
    Connection::open(path)
        .unwrap()
        .execute(statement, [])
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_form_one_intact_chain_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let log = Arc::new(SqliteAudit::open(&path).unwrap());
    let tasks: Vec<_> = (0..100)
        .map(|n| {
            let log = log.clone();
            tokio::spawn(async move { log.append(record(n)).await.unwrap() })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    // append() returned: every record is already committed.
    assert!(matches!(
        verify(&path).await.unwrap(),
        VerifyReport::Intact { records: 100, .. }
    ));
    drop(log);

    let log = SqliteAudit::open(&path).unwrap();
    log.append(record(100)).await.unwrap();
    drop(log);
    let VerifyReport::Intact { records, head } = verify(&path).await.unwrap() else {
        panic!("broken")
    };
    assert_eq!(records, 101);
    assert_eq!(head.len(), 64);
}

#[tokio::test]
async fn queued_records_are_flushed_when_the_log_closes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let log = SqliteAudit::open(&path).unwrap();
    for n in 0..50 {
        log.append_detached(record(n));
    }
    drop(log);
    assert!(matches!(
        verify(&path).await.unwrap(),
        VerifyReport::Intact { records: 50, .. }
    ));
}

async fn log_with(records: u64) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let log = SqliteAudit::open(&path).unwrap();
    for n in 0..records {
        log.append_detached(record(n));
    }
    drop(log);
    (dir, path)
}

async fn broken_at(path: &Path) -> (u64, String) {
    match verify(path).await.unwrap() {
        VerifyReport::Broken { seq, reason } => (seq, reason),
        intact => panic!("tampering went unnoticed: {intact:?}"),
    }
}

#[tokio::test]
async fn an_edited_record_is_found() {
    let (_dir, path) = log_with(10).await;
    sql(
        &path,
        r#"UPDATE audit SET record = replace(record, '"status":200', '"status":201') WHERE seq = 5"#,
    );
    let (seq, reason) = broken_at(&path).await;
    assert_eq!(seq, 5);
    assert!(reason.contains("changed"), "{reason}");
}

#[tokio::test]
async fn an_edit_with_a_recomputed_hash_breaks_the_next_link() {
    let (_dir, path) = log_with(10).await;
    let conn = Connection::open(&path).unwrap();
    let (json, prev): (String, String) = conn
        .query_row(
            "SELECT record, prev_hash FROM audit WHERE seq = 5",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let forged = json.replace("doctor1", "someone");
    conn.execute(
        "UPDATE audit SET record = ?1, hash = ?2 WHERE seq = 5",
        params![forged, chain_hash(&prev, &forged)],
    )
    .unwrap();
    assert_eq!(broken_at(&path).await.0, 6);
}

#[tokio::test]
async fn a_removed_record_is_found() {
    let (_dir, path) = log_with(10).await;
    sql(&path, "DELETE FROM audit WHERE seq = 3");
    let (seq, reason) = broken_at(&path).await;
    assert_eq!(seq, 3);
    assert!(reason.contains("missing"), "{reason}");
}

#[tokio::test]
async fn export_writes_json_lines_within_the_window() {
    let (_dir, path) = log_with(3).await;
    let mut out = Vec::new();
    assert_eq!(export(&path, None, None, &mut out).await.unwrap(), 3);
    let lines: Vec<AuditRecord> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3]);
    let at = at_millis(&lines[0].at);
    let mut none = Vec::new();
    assert_eq!(
        export(&path, Some(at + 60_000), None, &mut none)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        export(&path, None, Some(at - 60_000), &mut none)
            .await
            .unwrap(),
        0
    );
    assert!(none.is_empty());
}

#[tokio::test]
async fn a_missing_log_is_an_error_not_an_empty_chain() {
    let dir = tempfile::tempdir().unwrap();
    assert!(verify(&dir.path().join("absent.db")).await.is_err());
}

#[tokio::test]
async fn a_known_head_reveals_truncation_and_rewrites() {
    let (_dir, path) = log_with(10).await;
    let VerifyReport::Intact { head, .. } = verify(&path).await.unwrap() else {
        panic!("broken")
    };
    assert!(matches!(
        verify_with_head(&path, &head).await.unwrap(),
        VerifyReport::Intact { .. }
    ));
    sql(&path, "DELETE FROM audit WHERE seq >= 9");
    assert!(
        matches!(
            verify(&path).await.unwrap(),
            VerifyReport::Intact { records: 8, .. }
        ),
        "plain verify cannot see it"
    );
    assert!(matches!(
        verify_with_head(&path, &head).await.unwrap(),
        VerifyReport::Broken { .. }
    ));
}

#[tokio::test]
async fn a_record_that_cannot_be_written_is_reported_to_the_request() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let log = SqliteAudit::open_with(&path, std::time::Duration::from_millis(20)).unwrap();
    log.append(record(0)).await.unwrap();
    // Another connection holds the write lock.
    let blocker = Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    assert_eq!(log.append(record(1)).await, Err(AuditUnavailable));
    blocker.execute_batch("COMMIT").unwrap();
    log.append(record(2)).await.unwrap();
    drop(log);
    assert!(matches!(
        verify(&path).await.unwrap(),
        VerifyReport::Intact { records: 2, .. }
    ));
}

#[tokio::test]
async fn every_page_is_an_indexed_search_not_a_scan() {
    let (_dir, path) = log_with(1).await;
    let conn = Connection::open(&path).unwrap();
    for (since, until) in [(false, false), (true, false), (false, true), (true, true)] {
        let plan: String = conn
            .query_row(
                &format!("EXPLAIN QUERY PLAN {}", page_sql(since, until)),
                params![1, 0, 0, 10],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.starts_with("SEARCH"), "{since} {until}: {plan}");
    }
}

mod tampering;
