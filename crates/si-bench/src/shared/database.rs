//! A database of the benchmark's own on the PostgreSQL server it is given: created
//! for one run, so that its gateways start on an empty store, and dropped after.

use tokio_postgres::{Client, NoTls};

/// A database created for this run.
pub struct BenchDatabase {
    /// A connection to the server's maintenance database, to drop it by.
    admin: Client,
    name: String,
    url: String,
    /// The server's main process, when it runs on this machine.
    server_process: Option<u32>,
}

impl BenchDatabase {
    /// Creates `si_bench_<pid>_<time>` on the server `server_url` names (any of
    /// its databases: the URL's own is only connected to).
    pub async fn create(server_url: &str) -> Result<Self, String> {
        // Parsed first, so that a bad URL is named as such, not as a failure to
        // connect; neither message echoes it, as it may hold a password.
        let url_of = |name: &str| with_database(server_url, name);
        url_of("postgres")?;
        let (admin, connection) = tokio_postgres::connect(server_url, NoTls)
            .await
            .map_err(|e| format!("cannot reach PostgreSQL at --database-url: {e}"))?;
        tokio::spawn(connection);
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let name = format!("si_bench_{}_{}", std::process::id(), since_epoch.as_secs());
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .map_err(|e| format!("cannot create the database {name}: {e}"))?;
        Ok(BenchDatabase {
            server_process: server_process(&admin).await,
            admin,
            url: url_of(&name)?,
            name,
        })
    }

    /// The server's main process (whose children do the work), when it runs on
    /// this machine, so that its CPU time can be read.
    pub fn server_process(&self) -> Option<u32> {
        self.server_process
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The URL that reaches it.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Drops it.
    pub async fn remove(self) -> Result<(), String> {
        // FORCE: a gateway just killed may still hold a connection the server has
        // not yet seen close.
        self.admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await
            .map_err(|e| format!("cannot drop the database {}: {e}", self.name))
    }
}

/// The parent of this connection's backend process, if both are PostgreSQL
/// processes of this machine: a server elsewhere (or in another process
/// namespace) has pids that mean nothing here, or something else.
async fn server_process(admin: &Client) -> Option<u32> {
    let row = admin.query_one("SELECT pg_backend_pid()", &[]).await.ok()?;
    let backend = u32::try_from(row.try_get::<_, i32>(0).ok()?).ok()?;
    let is_postgres = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres")
    };
    let stat = std::fs::read_to_string(format!("/proc/{backend}/stat")).ok()?;
    // The parent is the second field after the command name, which is in
    // parentheses and may hold spaces.
    let parent = stat
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    (is_postgres(backend) && is_postgres(parent)).then_some(parent)
}

/// `url` (`postgres://user:password@host:port/db?options`) naming the database
/// `name` instead of its own.
fn with_database(url: &str, name: &str) -> Result<String, String> {
    let (scheme, rest) = url
        .split_once("://")
        .filter(|(scheme, _)| matches!(*scheme, "postgres" | "postgresql"))
        .ok_or("--database-url: not a postgres:// URL")?;
    let (rest, options) = match rest.split_once('?') {
        Some((rest, options)) => (rest, Some(options)),
        None => (rest, None),
    };
    // Empty for the local socket (`postgres:///db?host=/run/postgresql`).
    let server = rest.split_once('/').map_or(rest, |(server, _)| server);
    Ok(match options {
        Some(options) => format!("{scheme}://{server}/{name}?{options}"),
        None => format!("{scheme}://{server}/{name}"),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::with_database;

    #[test]
    fn the_database_in_a_url_is_replaced_and_the_rest_kept() {
        let cases = [
            (
                "postgres://postgres@127.0.0.1:5432/postgres",
                "postgres://postgres@127.0.0.1:5432/si_bench_1",
            ),
            (
                "postgresql://si:secret@db.local/si?sslmode=disable",
                "postgresql://si:secret@db.local/si_bench_1?sslmode=disable",
            ),
            ("postgres://localhost", "postgres://localhost/si_bench_1"),
            (
                "postgres:///si?host=/run/postgresql",
                "postgres:///si_bench_1?host=/run/postgresql",
            ),
            (
                "postgres://localhost?connect_timeout=5",
                "postgres://localhost/si_bench_1?connect_timeout=5",
            ),
        ];
        for (url, wanted) in cases {
            assert_eq!(with_database(url, "si_bench_1").unwrap(), wanted, "{url}");
        }
    }

    #[test]
    fn what_is_not_a_postgres_url_is_refused_without_being_echoed() {
        for url in ["mysql://root:hunter2@db/si", "host=db password=hunter2"] {
            let error = with_database(url, "si_bench_1").unwrap_err();
            assert!(!error.contains("hunter2"), "{error}");
        }
    }
}
