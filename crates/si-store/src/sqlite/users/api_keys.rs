//! API keys in the user database.

use async_trait::async_trait;
use rusqlite::params;
use si_auth::AuthError;
use si_auth::api_keys::ApiKey;
use si_auth::store::ApiKeyStore;

use super::SqliteUsers;

#[async_trait]
impl ApiKeyStore for SqliteUsers {
    async fn insert_key(&self, key: &ApiKey, hash: &str) -> Result<(), AuthError> {
        let (key, hash) = (key.clone(), hash.to_owned());
        self.run(move |conn, path| {
            let inserted = conn
                .execute(
                    "INSERT INTO api_keys
                         (name, key_hash, role, location, created_at, expires_at, forward_user)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (name) DO NOTHING",
                    params![
                        key.name,
                        hash,
                        key.role.as_str(),
                        key.location,
                        key.created_at,
                        key.expires_at,
                        key.forward_user
                    ],
                )
                .map_err(|e| AuthError::store(path, e))?;
            if inserted == 0 {
                return Err(AuthError::ApiKeyExists(key.name));
            }
            Ok(())
        })
        .await
    }

    async fn keys(&self) -> Result<Vec<(ApiKey, String)>, AuthError> {
        self.run(|conn, path| {
            let failed = |e: rusqlite::Error| AuthError::store(path, e);
            let mut statement = conn
                .prepare(
                    "SELECT name, role, location, created_at, expires_at, revoked, key_hash,
                            forward_user
                     FROM api_keys ORDER BY name",
                )
                .map_err(failed)?;
            let rows = statement
                .query_map([], |row| {
                    Ok((
                        row.get::<_, String>(1)?,
                        ApiKey {
                            name: row.get(0)?,
                            role: si_core::Role::Clinician,
                            location: row.get(2)?,
                            created_at: row.get(3)?,
                            expires_at: row.get(4)?,
                            revoked: row.get(5)?,
                            forward_user: row.get(7)?,
                        },
                        row.get::<_, String>(6)?,
                    ))
                })
                .map_err(failed)?;
            let mut keys = Vec::new();
            for row in rows {
                let (role, mut key, hash) = row.map_err(failed)?;
                // A role this program does not know (written by a newer one):
                // that key is refused, the others still load.
                match role.parse() {
                    Ok(role) => key.role = role,
                    Err(_) => {
                        tracing::warn!(key = %key.name, role = %role, "API key with an unknown role skipped");
                        continue;
                    }
                }
                keys.push((key, hash));
            }
            Ok(keys)
        })
        .await
    }

    async fn revoke_key(&self, name: &str) -> Result<(), AuthError> {
        let name = name.to_owned();
        self.run(move |conn, path| {
            let changed = conn
                .execute(
                    "UPDATE api_keys SET revoked = 1 WHERE name = ?1",
                    params![name],
                )
                .map_err(|e| AuthError::store(path, e))?;
            if changed == 0 {
                return Err(AuthError::UnknownApiKey(name));
            }
            Ok(())
        })
        .await
    }
}
