//! Username keys ([`UsernameKey`]) for users stored before keys existed. SQLite
//! cannot compute NFKC, so the migration that adds the column calls
//! [`fill_username_keys`]. Users whose names already differed only in case or
//! character width are kept, not refused at startup: a gateway that will not start
//! locks every clinician out, where two look-alike accounts harm no one until an
//! operator settles them. The oldest keeps the key; each later one logs in by its
//! exact name only, and is named in a warning every time the database is opened.

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use si_auth::users::UsernameKey;

/// Gives every user without a key its key, oldest first, unless an older user
/// already has it.
pub(crate) fn fill_username_keys(tx: &Transaction<'_>) -> Result<(), String> {
    let sql = |e: rusqlite::Error| e.to_string();
    let names = keyless(tx).map_err(sql)?;
    for name in names {
        let key = UsernameKey::of(&name);
        tx.execute(
            "UPDATE users SET username_key = ?2 WHERE username = ?1
             AND NOT EXISTS (SELECT 1 FROM users WHERE username_key = ?2)",
            params![name, key.as_str()],
        )
        .map_err(sql)?;
    }
    Ok(())
}

/// Warns of each user left without a key, naming the user who has it.
pub(super) fn warn_of_look_alikes(conn: &Connection) -> rusqlite::Result<()> {
    for name in keyless(conn)? {
        let key = UsernameKey::of(&name);
        let holder: Option<String> = conn
            .query_row(
                "SELECT username FROM users WHERE username_key = ?1",
                params![key.as_str()],
                |row| row.get(0),
            )
            .optional()?;
        tracing::warn!(
            user = %name,
            same_as = holder.as_deref().unwrap_or("-"),
            "two users' names differ only in case or character width; this one can log in \
             only by its exact name: disable the one not in use (si-cli users disable)"
        );
    }
    Ok(())
}

/// Users without a key, oldest first.
fn keyless(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare(
        "SELECT username FROM users WHERE username_key IS NULL ORDER BY created_at, username",
    )?;
    let rows = stmt.query_map([], |row| row.get(0))?;
    rows.collect()
}

#[cfg(test)]
mod tests;
