//! `si-cli up`, `status` and `stop` with the real executable. A stand-in
//! llama-server (a shell script that records what it was given, then fails) shows
//! the preflight checks, the arguments and environment a model server gets,
//! per-process logs, back-off and crash-loop detection, and a SIGTERM stopping the
//! gateway before the model servers. `tests/llama.rs` runs the same against real
//! llama-server processes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use si_test_support::ports::free_ports;

mod hosts;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A supervisor that is stopped when the test ends, however it ends.
struct Supervisor(Child);

impl Drop for Supervisor {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SIGTERM first, so that it stops what it started.
            signal(self.0.id(), rustix::process::Signal::TERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn signal(pid: u32, signal: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(i32::try_from(pid).unwrap()).unwrap();
    let _ = rustix::process::kill_process(pid, signal);
}

fn config(backend_port: u16, gateway_port: u16, llama_server: &str) -> String {
    format!(
        r#"[gateway]
listen = "127.0.0.1:{gateway_port}"
metrics_listen = ""
data_dir = "data"
health_interval_ms = 200
drain_notice_ms = 0
shutdown_grace_ms = 1000

[supervisor]
llama_server = "{llama_server}"
restart_delay_ms = 200
min_uptime_ms = 5000
max_fast_failures = 3

[[backends]]
name = "tiny-a"
url = "http://127.0.0.1:{backend_port}"
model = "tiny"
api_key = "env::KEY_A"
model_file = "models/tiny.gguf"
ctx_size = 256
threads = 1

[[agents]]
name = "Chat"
model = "tiny"
tier = "fast"
"#
    )
}

/// The backend's key in the tests' `.api_keys.env`.
const KEY: &str = "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk";

/// Writes into `root` the tiny model (`models/tiny.gguf`) and `script` as the
/// llama-server; returns the server's path.
fn model_and_server(root: &Path, script: &str) -> std::path::PathBuf {
    std::fs::create_dir(root.join("models")).unwrap();
    std::fs::write(
        root.join("models/tiny.gguf"),
        si_gpu::gguf::write::tiny_llama(1),
    )
    .unwrap();
    let program = root.join("fake-llama-server");
    std::fs::write(&program, script).unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    program
}

/// Writes into `root` the tiny model, `script` as the llama-server, the
/// configuration and the key file; returns the backend's and the gateway's ports.
fn platform(root: &Path, script: &str) -> (u16, u16) {
    let [port, gateway] = free_ports();
    let program = model_and_server(root, script);
    std::fs::write(
        root.join("si.toml"),
        config(port, gateway, program.to_str().unwrap()),
    )
    .unwrap();
    let keys = root.join(".api_keys.env");
    std::fs::write(&keys, format!("KEY_A={KEY}\n")).unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    (port, gateway)
}

#[test]
fn preflight_names_everything_missing_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let [port, gateway] = free_ports();
    std::fs::write(
        dir.path().join("si.toml"),
        config(port, gateway, "bin/llama-server"),
    )
    .unwrap();
    let out = si_cli(dir.path(), &["--config", "si.toml", "up"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("nothing was started"), "{err}");
    assert!(
        err.contains("llama-server not found") && err.contains("supervisor.llama_server"),
        "{err}"
    );
    assert!(
        err.contains("models/tiny.gguf does not exist") && err.contains("si-cli tiny-model"),
        "{err}"
    );
    assert!(
        err.contains("`tiny-a` has no API key") && err.contains("si-cli keys generate"),
        "{err}"
    );
    assert!(!dir.path().join("logs").exists());
    assert!(!dir.path().join("data").exists());

    // A file that is not GGUF is named as such, and a taken port too.
    std::fs::create_dir(dir.path().join("models")).unwrap();
    std::fs::write(
        dir.path().join("models/tiny.gguf"),
        "<html>not found</html>",
    )
    .unwrap();
    let _taken = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let out = si_cli(dir.path(), &["--config", "si.toml", "up"]);
    let err = text(&out.stderr);
    assert!(err.contains("is not a usable GGUF file"), "{err}");
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
}

#[test]
fn status_and_stop_without_a_supervisor_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = si_cli(dir.path(), &["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("no supervisor is running here"),
        "{}",
        text(&out.stdout)
    );
    let out = si_cli(dir.path(), &["stop"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("no supervisor is running here"));
}

fn status(dir: &Path) -> Value {
    let out = si_cli(dir, &["--config", "si.toml", "status", "--json"]);
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn wait_for(dir: &Path, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = status(dir);
        if check(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "never {what}: {status:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_failing_model_server_is_restarted_with_back_off_then_given_up_on() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // It shows what it was given, then fails at once.
    let (port, gateway) = platform(
        root,
        "#!/bin/sh\n\
         echo \"args: $*\"\n\
         echo \"key length: ${#LLAMA_API_KEY}\"\n\
         echo \"leaked: ${SI_TEST_SECRET}${JWT_SECRET}${LLAMA_ARG_API_KEY}${API_KEY_OTHER}\"\n\
         echo \"cuda order: ${CUDA_DEVICE_ORDER}\"\n\
         echo 'model failed to load' >&2\n\
         exit 3\n",
    );
    let key = KEY;

    let up = Command::new(env!("CARGO_BIN_EXE_si-cli"))
        .current_dir(root)
        .env_remove("SI_DATA_DIR")
        .env("SI_TEST_SECRET", "gateway-only")
        .env("JWT_SECRET", "j".repeat(48))
        .env("API_KEY_OTHER", "another backend's key")
        .env("LLAMA_ARG_API_KEY", "from-the-environment")
        .args(["--config", "si.toml", "up"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut up = Supervisor(up);

    wait_for(root, "gave up on tiny-a", |s| {
        s["processes"][0]["state"] == "crash-loop" && s["processes"][1]["state"] == "ready"
    });
    // The gateway runs, and knows it has no backend for its agent.
    let status = wait_for(root, "saw tiny-a down", |s| {
        s["processes"][1]["health"] == "not ready"
    });
    let backend = &status["processes"][0];
    assert_eq!(backend["restarts"], 2, "{status:#}");
    assert_eq!(backend["last_exit"], "exited with status 3");
    assert_eq!(backend["pid"], Value::Null);
    assert_eq!(backend["port"], port);
    let gateway_status = &status["processes"][1];
    assert_eq!(gateway_status["name"], "gateway");
    assert!(gateway_status["pid"].as_u64().unwrap() > 0);
    assert_eq!(gateway_status["port"], gateway);

    // Its output went to its own logs, one run after another.
    let out = std::fs::read_to_string(root.join(format!("logs/llama-{port}-out.log"))).unwrap();
    let err = std::fs::read_to_string(root.join(format!("logs/llama-{port}-error.log"))).unwrap();
    assert_eq!(err.matches("model failed to load").count(), 3, "{err}");
    let models = root.join("models/tiny.gguf");
    let expected = format!(
        "args: -m {} --host 127.0.0.1 --port {port} --alias tiny --metrics -ngl 999 -c 256 -t 1 \
         -tb 1\n",
        models.display()
    );
    assert!(out.starts_with(&expected), "{out}");
    // Its own key in its environment, nothing of anyone else's.
    assert!(out.contains("key length: 40\n"), "{out}");
    assert!(out.contains("leaked: \n"), "{out}");
    assert!(out.contains("cuda order: PCI_BUS_ID\n"), "{out}");
    assert!(!out.contains(key));
    let mode = std::fs::metadata(root.join("data/supervisor.sock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // A second supervisor on the same configuration is refused before it starts.
    let again = si_cli(root, &["--config", "si.toml", "up"]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("something already listens there"),
        "{}",
        text(&again.stderr)
    );

    // SIGTERM: the gateway stops first, then the model servers, and a stop asked
    // for is a clean exit.
    signal(up.0.id(), rustix::process::Signal::TERM);
    let child = std::mem::replace(&mut up.0, Command::new("true").spawn().unwrap());
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let log = text(&output.stderr);
    let order = [
        "tiny-a: exited with status 3 after",
        "restarting in 0.2 s",
        "restarting in 0.4 s",
        "3 fast failures in a row, giving up",
        "gateway: ready",
        "SIGTERM: stopping",
        "stopping: the gateway first",
        "gateway: stopping (SIGTERM)",
        "gateway: stopped",
        "stopping the model servers",
        "stopped",
    ];
    let mut at = 0;
    for line in order {
        let found = log[at..]
            .find(line)
            .unwrap_or_else(|| panic!("`{line}` missing or out of order in:\n{log}"));
        at += found + line.len();
    }
    assert!(!log.contains(key));
    assert!(!root.join("data/supervisor.sock").exists());
}

#[test]
fn what_a_killed_supervisor_left_running_is_stopped_by_the_next_stop() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // A model server that takes its time to load.
    platform(root, "#!/bin/sh\nexec sleep 300\n");
    let up = Command::new(env!("CARGO_BIN_EXE_si-cli"))
        .current_dir(root)
        .env_remove("SI_DATA_DIR")
        .args(["--config", "si.toml", "up"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut up = Supervisor(up);
    let status = wait_for(root, "started tiny-a", |s| {
        s["processes"][0]["pid"].as_u64().is_some()
    });
    let pid = status["processes"][0]["pid"].as_u64().unwrap();
    // Recorded for whoever comes after a supervisor that dies.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(root.join("data/supervisor.pids"))
        .is_ok_and(|pids| pids.contains(&format!("\"pid\":{pid},")))
    {
        assert!(Instant::now() < deadline, "pid {pid} never recorded");
        std::thread::sleep(Duration::from_millis(20));
    }
    let running = |pid: u64| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            !stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim()
                .starts_with('Z')
        })
    };
    assert!(running(pid));

    // The supervisor dies without a chance to stop anything.
    up.0.kill().unwrap();
    up.0.wait().unwrap();
    assert!(running(pid), "the model server went with its supervisor");
    let out = si_cli(root, &["--config", "si.toml", "stop"]);
    assert!(out.status.success());
    let said = text(&out.stdout);
    assert!(said.contains("no supervisor is running here"), "{said}");
    assert!(
        said.contains("stopped what a supervisor that died left running: tiny-a"),
        "{said}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while running(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!running(pid), "process {pid} still runs");
    assert!(!root.join("data/supervisor.pids").exists());
}

#[test]
fn apply_plan_starts_each_model_server_where_the_gpu_plan_puts_it() {
    use si_gpu::gguf::write::{llama_header, shapes};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // The original deployment, with header-only stand-ins of its models and its
    // two declared GPUs, which it does not fit as configured.
    std::fs::create_dir(root.join("models")).unwrap();
    for (file, shape) in shapes::original_deployment() {
        std::fs::write(root.join("models").join(file), llama_header(&shape)).unwrap();
    }
    let script = root.join("fake-llama-server");
    std::fs::write(
        &script,
        "#!/bin/sh\necho \"gpu ${CUDA_VISIBLE_DEVICES} args $*\"\nexit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ports: [u16; 7] = free_ports();
    let mut config = si_core::config::BUILTIN_TOML
        .replace("source = \"auto\"", "source = \"declared\"")
        .replace(
            "llama_server = \"llama-server\"",
            &format!("llama_server = \"{}\"", script.display()),
        )
        .replace("max_fast_failures = 5", "max_fast_failures = 1")
        .replace(
            "metrics_listen = \"127.0.0.1:9464\"",
            "metrics_listen = \"\"",
        )
        .replace(
            "listen = \"127.0.0.1:8000\"",
            &format!("listen = \"127.0.0.1:{}\"", ports[6]),
        );
    for (i, port) in (8080..=8085).enumerate() {
        config = config.replace(
            &format!("\"http://127.0.0.1:{port}\""),
            &format!("\"http://127.0.0.1:{}\"", ports[i]),
        );
    }
    std::fs::write(root.join("si.toml"), config).unwrap();
    let out = si_cli(root, &["--config", "si.toml", "keys", "generate"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let refused = si_cli(root, &["--config", "si.toml", "up"]);
    assert!(!refused.status.success());
    let said = text(&refused.stderr);
    assert!(
        said.contains("do not fit the GPUs") && said.contains("si-cli up --apply-plan"),
        "{said}"
    );
    assert!(!root.join("logs").exists(), "something started: {said}");

    let plan = si_cli(root, &["--config", "si.toml", "gpu", "plan", "--json"]);
    let plan: Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(plan["verdict"], "fits_with_changes");
    let up = Command::new(env!("CARGO_BIN_EXE_si-cli"))
        .current_dir(root)
        .env_remove("SI_DATA_DIR")
        .args(["--config", "si.toml", "up", "--apply-plan"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut up = Supervisor(up);
    wait_for(root, "ran every model server once", |s| {
        s["processes"].as_array().is_some_and(|all| {
            all.len() == 7
                && all
                    .iter()
                    .all(|p| p["state"] == "crash-loop" || p["name"] == "gateway")
        })
    });
    signal(up.0.id(), rustix::process::Signal::TERM);
    let child = std::mem::replace(&mut up.0, Command::new("true").spawn().unwrap());
    let output = child.wait_with_output().unwrap();
    let log = text(&output.stderr);
    let remedies = plan["remedies"].as_array().unwrap().len();
    assert_eq!(log.matches("GPU plan: ").count(), remedies, "{log}");

    // Each server ran on the planned GPU with the planned context and caches.
    for placement in plan["placements"].as_array().unwrap() {
        let name = placement["server"].as_str().unwrap();
        let original: u16 = name.rsplit('-').next().unwrap().parse().unwrap();
        let port = ports[usize::from(original - 8080)];
        let ran = std::fs::read_to_string(root.join(format!("logs/llama-{port}-out.log")))
            .unwrap_or_else(|e| panic!("{name}: {e}\n{log}"));
        let expected = [
            format!("gpu {} args ", placement["gpu"]),
            format!("-c {} ", placement["context"]),
            format!(
                "--cache-type-k {} --cache-type-v {}",
                placement["cache_type_k"].as_str().unwrap(),
                placement["cache_type_v"].as_str().unwrap()
            ),
        ];
        for part in expected {
            assert!(ran.contains(&part), "{name}: `{part}` not in {ran}");
        }
    }
}

#[test]
fn sighup_is_ignored_and_a_second_sigterm_kills_what_ignores_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // A model server that ignores SIGTERM, with an hour to stop: only a second
    // signal to the supervisor ends it within this test.
    platform(root, "#!/bin/sh\ntrap '' TERM\nexec sleep 300\n");
    let config = std::fs::read_to_string(root.join("si.toml")).unwrap();
    let config = config.replace(
        "max_fast_failures = 3",
        "max_fast_failures = 3\nstop_timeout_ms = 3600000",
    );
    std::fs::write(root.join("si.toml"), config).unwrap();
    let up = Command::new(env!("CARGO_BIN_EXE_si-cli"))
        .current_dir(root)
        .env_remove("SI_DATA_DIR")
        .args(["--config", "si.toml", "up"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut up = Supervisor(up);
    let status = wait_for(root, "started tiny-a", |s| {
        s["processes"][0]["pid"].as_u64().is_some()
    });
    let pid = status["processes"][0]["pid"].as_u64().unwrap();

    signal(up.0.id(), rustix::process::Signal::HUP);
    wait_for(root, "answered after SIGHUP", |s| {
        s["processes"][0]["state"] == "starting"
    });
    assert!(matches!(up.0.try_wait(), Ok(None)), "SIGHUP ended it");

    signal(up.0.id(), rustix::process::Signal::TERM);
    wait_for(root, "stopping tiny-a", |s| {
        s["processes"][0]["state"] == "stopping"
    });
    signal(up.0.id(), rustix::process::Signal::TERM);
    let deadline = Instant::now() + Duration::from_secs(30);
    let exited = loop {
        if let Some(status) = up.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "a second SIGTERM did not end it");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exited.success());
    let child = std::mem::replace(&mut up.0, Command::new("true").spawn().unwrap());
    let log = text(&child.wait_with_output().unwrap().stderr);
    let mut at = 0;
    for line in [
        "SIGHUP ignored",
        "SIGTERM: stopping",
        "tiny-a: stopping (SIGTERM)",
        "SIGTERM again: killing what still runs",
        "tiny-a: still running after SIGTERM; killing it",
        "stopped",
    ] {
        let found = log[at..]
            .find(line)
            .unwrap_or_else(|| panic!("`{line}` missing or out of order in:\n{log}"));
        at += found + line.len();
    }
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists() || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            stat.rsplit(')')
                .next()
                .unwrap_or("")
                .trim()
                .starts_with('Z')
        }
    );
}

/// `si-cli ARGS` in `dir`, with nothing on standard input.
fn si_cli(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    si_test_support::cli::run(env!("CARGO_BIN_EXE_si-cli"), dir, args, None)
}
