//! `si-cli apikeys`: create (the key is printed once), list (never the key) and
//! revoke keys for applications, through the stores the configuration names.

use std::io::Write;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use si_auth::api_keys::{self, ApiKey};
use si_auth::store::ApiKeyStore;
use si_core::{Config, Role};
use si_store::AccountStores;

use crate::CliError;
use crate::commands::table;

/// The key store `config` names.
async fn store(config: &Config) -> Result<std::sync::Arc<dyn ApiKeyStore>, CliError> {
    let stores = AccountStores::open(config)
        .await
        .map_err(|e| CliError::Message(e.to_string()))?;
    Ok(stores.api_keys)
}

/// What a new key may do.
#[derive(Clone, Copy, Debug)]
pub struct Made<'a> {
    /// The role it acts with.
    pub role: Role,
    /// The location it acts at.
    pub location: &'a str,
    /// How long it works, if not until revoked.
    pub expires: Option<Duration>,
    /// It may name the front end's user it acts for.
    pub forward_user: bool,
    /// Its own quota, requests per minute, if any.
    pub rate_limit: Option<u32>,
}

/// Makes a key named `name` that may do what `made` says; returns the key,
/// which exists nowhere else.
pub async fn create(config: &Config, name: &str, made: Made<'_>) -> Result<SecretString, CliError> {
    let Made {
        role,
        location,
        expires,
        forward_user,
        rate_limit,
    } = made;
    api_keys::check_name(name)?;
    if rate_limit == Some(0) {
        return Err(CliError::Message(
            "--rate-limit is requests per minute, at least 1; leave it out for no limit of the \
             key's own"
                .into(),
        ));
    }
    api_keys::check_location(location)?;
    let now = si_auth::users::unix_now();
    let expires_at = expires
        .map(|after| {
            i64::try_from(after.as_secs())
                .ok()
                .and_then(|secs| now.checked_add(secs))
                .ok_or_else(|| CliError::Message("--expires is too far away".into()))
        })
        .transpose()?;
    let (key, hash) = api_keys::generate();
    let record = ApiKey {
        name: name.to_owned(),
        role,
        location: location.to_owned(),
        created_at: now,
        expires_at,
        revoked: false,
        forward_user,
        rate_limit,
        last_used_at: None,
    };
    store(config).await?.insert_key(&record, &hash).await?;
    Ok(key)
}

/// Revokes the key named `name`: refused on every gateway within a second.
pub async fn revoke(config: &Config, name: &str) -> Result<(), CliError> {
    Ok(store(config).await?.revoke_key(name).await?)
}

/// Lists every key: name, role, location, when made, when last used (to the
/// minute, as gateways record it), when it expires, its rate limit, whether it
/// forwards users and whether it works; never the key, never its hash.
pub async fn list(config: &Config, out: &mut impl Write) -> Result<(), CliError> {
    let keys = store(config).await?.keys().await?;
    let now = si_auth::users::unix_now();
    let rows: Vec<[String; 9]> = keys
        .iter()
        .map(|(key, _)| {
            let status = if key.revoked {
                "revoked"
            } else if key.expires_at.is_some_and(|at| at <= now) {
                "expired"
            } else {
                "active"
            };
            [
                key.name.clone(),
                key.role.as_str().to_owned(),
                key.location.clone(),
                date(Some(key.created_at)),
                key.last_used_at
                    .map_or_else(|| "never".to_owned(), |at| date(Some(at))),
                date(key.expires_at),
                key.rate_limit
                    .map_or_else(|| "none".to_owned(), |n| format!("{n}/min")),
                if key.forward_user { "yes" } else { "no" }.to_owned(),
                status.to_owned(),
            ]
        })
        .collect();
    let rows = rows.iter().map(|row| row.each_ref().map(String::as_str));
    let table = table::plain(
        &[
            "NAME",
            "ROLE",
            "LOCATION",
            "CREATED",
            "LAST USED",
            "EXPIRES",
            "RATE LIMIT",
            "FORWARDS USER",
            "STATUS",
        ],
        rows,
        &[],
    );
    table::write(out, &table, "")
        .map_err(|e| CliError::Message(format!("cannot write output: {e}")))
}

/// A Unix time as a UTC date and time to the minute; `never` for none.
fn date(at: Option<i64>) -> String {
    at.and_then(|secs| u64::try_from(secs).ok())
        .map(|secs| std::time::UNIX_EPOCH + Duration::from_secs(secs))
        .map_or_else(
            || "never".to_owned(),
            |time| {
                let text = humantime::format_rfc3339_seconds(time).to_string();
                text.get(..16).unwrap_or(&text).replace('T', " ")
            },
        )
}

/// What `create` prints: the key, once, and how to use it.
pub fn announce(name: &str, key: &SecretString) -> String {
    format!(
        "{}\nAPI key `{name}` created. This is the only time it is shown: store it now \
         (e.g. in the application's secret store). Send it as `Authorization: Bearer <key>`.",
        key.expose_secret()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn made(role: Role, location: &str) -> Made<'_> {
        Made {
            role,
            location,
            expires: None,
            forward_user: false,
            rate_limit: None,
        }
    }

    #[tokio::test]
    async fn create_list_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::builtin().unwrap();
        config.gateway.data_dir = dir.path().to_owned();
        let key = create(&config, "open-webui", made(Role::Clinician, "hospital-01"))
            .await
            .unwrap();
        assert!(api_keys::is_api_key(key.expose_secret()));
        assert!(
            create(&config, "open-webui", made(Role::Billing, "h"))
                .await
                .is_err(),
            "a name is used once"
        );
        assert!(
            create(&config, "bad name", made(Role::Billing, "h"))
                .await
                .is_err()
        );
        let mut out = Vec::new();
        list(&config, &mut out).await.unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.contains("open-webui") && out.contains("active"),
            "{out}"
        );
        assert!(!out.contains(key.expose_secret()));
        revoke(&config, "open-webui").await.unwrap();
        assert!(revoke(&config, "nobody").await.is_err());
        let mut out = Vec::new();
        list(&config, &mut out).await.unwrap();
        assert!(String::from_utf8(out).unwrap().contains("revoked"));
    }

    #[tokio::test]
    async fn the_list_shows_the_limit_and_when_each_key_was_last_used() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::builtin().unwrap();
        config.gateway.data_dir = dir.path().to_owned();
        let limited = Made {
            rate_limit: Some(120),
            ..made(Role::Clinician, "hospital-01")
        };
        create(&config, "ehr-batch", limited).await.unwrap();
        create(&config, "idle", made(Role::Billing, "hospital-01"))
            .await
            .unwrap();
        let zero = Made {
            rate_limit: Some(0),
            ..made(Role::Billing, "hospital-01")
        };
        assert!(create(&config, "zero", zero).await.is_err());
        // As a gateway records it.
        store(&config)
            .await
            .unwrap()
            .record_uses(&[("ehr-batch".to_owned(), 1_764_000_000)])
            .await
            .unwrap();
        let mut out = Vec::new();
        list(&config, &mut out).await.unwrap();
        let out = String::from_utf8(out).unwrap();
        let line = |name: &str| {
            out.lines()
                .find(|line| line.starts_with(name))
                .unwrap()
                .split_whitespace()
                .collect::<Vec<_>>()
        };
        let header: Vec<_> = out
            .lines()
            .next()
            .unwrap()
            .split("  ")
            .filter(|c| !c.is_empty())
            .map(str::trim)
            .collect();
        assert_eq!(
            header,
            [
                "NAME",
                "ROLE",
                "LOCATION",
                "CREATED",
                "LAST USED",
                "EXPIRES",
                "RATE LIMIT",
                "FORWARDS USER",
                "STATUS"
            ],
            "{out}"
        );
        // NAME ROLE LOCATION CREATED(2) LAST-USED(2) EXPIRES RATE FORWARDS STATUS
        let ehr = line("ehr-batch");
        assert_eq!(
            &ehr[5..],
            ["2025-11-24", "16:00", "never", "120/min", "no", "active"],
            "{out}"
        );
        let idle = line("idle");
        assert_eq!(
            &idle[5..],
            ["never", "never", "none", "no", "active"],
            "{out}"
        );
        assert!(!out.lines().any(|line| line.starts_with("zero")), "{out}");
    }

    #[test]
    fn dates_read_as_dates() {
        assert_eq!(date(Some(0)), "1970-01-01 00:00");
        assert_eq!(date(None), "never");
    }
}
