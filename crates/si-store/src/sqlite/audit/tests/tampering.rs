//! Someone with write access to `audit.db` changes one column of one record:
//! `verify` must fail at that record and say which column, whichever it was.

use std::path::Path;

use proptest::prelude::*;
use rusqlite::{Connection, params};
use si_audit::{AuditError, GENESIS_HASH, VerifyReport};

use super::{broken_at, export, log_with, verify};

/// The stored columns of a record, as the database names them.
#[derive(Clone, Copy, Debug)]
enum Column {
    Seq,
    AtMs,
    Record,
    PrevHash,
    Hash,
}

impl Column {
    fn name(self) -> &'static str {
        match self {
            Column::Seq => "seq",
            Column::AtMs => "at_ms",
            Column::Record => "record",
            Column::PrevHash => "prev_hash",
            Column::Hash => "hash",
        }
    }
}

/// One change to one column, made relative to what is stored so that it always
/// changes something.
#[derive(Clone, Debug)]
enum Change {
    /// A free number: this far past the last record when positive, else this one
    /// (zero or below, where no record is numbered).
    Seq(i64),
    /// Moved in time by this many milliseconds (never 0).
    AtMs(i64),
    /// One character of the JSON replaced.
    RecordChar(prop::sample::Index, char),
    /// The whole JSON replaced.
    RecordText(String),
    /// Another link.
    PrevHash(String),
    /// Another hash.
    Hash(String),
}

impl Change {
    fn column(&self) -> Column {
        match self {
            Change::Seq(_) => Column::Seq,
            Change::AtMs(_) => Column::AtMs,
            Change::RecordChar(..) | Change::RecordText(_) => Column::Record,
            Change::PrevHash(_) => Column::PrevHash,
            Change::Hash(_) => Column::Hash,
        }
    }
}

fn change() -> impl Strategy<Value = Change> {
    const TEN_YEARS_MS: i64 = 10 * 365 * 86_400_000;
    let hash = "[0-9a-f]{64}";
    prop_oneof![
        prop_oneof![1i64..1000, -1000i64..=0].prop_map(Change::Seq),
        prop_oneof![-TEN_YEARS_MS..=-1, 1..=TEN_YEARS_MS, Just(-1), Just(1)].prop_map(Change::AtMs),
        (any::<prop::sample::Index>(), any::<char>()).prop_map(|(at, c)| Change::RecordChar(at, c)),
        ".{0,64}".prop_map(Change::RecordText),
        prop_oneof![hash.prop_map(String::from), Just(GENESIS_HASH.to_owned())]
            .prop_map(Change::PrevHash),
        hash.prop_map(Change::Hash),
    ]
}

/// Applies `change` to record `seq` of the `records` in the log at `path`, behind
/// the store's back.
fn tamper(path: &Path, seq: u64, records: u64, change: &Change) {
    let conn = Connection::open(path).unwrap();
    let (json, prev_hash, hash): (String, String, String) = conn
        .query_row(
            "SELECT record, prev_hash, hash FROM audit WHERE seq = ?1",
            [seq],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    let seq = i64::try_from(seq).unwrap();
    let update = |column: &str, value: rusqlite::types::Value| {
        let changed = conn
            .execute(
                &format!("UPDATE audit SET {column} = ?1 WHERE seq = ?2"),
                params![value, seq],
            )
            .unwrap();
        assert_eq!(changed, 1);
    };
    let other = |now: String, then: &str| if now == then { format!("{now}0") } else { now };
    match change {
        Change::Seq(free) => {
            let to = if *free > 0 {
                i64::try_from(records).unwrap() + free
            } else {
                *free
            };
            update("seq", to.into());
        }
        Change::AtMs(by) => {
            conn.execute(
                "UPDATE audit SET at_ms = at_ms + ?1 WHERE seq = ?2",
                params![by, seq],
            )
            .unwrap();
        }
        Change::RecordChar(at, c) => {
            let mut chars: Vec<char> = json.chars().collect();
            let at = at.index(chars.len());
            chars[at] = match (chars[at] == *c, *c == '~') {
                (false, _) => *c,
                (true, false) => '~',
                (true, true) => '!',
            };
            update("record", chars.into_iter().collect::<String>().into());
        }
        Change::RecordText(text) => update("record", other(text.clone(), &json).into()),
        Change::PrevHash(to) => update("prev_hash", other(to.clone(), &prev_hash).into()),
        Change::Hash(to) => update("hash", other(to.clone(), &hash).into()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn changing_any_stored_column_names_the_record_and_the_column(
        records in 1u64..6,
        pick in any::<prop::sample::Index>(),
        change in change(),
    ) {
        let target = u64::try_from(pick.index(usize::try_from(records).unwrap())).unwrap() + 1;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (_dir, path) = runtime.block_on(log_with(records));
        tamper(&path, target, records, &change);
        let (seq, reason) = runtime.block_on(broken_at(&path));
        let column = format!("{} column", change.column().name());
        prop_assert_eq!(seq, target, "{}", reason);
        prop_assert!(reason.contains(&column), "{column} not named: {reason}");
    }
}

#[tokio::test]
async fn a_record_moved_in_time_is_named_by_verify_and_refused_by_export() {
    let (_dir, path) = log_with(3).await;
    let day = 86_400_000;
    tamper(&path, 2, 3, &Change::AtMs(-day));
    let (seq, reason) = broken_at(&path).await;
    assert_eq!(seq, 2);
    assert!(reason.contains("at_ms column"), "{reason}");

    // Any export that reads it refuses rather than place it at the wrong time.
    let at_ms: i64 = Connection::open(&path)
        .unwrap()
        .query_row("SELECT at_ms FROM audit WHERE seq = 2", [], |r| r.get(0))
        .unwrap();
    let mut out = Vec::new();
    let refused = export(&path, Some(at_ms), Some(at_ms + 1), &mut out).await;
    assert!(
        matches!(refused, Err(AuditError::Altered { seq: 2, .. })),
        "{refused:?}"
    );
    assert!(out.is_empty());
}

#[tokio::test]
async fn a_record_renumbered_below_one_is_not_hidden() {
    let (_dir, path) = log_with(4).await;
    // The last record, where plain removal could not be told from truncation.
    tamper(&path, 4, 4, &Change::Seq(-3));
    let (seq, reason) = broken_at(&path).await;
    assert_eq!(seq, 4);
    assert!(reason.contains("seq column"), "{reason}");
    let mut out = Vec::new();
    assert!(matches!(
        export(&path, None, None, &mut out).await,
        Err(AuditError::Altered { seq: 4, .. })
    ));
}

/// Two records exactly as earlier versions wrote them (the second a workflow
/// step), with their hashes: they must keep verifying.
#[tokio::test]
async fn a_chain_written_by_earlier_versions_still_verifies() {
    const FIRST: &str = r#"{"seq":1,"at":"2026-12-01T08:00:00.000Z","request_id":"req-1","user":"doctor1","role":"clinician","location":"hospital-01","client_ip":"127.0.0.1","method":"POST","path":"/v1/chat/completions","agent":"Clinical","model":"biomistral-7b","backend":"biomistral-7b-8085","status":200,"prompt_tokens":14,"completion_tokens":3,"latency_ms":12.5}"#;
    const SECOND: &str = r#"{"seq":2,"at":"2026-12-01T08:00:01.250Z","request_id":"run-7","user":"doctor1","role":"clinician","location":"hospital-01","client_ip":"127.0.0.1","method":"POST","path":"/v1/workflows/discharge","agent":null,"model":"biomistral-7b","backend":"biomistral-7b-8085","status":499,"prompt_tokens":null,"completion_tokens":null,"latency_ms":3.0,"step":"summarise"}"#;
    const FIRST_HASH: &str = "24d8183e949d25dc6644da488063bef4d9449441d40bfd523bc710962e36b56e";
    const SECOND_HASH: &str = "768319c05dd3acef5da7ed90287bfe39c83d4d99f5af9e1d0d01db95421977bc";
    let (_dir, path) = log_with(0).await;
    let conn = Connection::open(&path).unwrap();
    for (seq, at_ms, json, prev, hash) in [
        (1, 1_796_112_000_000_i64, FIRST, GENESIS_HASH, FIRST_HASH),
        (2, 1_796_112_001_250, SECOND, FIRST_HASH, SECOND_HASH),
    ] {
        conn.execute(
            "INSERT INTO audit (seq, at_ms, record, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![seq, at_ms, json, prev, hash],
        )
        .unwrap();
    }
    drop(conn);
    assert_eq!(
        verify(&path).await.unwrap(),
        VerifyReport::Intact {
            records: 2,
            head: SECOND_HASH.into()
        }
    );
    let mut out = Vec::new();
    assert_eq!(export(&path, None, None, &mut out).await.unwrap(), 2);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!("{FIRST}\n{SECOND}\n")
    );
}

#[tokio::test]
async fn a_time_that_is_not_a_number_is_an_error_naming_the_row_and_column() {
    let (_dir, path) = log_with(3).await;
    super::sql(&path, "UPDATE audit SET at_ms = 'soon' WHERE seq = 2");
    let failed = verify(&path).await.unwrap_err().to_string();
    assert!(failed.contains("row numbered 2"), "{failed}");
    assert!(failed.contains("at_ms"), "{failed}");
}
