//! `si-cli users`: add, list, disable, enable, new password; through the stores
//! the configuration names.

use std::io::{BufRead, Write};

use secrecy::SecretString;
use si_auth::{Accounts, NewUser};
use si_core::{Config, Role};
use si_store::AccountStores;

use crate::CliError;
use crate::commands::table;

/// Reads one password line from `input` (the trailing newline is not part of it).
pub fn read_password(input: &mut impl BufRead) -> Result<SecretString, CliError> {
    let mut line = String::new();
    input.read_line(&mut line).map_err(|e| {
        CliError::Message(format!("cannot read the password from standard input: {e}"))
    })?;
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        return Err(CliError::Message(
            "no password on standard input; e.g. `printf '%s\\n' \"$PW\" | si-cli users add ...`"
                .into(),
        ));
    }
    Ok(SecretString::from(password))
}

/// The accounts `config` names.
async fn accounts(config: &Config) -> Result<Accounts, CliError> {
    let stores = AccountStores::open(config)
        .await
        .map_err(|e| CliError::Message(e.to_string()))?;
    Ok(stores.accounts()?)
}

/// Adds a user.
pub async fn add(
    config: &Config,
    username: &str,
    role: Role,
    location: &str,
    password: &SecretString,
) -> Result<(), CliError> {
    let new = NewUser {
        username,
        password,
        role,
        location,
    };
    accounts(config).await?.add(&new).await?;
    Ok(())
}

/// Disables (or re-enables) a user.
pub async fn set_disabled(config: &Config, username: &str, disabled: bool) -> Result<(), CliError> {
    Ok(accounts(config)
        .await?
        .set_disabled(username, disabled)
        .await?)
}

/// Replaces a user's password.
pub async fn set_password(
    config: &Config,
    username: &str,
    password: &SecretString,
) -> Result<(), CliError> {
    Ok(accounts(config)
        .await?
        .set_password(username, password)
        .await?)
}

/// Writes a table of the users to `out`.
pub async fn list(config: &Config, out: &mut impl Write) -> Result<(), CliError> {
    let users = accounts(config).await?.list().await?;
    let rows = users.iter().map(|user| {
        let status = if user.disabled { "disabled" } else { "active" };
        [
            user.username.as_str(),
            user.role.as_str(),
            &user.location,
            status,
        ]
    });
    let table = table::plain(&["USERNAME", "ROLE", "LOCATION", "STATUS"], rows, &[]);
    table::write(out, &table, "")
        .map_err(|e| CliError::Message(format!("cannot write output: {e}")))
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[tokio::test]
    async fn add_then_list() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::builtin().unwrap();
        config.gateway.data_dir = dir.path().to_owned();
        let password = read_password(&mut "correct horse battery\n".as_bytes()).unwrap();
        assert_eq!(password.expose_secret(), "correct horse battery");
        add(
            &config,
            "doctor1",
            Role::Clinician,
            "hospital-01",
            &password,
        )
        .await
        .unwrap();
        assert!(
            add(
                &config,
                "doctor1",
                Role::Clinician,
                "hospital-01",
                &password
            )
            .await
            .is_err()
        );
        let mut out = Vec::new();
        list(&config, &mut out).await.unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.lines().nth(1).unwrap().starts_with("doctor1"), "{out}");
        assert!(out.contains("clinician") && out.contains("hospital-01") && out.contains("active"));
        assert!(!out.contains("correct horse"));
    }

    #[test]
    fn an_empty_password_is_refused() {
        assert!(read_password(&mut "\n".as_bytes()).is_err());
        assert!(read_password(&mut "".as_bytes()).is_err());
    }
}
