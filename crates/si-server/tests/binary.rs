//! The real `si-server` executable: embedded defaults, bad configuration, shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn si_server() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_si-server"));
    for var in [
        "JWT_SECRET",
        "JWT_ALGORITHM",
        "JWT_EXPIRY_HOURS",
        "ALLOW_INSECURE_DEV",
        "SI_DATA_DIR",
    ] {
        command.env_remove(var);
    }
    command
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

const KEY_8085: &str = "biomistral-key-from-the-dotenv-file-0123456789";

/// `/healthz` from the gateway on `port`, once it answers (30 s at most).
fn wait_for_healthz(port: u16) -> String {
    let started = Instant::now();
    loop {
        if let Some(response) = http_get(port, "/healthz") {
            return response;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no gateway answered on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn runs_with_embedded_defaults_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(
        dir.path().join(".api_keys.env"),
        format!("API_KEY_BIOMISTRAL_8085={KEY_8085}\n"),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        let file = dir.path().join(".api_keys.env");
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let log = std::fs::File::create(dir.path().join("gateway.log")).unwrap();
    let mut child = si_server()
        .current_dir(dir.path())
        .env_remove("API_KEY_BIOMISTRAL_8085")
        .env("RUST_LOG", "debug")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let response = wait_for_healthz(port);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // Anyone may ask: it says live and ready, and names no backend.
    assert!(
        response.contains(r#"{"status":"ok","ready":"#),
        "{response}"
    );
    assert!(!response.contains("http://"), "{response}");
    // First start made the data directory: a private secret and the user database.
    let secret = dir.path().join("data/jwt_secret");
    assert!(std::fs::read_to_string(&secret).unwrap().trim().len() >= 64);
    assert!(dir.path().join("data/users.db").exists());

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "gateway ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
    let log = std::fs::read_to_string(dir.path().join("gateway.log")).unwrap();
    assert!(log.contains("gateway listening"), "{log}");
    assert!(!log.contains(KEY_8085), "the API key reached the log");
    assert!(
        !log.contains(std::fs::read_to_string(&secret).unwrap().trim()),
        "the JWT secret reached the log"
    );
}

#[test]
fn a_config_file_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let config = si_core::config::BUILTIN_TOML
        .replace("127.0.0.1:8000", &format!("127.0.0.1:{port}"))
        .replace("\"Clinical\"", "\"Cardiology\"")
        .replace("127.0.0.1:9464", &format!("127.0.0.1:{metrics_port}"));
    std::fs::write(dir.path().join("site.toml"), config).unwrap();
    let mut child = si_server()
        .current_dir(dir.path())
        .args(["--config", "site.toml"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_healthz(port);
    // The backends view is on the metrics listener (loopback), not the public port.
    let view = http_get(metrics_port, "/backends").unwrap_or_default();
    let public = http_get(port, "/backends").unwrap_or_default();
    child.kill().unwrap();
    let _ = child.wait();
    assert!(
        view.contains("\"Cardiology\"") && !view.contains("\"Clinical\""),
        "{view}"
    );
    assert!(view.contains("http://127.0.0.1:8085"), "{view}");
    assert!(public.starts_with("HTTP/1.1 404"), "{public}");
}

fn run_failing(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let output = si_server()
        .current_dir(dir)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code().unwrap_or(-1), stderr)
}

#[test]
fn a_bad_config_file_is_one_line_naming_file_and_key_and_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("si.toml");
    std::fs::write(&file, "[gateway]\nlisten = 8000\n").unwrap();
    let (code, stderr) = run_failing(dir.path(), &["--config", file.to_str().unwrap()], &[]);
    assert_eq!(code, 64);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("si.toml") && stderr.contains("gateway.listen"),
        "{stderr}"
    );
    assert!(stderr.contains("line 2"), "{stderr}");

    let (code, stderr) = run_failing(dir.path(), &["--config", "/nonexistent/si.toml"], &[]);
    assert_eq!(code, 64);
    assert!(stderr.contains("/nonexistent/si.toml"), "{stderr}");
}

#[test]
fn a_short_jwt_secret_is_refused_at_start_without_echoing_it() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = run_failing(dir.path(), &[], &[("JWT_SECRET", "abc123-short")]);
    assert_eq!(code, 64);
    assert!(
        stderr.contains("JWT_SECRET") && stderr.contains("at least 32 bytes"),
        "{stderr}"
    );
    assert!(!stderr.contains("abc123-short"), "{stderr}");
}

#[test]
fn insecure_dev_mode_is_refused_on_a_public_address() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("0.0.0.0:{}", free_port());
    let (code, stderr) = run_failing(
        dir.path(),
        &["--listen", &listen],
        &[("ALLOW_INSECURE_DEV", "true")],
    );
    assert_eq!(code, 64);
    assert!(
        stderr.contains("allow_insecure_dev") && stderr.contains("loopback"),
        "{stderr}"
    );
}

/// Opens `count` connections to `port` that each send half a request head and then
/// wait, as a slow or hostile client does.
fn half_open_connections(port: u16, count: usize) -> Vec<TcpStream> {
    (0..count)
        .filter_map(|_| {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n")
                .ok()?;
            Some(stream)
        })
        .collect()
}

#[test]
fn a_flood_on_the_metrics_port_cannot_take_the_gateways_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let config = si_core::config::BUILTIN_TOML
        .replace("127.0.0.1:8000", &format!("127.0.0.1:{port}"))
        .replace("127.0.0.1:9464", &format!("127.0.0.1:{metrics_port}"))
        .replace(
            "header_read_timeout_ms = 10000",
            "header_read_timeout_ms = 60000",
        );
    std::fs::write(dir.path().join("site.toml"), config).unwrap();
    let log = std::fs::File::create(dir.path().join("gateway.log")).unwrap();
    // 400 descriptors in all, soft and hard: far fewer than the flood below.
    let mut child = Command::new("sh")
        .current_dir(dir.path())
        .env_remove("JWT_SECRET")
        .env_remove("SI_DATA_DIR")
        .args(["-c", "ulimit -n 400 && exec \"$0\" --config site.toml"])
        .arg(env!("CARGO_BIN_EXE_si-server"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    wait_for_healthz(port);

    let flood = half_open_connections(metrics_port, 600);
    assert!(
        flood.len() >= 500,
        "only {} connections opened",
        flood.len()
    );
    // Past its cap, the metrics listener answered and closed at once.
    let mut last = flood.last().unwrap();
    last.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut refused = String::new();
    let _ = last.read_to_string(&mut refused);
    // The gateway's own port still accepts and answers.
    let healthz = {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .unwrap();
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response
    };
    child.kill().unwrap();
    let _ = child.wait();
    drop(flood);
    let log = std::fs::read_to_string(dir.path().join("gateway.log")).unwrap();
    assert!(healthz.starts_with("HTTP/1.1 200"), "{healthz:?}\n{log}");
    assert!(
        refused.starts_with("HTTP/1.1 503") && refused.contains("too_many_connections"),
        "{refused:?}"
    );
    assert!(
        log.contains("open-file limit (400) cannot cover gateway.max_connections = 10000"),
        "{log}"
    );
}
