//! One supervised process, run after run: start it with its output in its logs,
//! watch its health, stop it, and decide when to start it again or give up.

use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use si_core::SupervisorConfig;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::logs::RotatingLog;
use crate::state::{Kind, ProcessSpec, Shared, State};
use crate::{pids, probe, say};

/// How one run of a process ended.
enum Ended {
    /// It exited (or could not be started), as described.
    Exited(String),
    /// It never became ready and was stopped: a failure however long it took.
    NotReady(String),
    /// The supervisor stopped it.
    Stopped,
}

/// Keeps one process running until `stop`: start, wait for readiness, restart
/// with back-off on exit, give up after too many fast failures.
pub(crate) async fn supervise(
    spec: ProcessSpec,
    index: usize,
    shared: Shared,
    settings: SupervisorConfig,
    stop: CancellationToken,
    hurry: CancellationToken,
) {
    let mut starts: u32 = 0;
    let mut fast_failures: u32 = 0;
    loop {
        let started = Instant::now();
        let ended = run_once(&spec, index, &shared, &settings, &stop, &hurry, starts).await;
        starts = starts.saturating_add(1);
        let (how, fast) = match ended {
            Ended::Exited(how) => (how, false),
            Ended::NotReady(how) => (how, true),
            Ended::Stopped => break,
        };
        let ran = started.elapsed();
        if record_exit(&shared, index, &settings, &how, fast) {
            fast_failures = fast_failures.saturating_add(1);
        } else {
            fast_failures = 0;
        }
        if fast_failures >= settings.max_fast_failures {
            say(&format!(
                "{}: {how} after {:.1} s; {fast_failures} fast failures in a row, giving up \
                 (see {}); fix it, then restart the platform",
                spec.name,
                ran.as_secs_f64(),
                settings
                    .logs_dir
                    .join(format!("{}-error.log", spec.log_stem))
                    .display()
            ));
            shared.update(index, |slot| slot.status.state = State::CrashLoop);
            stop.cancelled().await;
            break;
        }
        let delay = restart_delay(&settings, fast_failures);
        say(&format!(
            "{}: {how} after {:.1} s; restarting in {:.1} s",
            spec.name,
            ran.as_secs_f64(),
            delay.as_secs_f64()
        ));
        shared.update(index, |slot| slot.status.state = State::Backoff);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => break,
        }
    }
    shared.update(index, |slot| {
        slot.status.state = State::Stopped;
        slot.status.pid = None;
    });
}

/// Records that a run ended as `how`, and returns whether it failed fast.
fn record_exit(
    shared: &Shared,
    index: usize,
    settings: &SupervisorConfig,
    how: &str,
    not_ready: bool,
) -> bool {
    // Load time does not count: a server that dies soon after becoming ready,
    // or never became ready, failed fast however long its model took to load.
    let served = shared.served_for(index);
    let fast = not_ready || served.is_none_or(|served| served < settings.min_uptime);
    shared.update(index, |slot| {
        slot.status.pid = None;
        slot.status.last_exit = Some(how.to_owned());
        slot.start_ticks = None;
    });
    shared.save_pids();
    fast
}

/// The wait before the next start: the restart delay, doubled for each fast
/// failure in a row after the first, up to the maximum.
fn restart_delay(settings: &SupervisorConfig, fast_failures: u32) -> Duration {
    let doublings = fast_failures.saturating_sub(1).min(20);
    settings
        .restart_delay
        .saturating_mul(1 << doublings)
        .min(settings.restart_max_delay)
}

/// One run of the process: start it, wait until it exits, fails to become ready,
/// or is stopped.
async fn run_once(
    spec: &ProcessSpec,
    index: usize,
    shared: &Shared,
    settings: &SupervisorConfig,
    stop: &CancellationToken,
    hurry: &CancellationToken,
    starts: u32,
) -> Ended {
    if stop.is_cancelled() {
        return Ended::Stopped;
    }
    shared.update(index, |slot| {
        slot.ready_at = None;
        slot.unhealthy_at = None;
    });
    let (mut child, pumps) = match spawn(spec, settings) {
        Ok(started) => started,
        Err(e) => return Ended::Exited(e),
    };
    record_start(spec, index, shared, child.id(), starts);
    let watch = watch_health(spec, index, shared, settings);
    let ended = tokio::select! {
        status = child.wait() => Ended::Exited(match status {
            Ok(status) => describe(status),
            Err(e) => format!("cannot be waited for: {e}"),
        }),
        ended = watch => {
            terminate(&mut child, spec, hurry).await;
            ended
        }
        () = stop.cancelled() => {
            shared.update(index, |slot| slot.status.state = State::Stopping);
            say(&format!("{}: stopping (SIGTERM)", spec.name));
            terminate(&mut child, spec, hurry).await;
            say(&format!("{}: stopped", spec.name));
            Ended::Stopped
        }
    };
    // Its last lines reach its logs before it counts as gone.
    for pump in pumps {
        let _ = tokio::time::timeout(Duration::from_secs(2), pump).await;
    }
    ended
}

/// Records a new run of the process, started as `pid`.
fn record_start(spec: &ProcessSpec, index: usize, shared: &Shared, pid: Option<u32>, starts: u32) {
    say(&format!(
        "{}: started, pid {}, port {}",
        spec.name,
        pid.map_or_else(|| "?".into(), |p| p.to_string()),
        spec.health.port()
    ));
    shared.update(index, |slot| {
        slot.status.pid = pid;
        slot.status.state = State::Starting;
        slot.status.restarts = starts;
        slot.started = Some(Instant::now());
        slot.start_ticks = pid.and_then(pids::start_time);
    });
    shared.save_pids();
}

/// Whether the process's health endpoint says it serves.
async fn healthy(spec: &ProcessSpec) -> bool {
    match probe(spec.health, spec.kind.health_path()).await {
        Ok(200) => true,
        // Any answer from the gateway means it serves (it answers 503 while it
        // drains).
        Ok(_) => spec.kind == Kind::Gateway,
        Err(_) => false,
    }
}

/// Watches the process's health: polls until it is ready (marking it so), then
/// keeps checking. Returns only to have the process stopped: it was not ready
/// within `ready_timeout`, or its health check has failed for
/// `unhealthy_restart` since (a hung process does not exit by itself).
async fn watch_health(
    spec: &ProcessSpec,
    index: usize,
    shared: &Shared,
    settings: &SupervisorConfig,
) -> Ended {
    let started = Instant::now();
    if let Err(ended) = wait_ready(spec, settings, started).await {
        return ended;
    }
    shared.update(index, |slot| {
        slot.status.state = State::Ready;
        slot.ready_at = Some(Instant::now());
    });
    say(&format!(
        "{}: ready in {:.1} s",
        spec.name,
        started.elapsed().as_secs_f64()
    ));
    let Some(window) = settings.unhealthy_restart else {
        return std::future::pending().await;
    };
    let interval = (window / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut failing_since: Option<Instant> = None;
    loop {
        tokio::time::sleep(interval).await;
        if healthy(spec).await {
            if failing_since.take().is_some() {
                say(&format!("{}: healthy again", spec.name));
                shared.update(index, |slot| {
                    slot.status.state = State::Ready;
                    slot.unhealthy_at = None;
                });
            }
            continue;
        }
        let since = *failing_since.get_or_insert_with(|| {
            say(&format!("{}: its health check fails", spec.name));
            let now = Instant::now();
            shared.update(index, |slot| {
                slot.status.state = State::Unhealthy;
                slot.unhealthy_at = Some(now);
            });
            now
        });
        if since.elapsed() >= window {
            return Ended::Exited(format!(
                "was unhealthy for {} s (supervisor.unhealthy_restart_ms), stopped",
                window.as_secs()
            ));
        }
    }
}

/// Polls the health endpoint until it answers; fails once `ready_timeout` has
/// passed since `started`.
async fn wait_ready(
    spec: &ProcessSpec,
    settings: &SupervisorConfig,
    started: Instant,
) -> Result<(), Ended> {
    loop {
        if started.elapsed() >= settings.ready_timeout {
            return Err(Ended::NotReady(format!(
                "not ready within {} s (supervisor.ready_timeout_ms)",
                settings.ready_timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if healthy(spec).await {
            return Ok(());
        }
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(9)) => "was killed (SIGKILL)".into(),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => "exited".into(),
    }
}

type Pumps = Vec<tokio::task::JoinHandle<()>>;

fn spawn(spec: &ProcessSpec, settings: &SupervisorConfig) -> Result<(Child, Pumps), String> {
    let log = |suffix: &str| {
        let path = settings
            .logs_dir
            .join(format!("{}-{suffix}.log", spec.log_stem));
        RotatingLog::open(&path, settings.log_max_bytes, settings.log_files)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))
    };
    let (out, err) = (log("out")?, log("error")?);
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        // Its own process group: a Ctrl-C meant for the supervisor reaches it only
        // through the supervisor, in the right order.
        .process_group(0);
    if let Some(pass) = &spec.env_pass {
        command.env_clear().envs(pass.iter().map(|(k, v)| (k, v)));
    }
    for (name, value) in &spec.env {
        command.env(name, value);
    }
    if let Some(key) = &spec.key {
        command.env("LLAMA_API_KEY", key.expose_secret());
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", spec.program.display()))?;
    let mut pumps = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        pumps.push(tokio::spawn(pump(stdout, out)));
    }
    if let Some(stderr) = child.stderr.take() {
        pumps.push(tokio::spawn(pump(stderr, err)));
    }
    Ok((child, pumps))
}

/// Copies a process's output into its log until the process closes it. A log that
/// cannot be written is reported once and the output still drained, so the
/// process never blocks on a full pipe.
async fn pump(mut from: impl tokio::io::AsyncRead + Unpin, mut log: RotatingLog) {
    let mut buffer = vec![0_u8; 16 * 1024];
    let mut failed = false;
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let chunk = buffer.get(..n).unwrap_or_default();
        if let Err(e) = log.write(chunk)
            && !failed
        {
            failed = true;
            say(&format!("cannot write {}: {e}", log.path().display()));
        }
    }
}

/// SIGTERM, then SIGKILL if it has not exited within its stop timeout (at once
/// once `hurry` is cancelled).
async fn terminate(child: &mut Child, spec: &ProcessSpec, hurry: &CancellationToken) {
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let exited = tokio::select! {
        waited = tokio::time::timeout(spec.stop_timeout, child.wait()) => waited.is_ok(),
        () = hurry.cancelled() => false,
    };
    if !exited {
        say(&format!(
            "{}: still running after SIGTERM; killing it",
            spec.name
        ));
        let _ = child.kill().await;
    }
}
