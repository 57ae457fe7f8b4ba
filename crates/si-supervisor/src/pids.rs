//! The processes a supervisor started, kept in `DATA_DIR/supervisor.pids`, so that
//! a later `si-cli up` or `si-cli stop` can end those left running by a supervisor
//! that died (SIGKILL, out of memory) before they hold ports and GPU memory for
//! good. A pid counts only while its process's start time is still the recorded
//! one, so a pid the kernel has since given to another process is never signalled.

use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The file's name in the data directory.
pub const FILE: &str = "supervisor.pids";

/// One started process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The backend's name, or `gateway`.
    pub name: String,
    /// Its process id.
    pub pid: u32,
    /// Its start time, in clock ticks after boot (`/proc/PID/stat`, field 22).
    pub start: u64,
}

/// Where the file is for this data directory.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

/// The start time of a live (not zombie) process.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, field 2, is in parentheses and may hold anything.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // Field 22 is the 20th after the state (field 3).
    fields.nth(18)?.parse().ok()
}

/// Replaces the file with `entries` (mode 0600).
pub fn save(file: &Path, entries: &[Entry]) -> io::Result<()> {
    let text = serde_json::to_string(entries).map_err(io::Error::other)?;
    let mut temporary = file.to_owned().into_os_string();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    {
        use std::io::Write;
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)?;
        out.write_all(text.as_bytes())?;
    }
    std::fs::rename(&temporary, file)
}

/// Ends every recorded process that still runs (SIGTERM, then SIGKILL after
/// `grace`), removes the file, and returns the names of those it ended. Call it
/// only when no supervisor answers on the control socket.
pub async fn reap(file: &Path, grace: Duration) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(file) else {
        return Vec::new();
    };
    let entries: Vec<Entry> = serde_json::from_str(&text).unwrap_or_default();
    let alive = |e: &Entry| start_time(e.pid) == Some(e.start);
    let running: Vec<Entry> = entries.into_iter().filter(alive).collect();
    for entry in &running {
        signal(entry.pid, rustix::process::Signal::TERM);
    }
    let deadline = Instant::now() + grace;
    while running.iter().any(alive) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for entry in running.iter().filter(|e| alive(e)) {
        signal(entry.pid, rustix::process::Signal::KILL);
    }
    // Gone, with their ports and GPU memory, before a new start looks for them.
    let deadline = Instant::now() + Duration::from_secs(5);
    while running.iter().any(alive) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = std::fs::remove_file(file);
    running.into_iter().map(|e| e.name).collect()
}

fn signal(pid: u32, signal: rustix::process::Signal) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_process_has_a_start_time_and_a_reused_pid_does_not_match() {
        let own = std::process::id();
        let start = start_time(own).unwrap();
        assert!(start > 0);
        assert_eq!(start_time(own), Some(start));
        assert_eq!(start_time(u32::MAX), None);
    }

    #[tokio::test]
    async fn reaping_ends_recorded_processes_and_spares_mismatched_ones() {
        let dir = tempfile::tempdir().unwrap();
        let file = path(dir.path());
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let start = start_time(pid).unwrap();
        let own = std::process::id();
        let entries = [
            Entry {
                name: "tiny-a".into(),
                pid,
                start,
            },
            // This test's own pid with another start time: a reused pid.
            Entry {
                name: "someone-else".into(),
                pid: own,
                start: start_time(own).unwrap() + 1,
            },
        ];
        save(&file, &entries).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&file).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let reaped = reap(&file, Duration::from_secs(5)).await;
        assert_eq!(reaped, ["tiny-a"]);
        let status = child.wait().unwrap();
        assert!(!status.success());
        assert!(!file.exists());
        assert!(reap(&file, Duration::from_secs(1)).await.is_empty());
    }
}
