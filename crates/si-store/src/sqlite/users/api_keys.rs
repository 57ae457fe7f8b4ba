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
                         (name, key_hash, role, location, created_at, expires_at, forward_user,
                          rate_limit_per_minute)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (name) DO NOTHING",
                    params![
                        key.name,
                        hash,
                        key.role.as_str(),
                        key.location,
                        key.created_at,
                        key.expires_at,
                        key.forward_user,
                        key.rate_limit,
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
                            forward_user, rate_limit_per_minute, last_used_at
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
                            rate_limit: row
                                .get::<_, Option<i64>>(8)?
                                .and_then(|n| u32::try_from(n).ok())
                                .filter(|n| *n > 0),
                            last_used_at: row.get(9)?,
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

    async fn record_uses(&self, uses: &[(String, i64)]) -> Result<(), AuthError> {
        if uses.is_empty() {
            return Ok(());
        }
        let uses = uses.to_vec();
        self.run(move |conn, path| {
            let failed = |e: rusqlite::Error| AuthError::store(path, e);
            // One transaction: one commit (one fsync) for the whole batch.
            let tx = conn.transaction().map_err(failed)?;
            {
                let mut update = tx
                    .prepare_cached(
                        "UPDATE api_keys SET last_used_at = MAX(COALESCE(last_used_at, ?2), ?2)
                         WHERE name = ?1",
                    )
                    .map_err(failed)?;
                for (name, at) in &uses {
                    update.execute(params![name, at]).map_err(failed)?;
                }
            }
            tx.commit().map_err(failed)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, rate_limit: Option<u32>) -> ApiKey {
        ApiKey {
            name: name.into(),
            role: si_core::Role::Clinician,
            location: "hospital-01".into(),
            created_at: 1_000,
            expires_at: None,
            revoked: false,
            forward_user: false,
            rate_limit,
            last_used_at: None,
        }
    }

    #[tokio::test]
    async fn a_key_keeps_its_limit_and_its_latest_use() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteUsers::open(&dir.path().join("users.db")).unwrap();
        store
            .insert_key(&key("ehr", Some(30)), "hash-ehr")
            .await
            .unwrap();
        store
            .insert_key(&key("webui", None), "hash-webui")
            .await
            .unwrap();
        let uses = [("ehr".to_owned(), 2_000), ("nobody".to_owned(), 2_000)];
        store.record_uses(&uses).await.unwrap();
        // Another gateway's older use does not move it back.
        store
            .record_uses(&[("ehr".to_owned(), 1_500)])
            .await
            .unwrap();
        store.record_uses(&[]).await.unwrap();
        let keys = store.keys().await.unwrap();
        let got: Vec<_> = keys
            .iter()
            .map(|(k, _)| (k.name.as_str(), k.rate_limit, k.last_used_at))
            .collect();
        assert_eq!(got, [("ehr", Some(30), Some(2_000)), ("webui", None, None)]);
        // A later use moves it on; the key is otherwise as it was made.
        store
            .record_uses(&[("ehr".to_owned(), 2_060)])
            .await
            .unwrap();
        let (ehr, hash) = &store.keys().await.unwrap()[0];
        assert_eq!((ehr.last_used_at, hash.as_str()), (Some(2_060), "hash-ehr"));
        assert_eq!(
            ApiKey {
                last_used_at: None,
                ..ehr.clone()
            },
            key("ehr", Some(30))
        );
    }
}
