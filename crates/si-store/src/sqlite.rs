//! The SQLite engine: the embedded default, a file per concern in the data
//! directory, no server needed.

mod audit;
mod migrate;
mod users;

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

pub use audit::SqliteAudit;
pub use users::SqliteUsers;

/// Opens (creating, mode 0600, in a private directory) the database at `path` in
/// WAL mode, waiting at most `busy` for another process's lock, and applies
/// `migrations`.
fn open_private(
    path: &Path,
    busy: Duration,
    migrations: &[migrate::Migration],
) -> Result<Connection, String> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        si_auth::secret::create_private_dir(parent).map_err(|e| e.to_string())?;
    }
    let mut conn = Connection::open(path).map_err(|e| e.to_string())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| e.to_string())?;
    }
    conn.busy_timeout(busy)
        .and_then(|()| conn.pragma_update(None, "journal_mode", "WAL"))
        .and_then(|()| conn.pragma_update(None, "synchronous", "NORMAL"))
        // The audit log's checkpoints run on a background thread, not after a
        // commit.
        .and_then(|()| conn.pragma_update(None, "wal_autocheckpoint", 0))
        .map_err(|e| e.to_string())?;
    migrate::apply(&mut conn, migrations)?;
    Ok(conn)
}
