//! `si-cli users add` and `si-cli users list`.

use std::io::{BufRead, Write};
use std::path::Path;

use secrecy::SecretString;
use si_auth::secret::user_db_path;
use si_auth::{NewUser, UserStore};
use si_core::Role;

use crate::CliError;

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

/// Adds a user to the database in `data_dir`.
pub fn add(
    data_dir: &Path,
    username: &str,
    role: Role,
    location: &str,
    password: &SecretString,
) -> Result<(), CliError> {
    let store = UserStore::open(&user_db_path(data_dir))?;
    store.add(&NewUser {
        username,
        password,
        role,
        location,
    })?;
    Ok(())
}

/// Disables (or re-enables) a user in the database in `data_dir`.
pub fn set_disabled(data_dir: &Path, username: &str, disabled: bool) -> Result<(), CliError> {
    Ok(UserStore::open(&user_db_path(data_dir))?.set_disabled(username, disabled)?)
}

/// Replaces a user's password in the database in `data_dir`.
pub fn set_password(
    data_dir: &Path,
    username: &str,
    password: &SecretString,
) -> Result<(), CliError> {
    Ok(UserStore::open(&user_db_path(data_dir))?.set_password(username, password)?)
}

/// Writes a table of the users in `data_dir` to `out`.
pub fn list(data_dir: &Path, out: &mut impl Write) -> Result<(), CliError> {
    let store = UserStore::open(&user_db_path(data_dir))?;
    let users = store.list()?;
    let io = |e: std::io::Error| CliError::Message(format!("cannot write output: {e}"));
    writeln!(
        out,
        "{:<24} {:<10} {:<16} STATUS",
        "USERNAME", "ROLE", "LOCATION"
    )
    .map_err(io)?;
    for user in users {
        let status = if user.disabled { "disabled" } else { "active" };
        writeln!(
            out,
            "{:<24} {:<10} {:<16} {status}",
            user.username, user.role, user.location
        )
        .map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn add_then_list() {
        let dir = tempfile::tempdir().unwrap();
        let password = read_password(&mut "correct horse battery\n".as_bytes()).unwrap();
        assert_eq!(password.expose_secret(), "correct horse battery");
        add(
            dir.path(),
            "doctor1",
            Role::Clinician,
            "hospital-01",
            &password,
        )
        .unwrap();
        assert!(
            add(
                dir.path(),
                "doctor1",
                Role::Clinician,
                "hospital-01",
                &password
            )
            .is_err()
        );
        let mut out = Vec::new();
        list(dir.path(), &mut out).unwrap();
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
