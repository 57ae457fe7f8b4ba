//! What the `si-cli` integration tests share: running the real executable.

#![allow(dead_code)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs `si-cli ARGS` in `dir`, with nothing on standard input.
pub fn si_cli(dir: &Path, args: &[&str]) -> Output {
    si_cli_with_stdin(dir, args, None)
}

/// Runs `si-cli ARGS` in `dir`, writing `stdin` to its standard input.
pub fn si_cli_with_stdin(dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_si-cli"))
        .current_dir(dir)
        .env_remove("SI_DATA_DIR")
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

/// `N` different TCP ports free on 127.0.0.1 now: all are held until every one
/// is chosen, so that the kernel cannot hand out one twice.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
}
