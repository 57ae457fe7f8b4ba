//! `si-cli up`: the platform's processes started in order, kept running, and
//! stopped in order: the gateway first, so that it drains, then the model
//! servers.

use std::path::Path;
use std::time::{Duration, Instant};

use si_core::{Config, SupervisorConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::state::{Kind, ProcessSpec, Shared, State};
use crate::{
    Host, SupervisorError, UpOptions, control, detach, hosts, pids, prepare, process, reap_orphans,
    say,
};

/// `si-cli up`: ends what a supervisor that died left running, checks everything,
/// then runs the platform in the foreground until stopped, or with `detach` in
/// the background (reporting to `out` once it has started). Returns `false` when
/// it stopped because the gateway could not be kept running.
pub fn start(
    mut config: Config,
    options: &UpOptions,
    host: &Host,
    detach: bool,
    out: &mut impl std::io::Write,
) -> Result<bool, SupervisorError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(SupervisorError::io("cannot start the async runtime"))?;
    let reaped = runtime.block_on(reap_orphans(&config));
    if !reaped.is_empty() {
        say(&format!(
            "stopped what a supervisor that died left running: {}",
            reaped.join(", ")
        ));
    }
    if let Some(name) = &options.host {
        hosts::keep_this_hosts_backends(&mut config, name, out)?;
    }
    let specs = prepare(&mut config, options, host)?;
    if detach {
        drop(runtime);
        return detach::detach(&config, options, &host.program, out);
    }
    runtime.block_on(run(&config, specs))
}

/// One process under supervision.
struct Running {
    index: usize,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Runs the platform until stopped. Returns `false` when it stopped because the
/// gateway could not be kept running.
pub async fn run(config: &Config, specs: Vec<ProcessSpec>) -> Result<bool, SupervisorError> {
    let settings = &config.supervisor;
    let data_dir = &config.gateway.data_dir;
    let stop = CancellationToken::new();
    let hurry = CancellationToken::new();
    // Before anything starts: a SIGTERM from here on stops what was started.
    let signals = Signals::new()?;
    tokio::spawn(signals.watch(stop.clone(), hurry.clone()));
    create_dir(&settings.logs_dir, 0o750)?;
    create_dir(data_dir, 0o700)?;
    let socket = control::socket_path(data_dir);
    let listener = control::bind(&socket).await?;
    let shared = Shared::recording_to(pids::path(data_dir));
    let finished = CancellationToken::new();
    let control = tokio::spawn(control::serve(
        listener,
        shared.clone(),
        stop.clone(),
        finished.clone(),
    ));
    let (gateway, llama) = start_in_order(specs, &shared, settings, &stop, &hurry, &socket).await;
    let kept = tokio::select! {
        () = stop.cancelled() => true,
        () = given_up(&shared, &gateway) => {
            say("the gateway failed too often in a row; stopping everything");
            false
        }
    };
    stop_all(gateway, llama).await;
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(pids::path(data_dir));
    say("stopped");
    finished.cancel();
    let _ = control.await;
    Ok(kept)
}

/// Starts the model servers, then, once they are ready (or given up on, or out
/// of time), the gateway, unless a stop came first. Returns the gateway and the
/// model servers.
async fn start_in_order(
    specs: Vec<ProcessSpec>,
    shared: &Shared,
    settings: &SupervisorConfig,
    stop: &CancellationToken,
    hurry: &CancellationToken,
    socket: &Path,
) -> (Vec<Running>, Vec<Running>) {
    let (gateway_specs, llama_specs): (Vec<_>, Vec<_>) =
        specs.into_iter().partition(|s| s.kind == Kind::Gateway);
    let then = if gateway_specs.is_empty() {
        ""
    } else {
        ", then the gateway"
    };
    say(&format!(
        "supervisor {} starting {} model server(s){then}; control socket {}",
        std::process::id(),
        llama_specs.len(),
        socket.display()
    ));
    let start_all = |specs: Vec<ProcessSpec>| -> Vec<Running> {
        let start = |spec| supervise(spec, shared, settings, hurry);
        specs.into_iter().map(start).collect()
    };
    let llama = start_all(llama_specs);
    settle(shared, &llama, settings.ready_timeout, stop).await;
    // A stop asked for while the model servers were starting starts no gateway.
    let gateway = if stop.is_cancelled() {
        Vec::new()
    } else {
        start_all(gateway_specs)
    };
    settle(shared, &gateway, settings.ready_timeout, stop).await;
    if !stop.is_cancelled() {
        report_up(shared);
    }
    (gateway, llama)
}

fn supervise(
    spec: ProcessSpec,
    shared: &Shared,
    settings: &SupervisorConfig,
    hurry: &CancellationToken,
) -> Running {
    let index = shared.add(&spec, &settings.logs_dir);
    let stop = CancellationToken::new();
    let task = tokio::spawn(process::supervise(
        spec,
        index,
        shared.clone(),
        settings.clone(),
        stop.clone(),
        hurry.clone(),
    ));
    Running { index, stop, task }
}

fn report_up(shared: &Shared) {
    let snapshot = shared.snapshot();
    let ready = snapshot.iter().filter(|p| p.state == State::Ready).count();
    say(&format!(
        "up: {ready} of {} processes ready; `si-cli status` shows them, `si-cli stop` \
         stops them",
        snapshot.len()
    ));
}

/// The gateway first, so that it drains its requests, then every model server
/// at once.
async fn stop_all(gateway: Vec<Running>, llama: Vec<Running>) {
    if !gateway.is_empty() {
        say("stopping: the gateway first, so that it drains its requests");
    }
    for running in gateway {
        running.stop.cancel();
        let _ = running.task.await;
    }
    say("stopping the model servers");
    for running in &llama {
        running.stop.cancel();
    }
    for running in llama {
        let _ = running.task.await;
    }
}

/// Creates `path` and its parents with `mode` (as masked by the umask), unless it
/// is there.
pub fn create_dir(path: &Path, mode: u32) -> Result<(), SupervisorError> {
    use std::os::unix::fs::DirBuilderExt;
    if path.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(SupervisorError::io(format!(
            "cannot create {}",
            path.display()
        )))
}

/// Waits until every process of `processes` is ready or given up on, `timeout`
/// passes, or a stop is asked for.
async fn settle(
    shared: &Shared,
    processes: &[Running],
    timeout: Duration,
    stop: &CancellationToken,
) {
    let deadline = Instant::now() + timeout;
    while !stop.is_cancelled() && Instant::now() < deadline {
        let settled = processes.iter().all(|p| {
            matches!(
                shared.state(p.index),
                Some(State::Ready | State::CrashLoop | State::Stopped) | None
            )
        });
        if settled {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
            () = stop.cancelled() => {}
        }
    }
}

/// Returns once some process of `processes` has been given up on.
async fn given_up(shared: &Shared, processes: &[Running]) {
    loop {
        if processes
            .iter()
            .any(|p| shared.state(p.index) == Some(State::CrashLoop))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// SIGTERM and SIGINT, caught from before the first process starts; SIGHUP is
/// ignored, so that a closed terminal does not end a detached supervisor.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Signals, SupervisorError> {
        use tokio::signal::unix::{SignalKind, signal};
        let catch = |kind| signal(kind).map_err(SupervisorError::io("cannot catch signals"));
        Ok(Signals {
            term: catch(SignalKind::terminate())?,
            int: catch(SignalKind::interrupt())?,
            hup: catch(SignalKind::hangup())?,
        })
    }

    async fn next(&mut self) -> &'static str {
        loop {
            tokio::select! {
                _ = self.term.recv() => return "SIGTERM",
                _ = self.int.recv() => return "interrupted",
                _ = self.hup.recv() => say("SIGHUP ignored: stop with `si-cli stop` or SIGTERM"),
            }
        }
    }

    /// The first signal stops everything in order; a second one kills what is
    /// still running without waiting.
    async fn watch(mut self, stop: CancellationToken, hurry: CancellationToken) {
        let first = self.next().await;
        say(&format!("{first}: stopping (again to kill at once)"));
        stop.cancel();
        let second = self.next().await;
        say(&format!("{second} again: killing what still runs"));
        hurry.cancel();
    }
}
