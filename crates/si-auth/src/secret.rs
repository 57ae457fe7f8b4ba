//! Random key material and the generated JWT secret file.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use rand::RngCore;
use rand::rngs::OsRng;
use secrecy::{ExposeSecret, SecretString};
use si_core::config::checked_jwt_secret;

use crate::AuthError;

/// File name of the generated secret inside the data directory.
pub const JWT_SECRET_FILE: &str = "jwt_secret";

/// `bytes` bytes from the operating system's CSPRNG, hex-encoded.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    OsRng.fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads `<data_dir>/jwt_secret`, creating it (64 random bytes, hex, mode 0600) when
/// absent, so that a first start needs no setup and restarts keep tokens valid.
pub fn load_or_create_jwt_secret(data_dir: &Path) -> Result<SecretString, AuthError> {
    let path = data_dir.join(JWT_SECRET_FILE);
    let fail = |message: String| AuthError::SecretFile {
        path: path.display().to_string(),
        message,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let secret = checked_jwt_secret(&text).map_err(|e| fail(e.problem))?;
            Ok(secret)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            create_private_dir(data_dir).map_err(|e| fail(e.to_string()))?;
            let secret = SecretString::from(random_hex(64));
            write_private(&path, secret.expose_secret()).map_err(|e| fail(e.to_string()))?;
            tracing::info!(path = %path.display(), "generated a new JWT secret");
            Ok(secret)
        }
        Err(e) => Err(fail(e.to_string())),
    }
}

/// Creates `dir` and any missing parents, the new ones accessible by the owner only.
/// An existing directory is left as it is: its owner chose its permissions.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Creates `path` (which must not exist) readable and writable by its owner only.
pub fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// Where the user database lives inside the data directory.
pub fn user_db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("users.db")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_hex_has_the_asked_length_and_differs() {
        let a = random_hex(32);
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, random_hex(32));
    }

    #[test]
    fn secret_is_generated_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let first = load_or_create_jwt_secret(&data).unwrap();
        let second = load_or_create_jwt_secret(&data).unwrap();
        assert_eq!(first.expose_secret(), second.expose_secret());
        assert!(first.expose_secret().len() >= 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(data.join(JWT_SECRET_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
            let mode = std::fs::metadata(&data).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "a new data directory is private");
        }
    }

    #[test]
    fn a_short_secret_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(JWT_SECRET_FILE), "short\n").unwrap();
        let err = load_or_create_jwt_secret(dir.path()).unwrap_err();
        assert!(err.to_string().contains("at least 32 bytes"), "{err}");
        assert!(!err.to_string().contains("short\n"));
    }
}
