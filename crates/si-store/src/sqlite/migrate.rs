//! Versioned schema migrations: numbered SQL files, applied in order, all pending
//! ones in one transaction, recorded in `schema_migrations`. The first ones use
//! `IF NOT EXISTS`, so databases made before versioning adopt them unchanged. A
//! migration may have a step in Rust after its SQL, for data SQLite cannot compute.

use rusqlite::{Connection, Transaction, params};

/// A migration's step in Rust, in the migration's transaction.
pub(crate) type DataStep = fn(&Transaction<'_>) -> Result<(), String>;

/// One schema change.
pub(crate) struct Migration {
    /// Its number (from 1, no gaps).
    pub version: i64,
    /// What it does.
    pub name: &'static str,
    /// Its SQL.
    pub sql: &'static str,
    /// Run after the SQL, in the same transaction.
    pub then: Option<DataStep>,
}

/// The user database's history.
pub(crate) const USERS: &[Migration] = &[
    Migration {
        version: 1,
        name: "users, sessions and revocations",
        sql: include_str!("../../migrations/sqlite/users/0001_users_sessions_revocations.sql"),
        then: None,
    },
    Migration {
        version: 2,
        name: "username keys",
        sql: include_str!("../../migrations/sqlite/users/0002_username_keys.sql"),
        then: Some(super::users::fill_username_keys),
    },
    Migration {
        version: 3,
        name: "API keys",
        sql: include_str!("../../migrations/sqlite/users/0003_api_keys.sql"),
        then: None,
    },
    Migration {
        version: 4,
        name: "API key rate limits and last use",
        sql: include_str!("../../migrations/sqlite/users/0004_api_key_limits_and_use.sql"),
        then: None,
    },
];

/// The audit database's history.
pub(crate) const AUDIT: &[Migration] = &[Migration {
    version: 1,
    name: "audit chain",
    sql: include_str!("../../migrations/sqlite/audit/0001_audit_chain.sql"),
    then: None,
}];

/// Brings `conn`'s schema up to the last of `migrations`; refuses a database whose
/// schema is newer than this program knows (a newer gateway migrated it).
pub(crate) fn apply(conn: &mut Connection, migrations: &[Migration]) -> Result<(), String> {
    let sql = |e: rusqlite::Error| e.to_string();
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER PRIMARY KEY NOT NULL,
             name       TEXT NOT NULL,
             applied_at INTEGER NOT NULL
         )",
    )
    .map_err(sql)?;
    let tx = conn.transaction().map_err(sql)?;
    let current: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )
        .map_err(sql)?;
    let known = migrations.last().map_or(0, |m| m.version);
    if current > known {
        return Err(format!(
            "its schema is at version {current}, newer than this program knows ({known}); \
             run the newer version of the platform, or restore a backup"
        ));
    }
    for migration in migrations.iter().filter(|m| m.version > current) {
        let failed =
            |e: String| format!("migration {} ({}): {e}", migration.version, migration.name);
        tx.execute_batch(migration.sql)
            .map_err(|e| failed(e.to_string()))?;
        if let Some(then) = migration.then {
            then(&tx).map_err(failed)?;
        }
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at)
             VALUES (?1, ?2, strftime('%s', 'now'))",
            params![migration.version, migration.name],
        )
        .map_err(sql)?;
    }
    tx.commit().map_err(sql)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_once_and_refuses_a_newer_schema() {
        let mut conn = Connection::open_in_memory().unwrap();
        apply(&mut conn, USERS).unwrap();
        apply(&mut conn, USERS).unwrap();
        let applied: i64 = conn
            .query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(applied, USERS.len() as i64);
        conn.execute(
            "INSERT INTO schema_migrations VALUES (99, 'from the future', 0)",
            [],
        )
        .unwrap();
        let refused = apply(&mut conn, USERS).unwrap_err();
        assert!(refused.contains("version 99"), "{refused}");
    }

    #[test]
    fn a_database_made_before_versioning_adopts_the_first_migration() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(USERS[0].sql).unwrap();
        conn.execute("INSERT INTO revoked_tokens VALUES ('j', 1)", [])
            .unwrap();
        apply(&mut conn, USERS).unwrap();
        let kept: i64 = conn
            .query_row("SELECT COUNT(*) FROM revoked_tokens", [], |r| r.get(0))
            .unwrap();
        assert_eq!(kept, 1);
    }
}
