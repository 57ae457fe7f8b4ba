//! Where a secret comes from. Configuration names a source (`env::NAME` or
//! `path::FILE`), never the secret itself, so config files can be committed.

use std::fmt;
use std::path::PathBuf;

use secrecy::SecretString;

use crate::env::Environment;

/// A reference to a secret, as written in configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretRef {
    /// `env::NAME`: the variable `NAME` of the [`Environment`].
    Env(String),
    /// `path::FILE`: the first line of a file.
    Path(PathBuf),
}

/// A secret reference that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretRefError {
    /// Not of the form `env::NAME` or `path::FILE`.
    #[error("expected `env::NAME` or `path::FILE`, not an inline secret")]
    Malformed,
    /// The file holds a secret but others may read it.
    #[error("secret file {path} has mode {mode:o}; run `chmod 600 {path}`")]
    Shared {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The file could not be read.
    #[error("cannot read secret file {path}: {reason}")]
    Unreadable {
        /// The file.
        path: String,
        /// The I/O error.
        reason: String,
    },
}

impl SecretRef {
    /// Parses `env::NAME` or `path::FILE`.
    pub fn parse(text: &str) -> Result<Self, SecretRefError> {
        if let Some(name) = text.strip_prefix("env::") {
            let valid =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            return valid
                .then(|| SecretRef::Env(name.to_owned()))
                .ok_or(SecretRefError::Malformed);
        }
        match text.strip_prefix("path::") {
            Some(path) if !path.is_empty() => Ok(SecretRef::Path(PathBuf::from(path))),
            _ => Err(SecretRefError::Malformed),
        }
    }

    /// The secret, or `None` when the variable is unset or empty.
    pub fn resolve(&self, env: &Environment) -> Result<Option<SecretString>, SecretRefError> {
        let value = match self {
            SecretRef::Env(name) => env.get(name).map(str::to_owned),
            SecretRef::Path(path) => {
                refuse_shared(path)?;
                let text =
                    std::fs::read_to_string(path).map_err(|e| SecretRefError::Unreadable {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })?;
                text.lines().next().map(str::to_owned)
            }
        };
        Ok(value
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .map(SecretString::from))
    }
}

fn refuse_shared(path: &std::path::Path) -> Result<(), SecretRefError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| SecretRefError::Unreadable {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(SecretRefError::Shared {
                path: path.display().to_string(),
                mode: mode & 0o777,
            });
        }
    }
    Ok(())
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(name) => write!(f, "env::{name}"),
            SecretRef::Path(path) => write!(f, "path::{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn parses_both_forms_and_refuses_inline_secrets() {
        assert_eq!(
            SecretRef::parse("env::API_KEY_X"),
            Ok(SecretRef::Env("API_KEY_X".into()))
        );
        assert_eq!(
            SecretRef::parse("path::/run/keys/x"),
            Ok(SecretRef::Path("/run/keys/x".into()))
        );
        for bad in ["sk-12345", "env::", "env::A B", "path::", ""] {
            assert_eq!(
                SecretRef::parse(bad),
                Err(SecretRefError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn resolves_from_environment_and_file() -> Result<(), Box<dyn std::error::Error>> {
        let env = Environment::from_pairs([("K", " abc "), ("EMPTY", "")]);
        let key = SecretRef::Env("K".into()).resolve(&env)?;
        assert_eq!(key.as_ref().map(|k| k.expose_secret()), Some("abc"));
        assert!(SecretRef::Env("EMPTY".into()).resolve(&env)?.is_none());
        assert!(SecretRef::Env("UNSET".into()).resolve(&env)?.is_none());

        let dir = tempfile::tempdir()?;
        let file = dir.path().join("key");
        std::fs::write(&file, "from-file\nsecond line\n")?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))?;
            let refused = SecretRef::Path(file.clone()).resolve(&env);
            assert!(
                matches!(refused, Err(SecretRefError::Shared { mode: 0o644, .. })),
                "{refused:?}"
            );
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
        }
        let key = SecretRef::Path(file).resolve(&env)?;
        assert_eq!(key.as_ref().map(|k| k.expose_secret()), Some("from-file"));
        assert!(
            SecretRef::Path(dir.path().join("absent"))
                .resolve(&env)
                .is_err()
        );
        Ok(())
    }
}
