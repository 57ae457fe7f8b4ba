//! The processes under test, each its own process so that its memory can be read:
//! the mock llama-server and the gateway (this same executable in another mode,
//! on a store of its own or one shared with other gateways) and, when installed,
//! nginx.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use secrecy::SecretString;
use si_auth::NewUser;

mod nginx;
mod store;

pub use nginx::{Nginx, start_nginx};
pub use store::{Shared, Store, random_secret};

/// A child process, stopped when dropped.
pub struct Process {
    child: Child,
}

impl Process {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free on loopback now.
pub fn free_port() -> Result<u16, String> {
    Ok(free_ports::<1>()?[0])
}

/// `N` different ports free on loopback now: all are held until every one is
/// chosen, so that the kernel cannot hand out one twice.
pub fn free_ports<const N: usize>() -> Result<[u16; N], String> {
    let mut ports = [0; N];
    let mut held = Vec::with_capacity(N);
    for port in &mut ports {
        let listener = TcpListener::bind("127.0.0.1:0")
            .map_err(|e| format!("no free port on loopback: {e}"))?;
        *port = listener
            .local_addr()
            .map_err(|e| format!("no free port on loopback: {e}"))?
            .port();
        held.push(listener);
    }
    Ok(ports)
}

/// The mock's three listeners.
pub struct Mock {
    /// Its process, stopped when this is dropped.
    pub process: Process,
    /// Zero delay.
    pub immediate: SocketAddr,
    /// Fixed delay.
    pub delayed: SocketAddr,
    /// Streams.
    pub streaming: SocketAddr,
}

/// Starts `exe mock …` and waits for its `READY` line.
pub fn start_mock(
    exe: &Path,
    delay_ms: u64,
    chunks: u32,
    interval_ms: u64,
) -> Result<Mock, String> {
    let mut child = Command::new(exe)
        .args(["mock", "--delay-ms", &delay_ms.to_string()])
        .args(["--chunks", &chunks.to_string()])
        .args(["--interval-ms", &interval_ms.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start the mock: {e}"))?;
    let stdout = child.stdout.take().ok_or("the mock has no stdout")?;
    let process = Process { child };
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| format!("the mock did not start: {e}"))?;
    let addresses: Vec<SocketAddr> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    match addresses.as_slice() {
        [immediate, delayed, streaming] => Ok(Mock {
            process,
            immediate: *immediate,
            delayed: *delayed,
            streaming: *streaming,
        }),
        _ => Err(format!("the mock said `{}`", line.trim())),
    }
}

/// A running gateway and a token to call it with.
pub struct Gateway {
    /// Its process.
    pub process: Process,
    /// Where it listens.
    pub address: SocketAddr,
    /// Its metrics listener.
    pub metrics: SocketAddr,
    /// `Bearer …` for a logged-in user.
    pub authorization: String,
}

const PASSWORD: &str = "benchmark password 0123456789";

/// Which gateway to start and how.
pub struct Launch {
    /// This executable (run in its `gateway` mode), or an `si-server` binary.
    pub program: PathBuf,
    /// Whether `program` is this executable.
    pub embedded: bool,
    /// Lines added to the `[gateway]` table.
    pub gateway_settings: &'static str,
    /// An open-file limit (soft and hard) to start it under.
    pub open_files: Option<u64>,
    /// Where it keeps its state.
    pub store: Store,
}

impl Launch {
    /// This executable's own gateway, as the benchmark measures it: one client
    /// address drives every connection, so that address may hold them all.
    pub fn embedded(exe: &Path) -> Self {
        Launch {
            program: exe.to_owned(),
            embedded: true,
            gateway_settings: "max_connections = 20000\nmax_connections_per_address = 20000\n",
            open_files: None,
            store: Store::Own,
        }
    }

    fn command(&self, config: &Path) -> Command {
        let mut args: Vec<std::ffi::OsString> = Vec::new();
        if self.embedded {
            args.push("gateway".into());
        }
        args.extend(["--config".into(), config.as_os_str().to_owned()]);
        match self.open_files {
            None => {
                let mut command = Command::new(&self.program);
                command.args(args);
                command
            }
            Some(limit) => {
                let mut command = Command::new("sh");
                command
                    .arg("-c")
                    .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                    .arg(&self.program)
                    .args(args);
                command
            }
        }
    }
}

/// Writes a configuration for `mock` into `dir` with authentication, rate limits
/// (high enough never to trigger), metrics and audit on, as in production; adds a
/// user to the store `launch` names, unless it is there; starts the gateway
/// `launch` names; waits until it answers; logs in.
pub async fn start_gateway(launch: &Launch, mock: &Mock, dir: &Path) -> Result<Gateway, String> {
    let [port, metrics_port] = free_ports()?;
    let data = dir.join("data");
    std::fs::create_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
    let config = gateway_config(port, metrics_port, &data, mock, launch.gateway_settings);
    let config_path = dir.join("si-bench.toml");
    std::fs::write(&config_path, config).map_err(|e| format!("{}: {e}", config_path.display()))?;
    let user = NewUser {
        username: "bench",
        password: &SecretString::from(PASSWORD),
        role: "admin".parse().map_err(|_| "no admin role")?,
        location: "*",
    };
    launch.store.add_user(&data, &user).await?;
    let log = std::fs::File::create(dir.join("gateway.log")).map_err(|e| e.to_string())?;
    let child = launch
        .command(&config_path)
        .current_dir(dir)
        .envs(launch.store.environment()?)
        .env("BENCH_API_KEY", "bench-backend-key-0123456789")
        .env("RUST_LOG", "info")
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start the gateway: {e}"))?;
    let process = Process { child };
    let address: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_until_listening(address, Duration::from_secs(20)).await?;
    let authorization = login(address).await?;
    Ok(Gateway {
        process,
        address,
        metrics: ([127, 0, 0, 1], metrics_port).into(),
        authorization,
    })
}

fn gateway_config(
    port: u16,
    metrics_port: u16,
    data: &Path,
    mock: &Mock,
    gateway_settings: &str,
) -> String {
    format!(
        r#"[gateway]
listen = "127.0.0.1:{port}"
data_dir = "{data}"
metrics_listen = "127.0.0.1:{metrics_port}"
{gateway_settings}
[backend_defaults]
max_in_flight = 4096
queue_depth = 4096

[[backends]]
name = "mock-immediate"
url = "http://{immediate}"
model = "bench-immediate"
api_key = "env::BENCH_API_KEY"

[[backends]]
name = "mock-delayed"
url = "http://{delayed}"
model = "bench-delayed"
api_key = "env::BENCH_API_KEY"

[[backends]]
name = "mock-streaming"
url = "http://{streaming}"
model = "bench-streaming"
api_key = "env::BENCH_API_KEY"

[[agents]]
name = "Chat"
model = "bench-immediate"
tier = "fast"

[[agents]]
name = "Clinical"
model = "bench-delayed"
tier = "slow"

[[agents]]
name = "Documentation"
model = "bench-streaming"
tier = "slow"

[roles]
admin = ["*"]

[rate_limits]
per_ip_per_minute = 1000000000
per_user_per_minute = 1000000000
per_location_per_minute = 1000000000
"#,
        data = data.display(),
        immediate = mock.immediate,
        delayed = mock.delayed,
        streaming = mock.streaming,
    )
}

async fn wait_until_listening(address: SocketAddr, limit: Duration) -> Result<(), String> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if tokio::net::TcpStream::connect(address).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("nothing listened on {address} within {limit:?}"))
}

pub async fn login(address: SocketAddr) -> Result<String, String> {
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let body =
        serde_json::json!({"username": "bench", "password": PASSWORD, "location_id": "bench-site"})
            .to_string();
    let request = http::Request::post("/v1/auth/login")
        .header(http::header::HOST, address.to_string())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    match json["access_token"].as_str() {
        Some(token) if status.is_success() => Ok(format!("Bearer {token}")),
        _ => Err(format!(
            "login failed with {status}: {}",
            String::from_utf8_lossy(&body)
        )),
    }
}

/// Resident memory of `pid`, in KiB, from `/proc`.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The processes of `pid`'s tree: itself and its children (nginx's workers).
pub fn with_children(pid: u32) -> Vec<u32> {
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    std::iter::once(pid)
        .chain(children.split_whitespace().filter_map(|c| c.parse().ok()))
        .collect()
}

/// CPU time all of `pids` have used, in microseconds.
pub fn cpu_micros_all(pids: &[u32]) -> Option<u64> {
    pids.iter().map(|&pid| cpu_micros(pid)).sum()
}

/// CPU time `pid` has used (user and system), in microseconds, from `/proc`.
pub fn cpu_micros(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 1_000_000 / CLOCK_TICKS_PER_SECOND)
}

/// `sysconf(_SC_CLK_TCK)` on Linux (fixed at 100 on every mainstream architecture).
const CLOCK_TICKS_PER_SECOND: u64 = 100;
