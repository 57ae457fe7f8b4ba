//! The variables a configuration may read, as a plain map handed in by the caller.
//!
//! Binaries build an [`Environment`] from the process environment and the optional
//! `.api_keys.env` file; tests build one from literal pairs. Nothing in the libraries
//! reads `std::env` directly.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use crate::ConfigError;

/// Name/value pairs. Values may be secrets, so `Debug` prints names only.
#[derive(Clone, Default)]
pub struct Environment {
    vars: BTreeMap<String, String>,
}

impl Environment {
    /// An environment holding exactly these pairs.
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Environment {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// Adds the `NAME=value` lines of `path` for names not already set (or set empty),
    /// so the real environment wins over the file. A missing file is not an error: it
    /// is optional.
    pub fn with_file_defaults(mut self, path: &Path) -> Result<Self, ConfigError> {
        if !path.exists() {
            return Ok(self);
        }
        refuse_shared(path)?;
        let entries = dotenvy::from_path_iter(path).map_err(|e| env_file_error(path, &e))?;
        for entry in entries {
            let (name, value) = entry.map_err(|e| env_file_error(path, &e))?;
            let current = self.vars.entry(name).or_default();
            if current.is_empty() {
                *current = value;
            }
        }
        Ok(self)
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// Sets `name`, replacing any value.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.vars.insert(name.into(), value.into());
    }
}

/// A file of secrets that others can read is refused, with the fix.
fn refuse_shared(path: &Path) -> Result<(), ConfigError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map(|m| m.permissions().mode())
            .map_err(|e| ConfigError {
                source_name: path.display().to_string(),
                key: "(file)".into(),
                problem: format!("cannot be read: {e}"),
            })?;
        if mode & 0o077 != 0 {
            return Err(ConfigError {
                source_name: path.display().to_string(),
                key: "(file)".into(),
                problem: format!(
                    "holds API keys but has mode {:o}; run `chmod 600 {}`",
                    mode & 0o777,
                    path.display()
                ),
            });
        }
    }
    Ok(())
}

fn env_file_error(path: &Path, error: &dotenvy::Error) -> ConfigError {
    // dotenvy's parse errors quote the offending line, which may hold a key: keep
    // only the kind of failure.
    let message = match error {
        dotenvy::Error::LineParse(_, index) => {
            format!("cannot parse the line at byte {index}; expected NAME=value")
        }
        dotenvy::Error::Io(io) => io.to_string(),
        _ => "cannot be read".to_owned(),
    };
    ConfigError {
        source_name: path.display().to_string(),
        key: "(file)".into(),
        problem: message,
    }
}

impl fmt::Debug for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.vars.keys()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_owner_only(path: &Path, text: &str) -> std::io::Result<()> {
        std::fs::write(path, text)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(())
    }

    #[test]
    #[cfg(unix)]
    fn a_key_file_others_can_read_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join(".api_keys.env");
        std::fs::write(&file, "A=secret\n")?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))?;
        let err = match Environment::default().with_file_defaults(&file) {
            Err(e) => e,
            Ok(_) => return Err("a world-readable key file was accepted".into()),
        };
        assert!(
            err.problem.contains("mode 644") && err.problem.contains("chmod 600"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn process_values_win_over_the_file() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join(".api_keys.env");
        write_owner_only(&file, "A=from-file\nB=from-file\n# comment\n")?;
        let env = Environment::from_pairs([("A", "from-process"), ("B", "")])
            .with_file_defaults(&file)?;
        assert_eq!(env.get("A"), Some("from-process"));
        assert_eq!(
            env.get("B"),
            Some("from-file"),
            "an empty variable does not hide the file"
        );
        Ok(())
    }

    #[test]
    fn a_missing_file_is_fine() -> Result<(), Box<dyn std::error::Error>> {
        let env = Environment::default().with_file_defaults(Path::new("/nonexistent/.env"))?;
        assert_eq!(env.get("A"), None);
        Ok(())
    }

    #[test]
    fn debug_shows_names_not_values() {
        let env = Environment::from_pairs([("API_KEY_X", "hunter2hunter2")]);
        let shown = format!("{env:?}");
        assert!(shown.contains("API_KEY_X"));
        assert!(!shown.contains("hunter2"));
    }

    #[test]
    fn a_bad_line_does_not_echo_the_value() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join(".env");
        write_owner_only(&file, "GOOD=1\nsecretvalue-without-equals' x\n")?;
        let err = match Environment::default().with_file_defaults(&file) {
            Err(e) => e,
            Ok(_) => return Err("a broken line was accepted".into()),
        };
        assert!(!err.to_string().contains("secretvalue"), "{err}");
        Ok(())
    }
}
