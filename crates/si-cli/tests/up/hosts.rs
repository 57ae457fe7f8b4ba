//! `si-cli up --host`: in a configuration shared by two GPU hosts, each runs its
//! own model servers and leaves the others', and with `--no-gateway` runs no
//! gateway.

use std::path::Path;
use std::process::{Command, Stdio};

use si_test_support::ports::free_ports;

use super::{KEY, Supervisor, model_and_server, si_cli, signal, text, wait_for};

/// `tiny-a` on gpu-a (an address of another machine) and `tiny-b` on gpu-b (a
/// loopback address, so that this machine can run it as gpu-b).
fn two_hosts(root: &Path, script: &str) -> (u16, u16) {
    let [port, gateway] = free_ports();
    let program = model_and_server(root, script);
    let config = format!(
        r#"[gateway]
listen = "127.0.0.1:{gateway}"
metrics_listen = ""
data_dir = "data"

[supervisor]
llama_server = "{program}"
restart_delay_ms = 200
max_fast_failures = 1

[[backends]]
name = "tiny-a"
url = "http://192.0.2.11:{port}"
host = "gpu-a"
model = "tiny"
api_key = "env::KEY_A"
model_file = "models/tiny.gguf"
ctx_size = 256

[[backends]]
name = "tiny-b"
url = "http://127.0.0.1:{port}"
host = "gpu-b"
model = "tiny"
api_key = "env::KEY_B"
model_file = "models/tiny.gguf"
ctx_size = 256

[[agents]]
name = "Chat"
model = "tiny"
tier = "fast"
"#,
        program = program.display()
    );
    std::fs::write(root.join("si.toml"), config).unwrap();
    let keys = root.join(".api_keys.env");
    std::fs::write(&keys, format!("KEY_A={KEY}\nKEY_B={KEY}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    (port, gateway)
}

#[test]
fn a_gpu_host_checks_only_its_own_backends_and_names_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    two_hosts(root, "#!/bin/sh\nexit 3\n");
    std::fs::remove_file(root.join("models/tiny.gguf")).unwrap();
    let out = si_cli(root, &["--config", "si.toml", "up", "--host", "gpu-b"]);
    assert!(!out.status.success());
    let (said, err) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(said, "left to another host: tiny-a → gpu-a\n");
    assert!(err.contains("nothing was started"), "{err}");
    assert!(err.contains("`tiny-b`: model file"), "{err}");
    assert!(!err.contains("tiny-a"), "{err}");

    // A host that runs none: a misspelt name, most likely.
    let out = si_cli(root, &["--config", "si.toml", "up", "--host", "gpu-c"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(
            "no backend is placed on host `gpu-c`; this configuration places them on gpu-a, gpu-b"
        ),
        "{err}"
    );
    assert!(!root.join("logs").exists());
}

#[test]
fn without_a_gateway_a_gpu_host_runs_its_model_servers_alone() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (_, gateway) = two_hosts(root, "#!/bin/sh\nexec sleep 300\n");
    let up = Command::new(env!("CARGO_BIN_EXE_si-cli"))
        .current_dir(root)
        .env_remove("SI_DATA_DIR")
        .args([
            "--config",
            "si.toml",
            "up",
            "--host",
            "gpu-b",
            "--no-gateway",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut up = Supervisor(up);
    let status = wait_for(root, "started tiny-b", |s| {
        s["processes"][0]["pid"].as_u64().is_some()
    });
    let processes = status["processes"].as_array().unwrap();
    assert_eq!(processes.len(), 1, "{status:#}");
    assert_eq!(processes[0]["name"], "tiny-b");
    // Nothing listens where a gateway would.
    assert!(std::net::TcpListener::bind(("127.0.0.1", gateway)).is_ok());

    signal(up.0.id(), rustix::process::Signal::TERM);
    let child = std::mem::replace(&mut up.0, Command::new("true").spawn().unwrap());
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let log = text(&output.stderr);
    assert!(
        log.contains("starting 1 model server(s); control socket"),
        "{log}"
    );
    assert!(!log.contains("gateway"), "{log}");
}

#[test]
fn detached_without_a_gateway_it_returns_once_the_model_servers_settle() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    two_hosts(root, "#!/bin/sh\nexit 3\n");
    let args = ["--config", "si.toml", "up", "--host", "gpu-b"];
    let out = si_cli(root, &[&args[..], &["--no-gateway", "--detach"]].concat());
    // Returned (rather than waiting for a gateway), saying that tiny-b failed.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.starts_with("left to another host: tiny-a → gpu-a\n"),
        "{said}"
    );
    assert!(said.contains("crash-loop"), "{said}");
    assert!(!said.contains("gateway"), "{said}");
    let log = std::fs::read_to_string(root.join("logs/supervisor.log")).unwrap();
    assert!(
        log.contains("left to another host: tiny-a → gpu-a"),
        "{log}"
    );
    let stopped = si_cli(root, &["--config", "si.toml", "stop"]);
    assert!(stopped.status.success(), "{}", text(&stopped.stderr));
    assert!(!root.join("data/supervisor.sock").exists());
}
