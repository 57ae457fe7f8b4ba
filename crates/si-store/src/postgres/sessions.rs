//! Refresh tokens and revocations in PostgreSQL. A refresh token is spent under a
//! row lock, so two gateways given the same token at the same moment cannot both
//! spend it: the second sees it used and revokes the session as a replay.

use std::collections::HashSet;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use si_auth::store::{NewRefresh, RevocationStore, SessionStore, SpentRefresh};
use si_auth::users::unix_now;
use si_auth::{AuthError, RevokedSet};

use super::PostgresAccounts;

/// Tells every gateway, in the transaction that changes what is revoked, to reload:
/// a counter for those that poll, and a notification, delivered at commit, for
/// those that listen (its payload is when, by the database's clock, in ms).
pub(super) const BUMP_VERSION: &str = "
    WITH bumped AS (UPDATE revocation_version SET version = version + 1 RETURNING version)
    SELECT pg_notify('si_revocations', (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT::TEXT)
    FROM bumped";

/// Revokes every refresh token of `family`. The rows are locked first, in one
/// order, and updated by a second statement: under read committed, an update that
/// waited for a refresh in flight would not see the token that refresh adds, which
/// would then outlive the revocation.
pub(super) async fn revoke_family(
    tx: &impl GenericClient,
    family: &str,
) -> Result<(), tokio_postgres::Error> {
    revoke_where(tx, "family", family).await
}

/// [`revoke_family`] for every session of `username`.
pub(super) async fn revoke_sessions_of(
    tx: &impl GenericClient,
    username: &str,
) -> Result<(), tokio_postgres::Error> {
    revoke_where(tx, "username", username).await
}

async fn revoke_where(
    tx: &impl GenericClient,
    column: &'static str,
    value: &str,
) -> Result<(), tokio_postgres::Error> {
    tx.query(
        &format!("SELECT 1 FROM refresh_tokens WHERE {column} = $1 ORDER BY token_hash FOR UPDATE"),
        &[&value],
    )
    .await?;
    tx.execute(
        &format!("UPDATE refresh_tokens SET revoked = TRUE WHERE {column} = $1"),
        &[&value],
    )
    .await
    .map(drop)
}

async fn insert(
    client: &impl GenericClient,
    refresh: &NewRefresh,
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO refresh_tokens (token_hash, family, username, location, expires_at)
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &refresh.token_hash,
                &refresh.family,
                &refresh.username,
                &refresh.location,
                &refresh.expires_at,
            ],
        )
        .await
}

#[async_trait]
impl SessionStore for PostgresAccounts {
    async fn insert(&self, refresh: &NewRefresh) -> Result<(), AuthError> {
        let client = self.client().await?;
        insert(&client, refresh)
            .await
            .map(drop)
            .map_err(|e| self.failed(e))
    }

    async fn spend(
        &self,
        token_hash: &str,
        next_hash: &str,
        next_expires_at: i64,
    ) -> Result<SpentRefresh, AuthError> {
        let failed = |e: tokio_postgres::Error| self.failed(e);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(failed)?;
        let row = tx
            .query_opt(
                "SELECT family, username, location, expires_at, used, revoked
                 FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE",
                &[&token_hash],
            )
            .await
            .map_err(failed)?;
        let Some(row) = row else {
            return Err(AuthError::InvalidToken("unknown refresh token"));
        };
        let (family, username, location): (String, String, String) =
            (row.get(0), row.get(1), row.get(2));
        let (expires_at, used, revoked): (i64, bool, bool) = (row.get(3), row.get(4), row.get(5));
        if used && !revoked {
            revoke_family(&tx, &family).await.map_err(failed)?;
            tx.execute(BUMP_VERSION, &[]).await.map_err(failed)?;
            tx.commit().await.map_err(failed)?;
            return Err(AuthError::RefreshReused { username, family });
        }
        if revoked || used {
            return Err(AuthError::InvalidToken("refresh token revoked"));
        }
        if expires_at <= unix_now() {
            return Err(AuthError::ExpiredToken);
        }
        tx.execute(
            "UPDATE refresh_tokens SET used = TRUE WHERE token_hash = $1",
            &[&token_hash],
        )
        .await
        .map_err(failed)?;
        let next = NewRefresh {
            token_hash: next_hash.to_owned(),
            family: family.clone(),
            username: username.clone(),
            location: location.clone(),
            expires_at: next_expires_at,
        };
        insert(&tx, &next).await.map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        Ok(SpentRefresh {
            family,
            username,
            location,
        })
    }

    async fn end(&self, token_hash: &str) -> Result<String, AuthError> {
        let failed = |e: tokio_postgres::Error| self.failed(e);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(failed)?;
        let family: String = tx
            .query_opt(
                "SELECT family FROM refresh_tokens WHERE token_hash = $1",
                &[&token_hash],
            )
            .await
            .map_err(failed)?
            .map(|row| row.get(0))
            .ok_or(AuthError::InvalidToken("unknown refresh token"))?;
        revoke_family(&tx, &family).await.map_err(failed)?;
        tx.execute(BUMP_VERSION, &[]).await.map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        Ok(family)
    }
}

#[async_trait]
impl RevocationStore for PostgresAccounts {
    async fn revoke(
        &self,
        jti: &str,
        expires_at: u64,
        family: Option<&str>,
    ) -> Result<(), AuthError> {
        let failed = |e: tokio_postgres::Error| self.failed(e);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(failed)?;
        let expires_at = i64::try_from(expires_at).unwrap_or(i64::MAX);
        tx.execute(
            "INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2)
             ON CONFLICT DO NOTHING",
            &[&jti, &expires_at],
        )
        .await
        .map_err(failed)?;
        if let Some(family) = family {
            revoke_family(&tx, family).await.map_err(failed)?;
        }
        tx.execute(BUMP_VERSION, &[]).await.map_err(failed)?;
        tx.commit().await.map_err(failed)
    }

    async fn revoked(&self) -> Result<RevokedSet, AuthError> {
        let failed = |e: tokio_postgres::Error| self.failed(e);
        let client = self.client().await?;
        let now = unix_now();
        client
            .execute("DELETE FROM revoked_tokens WHERE expires_at <= $1", &[&now])
            .await
            .map_err(failed)?;
        client
            .execute("DELETE FROM refresh_tokens WHERE expires_at <= $1", &[&now])
            .await
            .map_err(failed)?;
        let strings = |sql: &'static str| {
            let client = &client;
            async move {
                let rows = client.query(sql, &[]).await.map_err(failed)?;
                Ok::<HashSet<String>, AuthError>(rows.iter().map(|r| r.get(0)).collect())
            }
        };
        Ok(RevokedSet {
            jtis: strings("SELECT jti FROM revoked_tokens").await?,
            families: strings("SELECT DISTINCT family FROM refresh_tokens WHERE revoked").await?,
            disabled_users: strings("SELECT username FROM users WHERE disabled").await?,
        })
    }

    /// The revocation counter, bumped by every change to what is revoked, by any
    /// gateway or `si-cli`.
    async fn version(&self) -> Result<i64, AuthError> {
        let client = self.client().await?;
        client
            .query_one("SELECT version FROM revocation_version", &[])
            .await
            .map(|row| row.get(0))
            .map_err(|e| self.failed(e))
    }

    /// Listens for the notification every change sends, on a connection of its
    /// own, reconnecting after a failure.
    fn watch(&self, changed: tokio::sync::mpsc::UnboundedSender<i64>) -> bool {
        tokio::spawn(super::watch::listen(
            self.reach().clone(),
            self.place().to_owned(),
            changed,
        ));
        true
    }
}
