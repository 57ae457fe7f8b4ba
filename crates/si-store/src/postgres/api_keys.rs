//! API keys in PostgreSQL, shared by every gateway. Revoking one bumps the
//! revocation counter and notifies, in the same transaction, so every gateway
//! reloads its keys at once; recording when keys were last used does not.

use async_trait::async_trait;
use si_auth::AuthError;
use si_auth::api_keys::ApiKey;
use si_auth::store::ApiKeyStore;

use super::PostgresAccounts;

#[async_trait]
impl ApiKeyStore for PostgresAccounts {
    async fn insert_key(&self, key: &ApiKey, hash: &str) -> Result<(), AuthError> {
        let client = self.client().await?;
        let rate_limit = key.rate_limit.map(i64::from);
        let inserted = client
            .execute(
                "INSERT INTO api_keys
                     (name, key_hash, role, location, created_at, expires_at, forward_user,
                      rate_limit_per_minute)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (name) DO NOTHING",
                &[
                    &key.name,
                    &hash,
                    &key.role.as_str(),
                    &key.location,
                    &key.created_at,
                    &key.expires_at,
                    &key.forward_user,
                    &rate_limit,
                ],
            )
            .await
            .map_err(|e| self.failed(e))?;
        if inserted == 0 {
            return Err(AuthError::ApiKeyExists(key.name.clone()));
        }
        // New keys must reach every gateway too.
        client
            .execute(super::sessions::BUMP_VERSION, &[])
            .await
            .map_err(|e| self.failed(e))?;
        Ok(())
    }

    async fn keys(&self) -> Result<Vec<(ApiKey, String)>, AuthError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT name, role, location, created_at, expires_at, revoked, key_hash,
                        forward_user, rate_limit_per_minute, last_used_at
                 FROM api_keys ORDER BY name",
                &[],
            )
            .await
            .map_err(|e| self.failed(e))?;
        let mut keys = Vec::with_capacity(rows.len());
        for row in &rows {
            let get = |e: tokio_postgres::Error| self.failed(e);
            let name: String = row.try_get(0).map_err(get)?;
            let role: String = row.try_get(1).map_err(get)?;
            // A role this program does not know (written by a newer one): that
            // key is refused, the others still load.
            let Ok(role) = role.parse() else {
                tracing::warn!(key = %name, role = %role, "API key with an unknown role skipped");
                continue;
            };
            keys.push((
                ApiKey {
                    name,
                    role,
                    location: row.try_get(2).map_err(get)?,
                    created_at: row.try_get(3).map_err(get)?,
                    expires_at: row.try_get(4).map_err(get)?,
                    revoked: row.try_get(5).map_err(get)?,
                    forward_user: row.try_get(7).map_err(get)?,
                    rate_limit: row
                        .try_get::<_, Option<i64>>(8)
                        .map_err(get)?
                        .and_then(|n| u32::try_from(n).ok())
                        .filter(|n| *n > 0),
                    last_used_at: row.try_get(9).map_err(get)?,
                },
                row.try_get(6).map_err(get)?,
            ));
        }
        Ok(keys)
    }

    async fn revoke_key(&self, name: &str) -> Result<(), AuthError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.failed(e))?;
        let changed = tx
            .execute(
                "UPDATE api_keys SET revoked = TRUE WHERE name = $1",
                &[&name],
            )
            .await
            .map_err(|e| self.failed(e))?;
        if changed == 0 {
            return Err(AuthError::UnknownApiKey(name.to_owned()));
        }
        tx.execute(super::sessions::BUMP_VERSION, &[])
            .await
            .map_err(|e| self.failed(e))?;
        tx.commit().await.map_err(|e| self.failed(e))
    }

    async fn record_uses(&self, uses: &[(String, i64)]) -> Result<(), AuthError> {
        if uses.is_empty() {
            return Ok(());
        }
        let (names, times): (Vec<&str>, Vec<i64>) =
            uses.iter().map(|(name, at)| (name.as_str(), *at)).unzip();
        // One statement for the whole batch; no version bump, so no gateway
        // reloads its keys for it.
        let client = self.client().await?;
        client
            .execute(
                "UPDATE api_keys AS k
                 SET last_used_at = GREATEST(COALESCE(k.last_used_at, u.at), u.at)
                 FROM UNNEST($1::text[], $2::bigint[]) AS u(name, at)
                 WHERE k.name = u.name",
                &[&names, &times],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(())
    }
}
