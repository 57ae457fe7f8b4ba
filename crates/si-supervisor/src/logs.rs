//! Per-process log files with size-based rotation, as pm2-logrotate keeps them:
//! `NAME.log` is the current file, `NAME.log.1` the newest rotated one, up to
//! `NAME.log.K`; the oldest is dropped.
//!
//! Written here rather than taken from `file-rotate`, whose writer panics when its
//! directory cannot be created and brings a date library and gzip along for what
//! is a rename chain.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Log files are readable by the service's group, never by everyone.
const MODE: u32 = 0o640;

/// An append-only log file that rotates once it would grow past its limit.
#[derive(Debug)]
pub struct RotatingLog {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    keep: u32,
}

impl RotatingLog {
    /// Opens (or creates) `path` for appending.
    pub fn open(path: &Path, max_bytes: u64, keep: u32) -> io::Result<RotatingLog> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingLog {
            path: path.to_owned(),
            file,
            size,
            max_bytes,
            keep,
        })
    }

    /// The current file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `bytes`, rotating first if they would take a non-empty file past
    /// the limit (a single write larger than the limit still goes whole into a
    /// fresh file).
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        if self.size > 0 && self.size.saturating_add(len) > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(bytes)?;
        self.size = self.size.saturating_add(len);
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let numbered = |n: u32| {
            let mut name = self.path.clone().into_os_string();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        if self.keep == 0 {
            self.file.set_len(0)?;
        } else {
            for n in (1..self.keep).rev() {
                match std::fs::rename(numbered(n), numbered(n + 1)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            std::fs::rename(&self.path, numbered(1))?;
            self.file = open_append(&self.path)?;
        }
        self.size = 0;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(MODE)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_default()
    }

    #[test]
    fn rotates_at_the_limit_and_keeps_the_newest_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("llama-8080-out.log");
        let mut log = RotatingLog::open(&path, 10, 2).unwrap();
        for line in ["aaaa\n", "bbbb\n", "cccc\n", "dddd\n", "eeee\n", "ffff\n"] {
            log.write(line.as_bytes()).unwrap();
        }
        assert_eq!(read(&path), "eeee\nffff\n");
        assert_eq!(
            read(&dir.path().join("llama-8080-out.log.1")),
            "cccc\ndddd\n"
        );
        assert_eq!(
            read(&dir.path().join("llama-8080-out.log.2")),
            "aaaa\nbbbb\n"
        );
        assert!(!dir.path().join("llama-8080-out.log.3").exists());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o640);
    }

    #[test]
    fn reopening_counts_what_is_already_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway-out.log");
        std::fs::write(&path, "12345678\n").unwrap();
        let mut log = RotatingLog::open(&path, 10, 1).unwrap();
        log.write(b"next\n").unwrap();
        assert_eq!(read(&path), "next\n");
        assert_eq!(read(&dir.path().join("gateway-out.log.1")), "12345678\n");
    }

    #[test]
    fn keeping_no_files_truncates_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let mut log = RotatingLog::open(&path, 4, 0).unwrap();
        log.write(b"abc\n").unwrap();
        log.write(b"de\n").unwrap();
        assert_eq!(read(&path), "de\n");
        assert!(!dir.path().join("x.log.1").exists());
    }
}
