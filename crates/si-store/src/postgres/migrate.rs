//! Versioned schema migrations for PostgreSQL: numbered SQL files, applied in
//! order in one transaction under an advisory lock (so gateways starting together
//! do not race), recorded in `schema_migrations`.

use tokio_postgres::Client;

/// One schema change.
pub(crate) struct Migration {
    /// Its number, from 1, without gaps.
    pub version: i64,
    /// What it does.
    pub name: &'static str,
    /// Its SQL.
    pub sql: &'static str,
}

/// The schema's history.
pub(crate) const SCHEMA: &[Migration] = &[
    Migration {
        version: 1,
        name: "users, sessions and revocations",
        sql: include_str!("../../migrations/postgres/0001_accounts.sql"),
    },
    Migration {
        version: 2,
        name: "the audit chain",
        sql: include_str!("../../migrations/postgres/0002_audit.sql"),
    },
    Migration {
        version: 3,
        name: "API keys",
        sql: include_str!("../../migrations/postgres/0003_api_keys.sql"),
    },
    Migration {
        version: 4,
        name: "API key rate limits and last use",
        sql: include_str!("../../migrations/postgres/0004_api_key_limits_and_use.sql"),
    },
];

/// The advisory lock every migrating gateway takes (an arbitrary constant).
const MIGRATION_LOCK: i64 = 0x5349_4d49_4752;

/// Brings the schema up to the last of `migrations`, or, with `apply` false, only
/// checks that it is there. Refuses a schema newer than this program knows.
pub(crate) async fn run(
    client: &mut Client,
    migrations: &[Migration],
    apply: bool,
) -> Result<(), String> {
    let sql = |e: tokio_postgres::Error| e.to_string();
    if !apply {
        return check(client, migrations).await;
    }
    let tx = client.transaction().await.map_err(sql)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(sql)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    BIGINT PRIMARY KEY,
             name       TEXT NOT NULL,
             applied_at BIGINT NOT NULL
         )",
    )
    .await
    .map_err(sql)?;
    let current: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )
        .await
        .map_err(sql)?
        .get(0);
    let known = migrations.last().map_or(0, |m| m.version);
    if current > known {
        return Err(format!(
            "its schema is at version {current}, newer than this program knows ({known}); \
             run the newer version of the platform"
        ));
    }
    for migration in migrations.iter().filter(|m| m.version > current) {
        tx.batch_execute(migration.sql)
            .await
            .map_err(|e| format!("migration {} ({}): {e}", migration.version, migration.name))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at)
             VALUES ($1, $2, EXTRACT(EPOCH FROM now())::BIGINT)",
            &[&migration.version, &migration.name],
        )
        .await
        .map_err(sql)?;
    }
    tx.commit().await.map_err(sql)
}

/// Checks the schema is exactly what this program knows, reading only (a role that
/// may not create tables can run a gateway whose migrations run separately).
async fn check(client: &Client, migrations: &[Migration]) -> Result<(), String> {
    let sql = |e: tokio_postgres::Error| e.to_string();
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await
        .map_err(sql)?
        .get(0);
    let current: i64 = if exists {
        client
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                &[],
            )
            .await
            .map_err(sql)?
            .get(0)
    } else {
        0
    };
    let known = migrations.last().map_or(0, |m| m.version);
    match current.cmp(&known) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Greater => Err(format!(
            "its schema is at version {current}, newer than this program knows ({known}); \
             run the newer version of the platform"
        )),
        std::cmp::Ordering::Less => Err(format!(
            "its schema is at version {current} and this program needs {known}: run \
             `si-cli db migrate`"
        )),
    }
}
