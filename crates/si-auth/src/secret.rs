//! Random key material and the generated JWT secret file.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use rand::RngCore;
use rand::rngs::OsRng;
use secrecy::{ExposeSecret, SecretString};
use si_core::config::checked_jwt_secret;

use crate::AuthError;
use crate::token::{JwtSecrets, key_id};

/// File name of the generated secret inside the data directory.
pub const JWT_SECRET_FILE: &str = "jwt_secret";

/// `bytes` bytes from the operating system's CSPRNG, hex-encoded.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    OsRng.fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// File name of the secret before the last rotation, still accepted for verification.
pub const JWT_PREVIOUS_SECRET_FILE: &str = "jwt_secret.previous";

/// Reads `<data_dir>/jwt_secret` (creating it, 64 random bytes in hex, mode 0600,
/// when absent, so that a first start needs no setup) and `jwt_secret.previous` if
/// a rotation left one. A secret file others can read is refused.
pub fn load_or_create_jwt_secret(data_dir: &Path) -> Result<JwtSecrets, AuthError> {
    let path = data_dir.join(JWT_SECRET_FILE);
    let current = match read_secret_file(&path)? {
        Some(secret) => secret,
        None => {
            create_private_dir(data_dir).map_err(|e| secret_error(&path, e))?;
            let secret = SecretString::from(random_hex(64));
            write_private(&path, secret.expose_secret()).map_err(|e| secret_error(&path, e))?;
            tracing::info!(path = %path.display(), "generated a new JWT secret");
            secret
        }
    };
    let previous = read_secret_file(&data_dir.join(JWT_PREVIOUS_SECRET_FILE))?;
    Ok(JwtSecrets { current, previous })
}

/// Makes a new current secret; the current one becomes the previous one (replacing
/// any older). Tokens signed before stay valid until they expire, once the gateway
/// restarts with both. Returns the new secret's key id.
pub fn rotate_jwt_secret(data_dir: &Path) -> Result<String, AuthError> {
    let current = data_dir.join(JWT_SECRET_FILE);
    let previous = data_dir.join(JWT_PREVIOUS_SECRET_FILE);
    let next = data_dir.join("jwt_secret.next");
    // Check what we are about to keep is usable before moving anything.
    read_secret_file(&current)?;
    let _ = std::fs::remove_file(&next);
    let secret = SecretString::from(random_hex(64));
    create_private_dir(data_dir).map_err(|e| secret_error(&next, e))?;
    write_private(&next, secret.expose_secret()).map_err(|e| secret_error(&next, e))?;
    if current.exists() {
        std::fs::rename(&current, &previous).map_err(|e| secret_error(&previous, e))?;
    }
    std::fs::rename(&next, &current).map_err(|e| secret_error(&current, e))?;
    Ok(key_id(&secret))
}

/// A secret file's first line, checked; `None` when the file does not exist.
fn read_secret_file(path: &Path) -> Result<Option<SecretString>, AuthError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(secret_error(path, e)),
    };
    check_private(path)?;
    checked_jwt_secret(&text)
        .map(Some)
        .map_err(|e| secret_error(path, e.problem))
}

/// Refuses a secret file that anyone but its owner can read or write.
pub fn check_private(path: &Path) -> Result<(), AuthError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| secret_error(path, e))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(secret_error(
                path,
                format!(
                    "holds a secret but has mode {:o}; run `chmod 600 {}`",
                    mode & 0o777,
                    path.display()
                ),
            ));
        }
    }
    Ok(())
}

fn secret_error(path: &Path, message: impl std::fmt::Display) -> AuthError {
    AuthError::SecretFile {
        path: path.display().to_string(),
        message: message.to_string(),
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
        assert_eq!(
            first.current.expose_secret(),
            second.current.expose_secret()
        );
        assert!(first.current.expose_secret().len() >= 64);
        assert!(first.previous.is_none());
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
    fn rotation_keeps_the_old_secret_as_previous() {
        let dir = tempfile::tempdir().unwrap();
        let before = load_or_create_jwt_secret(dir.path()).unwrap();
        let kid = rotate_jwt_secret(dir.path()).unwrap();
        let after = load_or_create_jwt_secret(dir.path()).unwrap();
        assert_eq!(kid, key_id(&after.current));
        assert_ne!(
            after.current.expose_secret(),
            before.current.expose_secret()
        );
        let previous = after.previous.expect("previous kept");
        assert_eq!(previous.expose_secret(), before.current.expose_secret());
        assert!(check_private(&dir.path().join(JWT_PREVIOUS_SECRET_FILE)).is_ok());
    }

    #[test]
    #[cfg(unix)]
    fn a_secret_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        load_or_create_jwt_secret(dir.path()).unwrap();
        let file = dir.path().join(JWT_SECRET_FILE);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create_jwt_secret(dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("mode 644") && err.contains("chmod 600"),
            "{err}"
        );
    }

    #[test]
    fn a_short_secret_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_private(&dir.path().join(JWT_SECRET_FILE), "short").unwrap();
        let err = load_or_create_jwt_secret(dir.path()).unwrap_err();
        assert!(err.to_string().contains("at least 32 bytes"), "{err}");
        assert!(!err.to_string().contains("short\n"));
    }
}
