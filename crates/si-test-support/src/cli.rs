//! Running a real executable of the workspace, as a person would from a shell.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs `exe ARGS` in `dir` (without `SI_DATA_DIR`, so the data directory is
/// `dir`'s), writing `stdin` to its standard input.
pub fn run(exe: &str, dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    run_in(exe, dir, args, stdin, &[])
}

/// [`run`] with `env` added to its environment, and nothing on standard input.
pub fn run_with_env(exe: &str, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    run_in(exe, dir, args, None, env)
}

fn run_in(
    exe: &str,
    dir: &Path,
    args: &[&str],
    stdin: Option<&str>,
    env: &[(&str, &str)],
) -> Output {
    let mut child = Command::new(exe)
        .current_dir(dir)
        .env_remove("SI_DATA_DIR")
        .env_remove("SI_DATABASE_URL")
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        // A child that exits without reading all of it shows why in its output,
        // which the caller checks.
        if let Err(e) = input.write_all(text.as_bytes()) {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
        }
    }
    drop(input);
    child.wait_with_output().unwrap()
}
