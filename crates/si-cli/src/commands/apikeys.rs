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
}

/// Makes a key named `name` that may do what `made` says; returns the key,
/// which exists nowhere else.
pub async fn create(config: &Config, name: &str, made: Made<'_>) -> Result<SecretString, CliError> {
    let Made {
        role,
        location,
        expires,
        forward_user,
    } = made;
    api_keys::check_name(name)?;
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
    };
    store(config).await?.insert_key(&record, &hash).await?;
    Ok(key)
}

/// Revokes the key named `name`: refused on every gateway within a second.
pub async fn revoke(config: &Config, name: &str) -> Result<(), CliError> {
    Ok(store(config).await?.revoke_key(name).await?)
}

/// Lists every key: name, role, location, when made, when it expires, and
/// whether it works; never the key, never its hash.
pub async fn list(config: &Config, out: &mut impl Write) -> Result<(), CliError> {
    let keys = store(config).await?.keys().await?;
    let now = si_auth::users::unix_now();
    let rows: Vec<[String; 7]> = keys
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
                date(key.expires_at),
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
            "EXPIRES",
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

    #[test]
    fn dates_read_as_dates() {
        assert_eq!(date(Some(0)), "1970-01-01 00:00");
        assert_eq!(date(None), "never");
    }
}
