//! The phases of one run, in order, and the targets they are checked against.

mod checks;
mod phases;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

use crate::load::{self, Target};
use crate::report::{Added, LatencyRow, Machine, Memory, Report, Streaming, Throughput};
use crate::stack;
use checks::checks;
pub(crate) use phases::{added, cpu_per_request, latency_row};
use phases::{fixed_delay, max_rates, memory_rounds, streaming, sweep, throughput};

/// How long and how hard each phase runs.
pub struct Settings {
    /// `full`, `quick` or `smoke`.
    pub(crate) mode: &'static str,
    /// Load before each measurement, not counted.
    pub(crate) warmup: Duration,
    /// Each closed-loop measurement (the shared-store run's too).
    pub(crate) duration: Duration,
    concurrencies: &'static [usize],
    rate_start: f64,
    rate_factor: f64,
    rate_steps: usize,
    rate_duration: Duration,
    delay_ms: u64,
    streams: usize,
    ramp: Duration,
    chunks: u32,
    interval_ms: u64,
    memory_rounds: usize,
    /// Latency sweep and throughput only.
    quick: bool,
}

impl Settings {
    /// The measurement the README reports (about three minutes).
    pub fn full() -> Self {
        Settings {
            mode: "full",
            warmup: Duration::from_millis(500),
            duration: Duration::from_secs(3),
            concurrencies: &[1, 16, 64, 256],
            rate_start: 1_000.0,
            rate_factor: 1.25,
            rate_steps: 25,
            rate_duration: Duration::from_millis(1_500),
            delay_ms: 20,
            streams: 1_000,
            ramp: Duration::from_secs(1),
            chunks: 40,
            interval_ms: 50,
            memory_rounds: 3,
            quick: false,
        }
    }

    /// The latency sweep and throughput only, at 1 and 64 connections.
    pub fn quick() -> Self {
        Settings {
            mode: "quick",
            concurrencies: &[1, 64],
            duration: Duration::from_secs(2),
            quick: true,
            ..Settings::full()
        }
    }

    /// Every phase, briefly.
    pub fn smoke() -> Self {
        Settings {
            mode: "smoke",
            warmup: Duration::from_millis(50),
            duration: Duration::from_millis(300),
            concurrencies: &[1, 16],
            rate_start: 100.0,
            rate_factor: 2.0,
            rate_steps: 2,
            rate_duration: Duration::from_millis(300),
            delay_ms: 5,
            streams: 50,
            ramp: Duration::from_millis(50),
            chunks: 5,
            interval_ms: 20,
            memory_rounds: 2,
            quick: false,
        }
    }
}

/// The zero-delay request: a short chat, as a client sends it.
pub(crate) const CHAT: &str = r#"{"model":"Chat","messages":[{"role":"system","content":"You are a helpful clinical assistant."},{"role":"user","content":"Summarise: BP 128/82, HR 72, afebrile, ambulating."}],"max_tokens":64,"temperature":0.2}"#;
const DELAYED: &str = r#"{"model":"Clinical","messages":[{"role":"user","content":"Assess: BP 128/82, HR 72."}],"max_tokens":64}"#;
const STREAM: &str = r#"{"model":"Documentation","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Write a discharge note."}],"max_tokens":256}"#;

pub(crate) fn target(
    address: SocketAddr,
    authorization: Option<&str>,
    body: &'static str,
) -> Target {
    Target {
        address,
        path: "/v1/chat/completions",
        authorization: authorization.map(str::to_owned),
        body: Bytes::from_static(body.as_bytes()),
    }
}

/// Runs every phase and checks the targets.
pub async fn run(settings: &Settings, with_nginx: bool) -> Result<Report, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mock = stack::start_mock(
        &exe,
        settings.delay_ms,
        settings.chunks,
        settings.interval_ms,
    )?;
    let gateway = stack::start_gateway(&stack::Launch::embedded(&exe), &mock, dir.path()).await?;
    let nginx = if with_nginx {
        stack::start_nginx(mock.immediate, dir.path()).await?
    } else {
        None
    };
    let targets = targets(&mock, &gateway, nginx.as_ref());
    eprintln!("warming up");
    for (_, t) in &targets {
        load::closed_loop(t, 16, Duration::ZERO, settings.warmup * 2).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut memory = Memory {
        idle_kib: stack::rss_kib(gateway.process.pid()).unwrap_or(0),
        ..Memory::default()
    };

    let mut measured = vec![vec![mock.process.pid()], vec![gateway.process.pid()]];
    if let Some(nginx) = &nginx {
        measured.push(stack::with_children(nginx.process.pid()));
    }
    let latency = sweep(settings, &targets, &measured).await;
    let added = added(&latency, settings.concurrencies, "gateway");
    let throughput_64 = throughput(settings, &targets, &latency).await;
    if settings.quick {
        return Ok(quick_report(
            settings,
            latency,
            added,
            throughput_64,
            memory,
        ));
    }
    let max_rate = max_rates(settings, &targets).await;
    let fixed_delay = fixed_delay(settings, &mock, &gateway).await;
    memory_rounds(settings, &gateway, &targets[1].1, &mut memory).await;
    let (streaming, peak) = streaming(settings, &mock, &gateway).await;
    memory.peak_streaming_kib = peak;
    drop(nginx);
    drop(gateway);
    drop(mock);
    let mut report = Report {
        mode: settings.mode,
        machine: Machine::this(),
        latency,
        added,
        throughput_64,
        max_rate,
        fixed_delay,
        streaming,
        memory,
        targets: Vec::new(),
    };
    report.targets = checks(&report);
    Ok(report)
}

/// The zero-delay targets: straight to the mock, through the gateway, and
/// through nginx when it runs.
fn targets(
    mock: &stack::Mock,
    gateway: &stack::Gateway,
    nginx: Option<&stack::Nginx>,
) -> Vec<(&'static str, Target)> {
    let auth = Some(gateway.authorization.as_str());
    let mut targets = vec![
        ("direct", target(mock.immediate, None, CHAT)),
        ("gateway", target(gateway.address, auth, CHAT)),
    ];
    if let Some(nginx) = nginx {
        targets.push(("nginx", target(nginx.address, None, CHAT)));
    }
    targets
}

fn quick_report(
    settings: &Settings,
    latency: Vec<LatencyRow>,
    added: Vec<Added>,
    throughput_64: Throughput,
    memory: Memory,
) -> Report {
    let mut report = Report {
        mode: settings.mode,
        machine: Machine::this(),
        latency,
        added,
        throughput_64,
        max_rate: Vec::new(),
        fixed_delay: Vec::new(),
        streaming: Streaming::default(),
        memory,
        targets: Vec::new(),
    };
    report.targets = checks(&report);
    report.targets.truncate(3);
    report
}
