//! The phases of one run, in order, and the targets they are checked against.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;

use crate::load::{self, Target};
use crate::report::{
    Added, LatencyRow, Machine, MaxRate, Memory, RateStep, Report, StreamRow, Streaming,
    TargetCheck, Throughput,
};
use crate::stack;

/// How long and how hard each phase runs.
pub struct Settings {
    mode: &'static str,
    warmup: Duration,
    duration: Duration,
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
const CHAT: &str = r#"{"model":"Chat","messages":[{"role":"system","content":"You are a helpful clinical assistant."},{"role":"user","content":"Summarise: BP 128/82, HR 72, afebrile, ambulating."}],"max_tokens":64,"temperature":0.2}"#;
const DELAYED: &str = r#"{"model":"Clinical","messages":[{"role":"user","content":"Assess: BP 128/82, HR 72."}],"max_tokens":64}"#;
const STREAM: &str = r#"{"model":"Documentation","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Write a discharge note."}],"max_tokens":256}"#;

fn target(address: SocketAddr, authorization: Option<&str>, body: &'static str) -> Target {
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
    let gateway = stack::start_gateway(&exe, &mock, dir.path()).await?;
    let nginx = if with_nginx {
        stack::start_nginx(mock.immediate, dir.path()).await?
    } else {
        None
    };
    let auth = Some(gateway.authorization.as_str());
    let mut targets = vec![
        ("direct", target(mock.immediate, None, CHAT)),
        ("gateway", target(gateway.address, auth, CHAT)),
    ];
    if let Some(nginx) = &nginx {
        targets.push(("nginx", target(nginx.address, None, CHAT)));
    }
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
    let added = added(&latency, settings.concurrencies);
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

    eprintln!(
        "memory: {} rounds at 64 connections",
        settings.memory_rounds
    );
    let gateway_target = &targets[1].1;
    for _ in 0..settings.memory_rounds {
        let (_, peak) = while_watching(gateway.process.pid(), async {
            load::closed_loop(gateway_target, 64, Duration::ZERO, settings.duration).await
        })
        .await;
        memory.peak_under_load_kib = memory.peak_under_load_kib.max(peak);
        tokio::time::sleep(Duration::from_secs(1)).await;
        memory
            .after_rounds_kib
            .push(stack::rss_kib(gateway.process.pid()).unwrap_or(0));
    }
    memory.growth_kib = match (
        memory.after_rounds_kib.first(),
        memory.after_rounds_kib.last(),
    ) {
        (Some(first), Some(last)) => *last as i64 - *first as i64,
        _ => 0,
    };

    eprintln!("streaming: {} streams at once", settings.streams);
    let events = settings.chunks as usize + 3;
    let direct = load::streams(
        &target(mock.streaming, None, STREAM),
        settings.streams,
        events,
        settings.ramp,
    )
    .await;
    let (through, peak) = while_watching(gateway.process.pid(), async {
        load::streams(
            &target(gateway.address, auth, STREAM),
            settings.streams,
            events,
            settings.ramp,
        )
        .await
    })
    .await;
    memory.peak_streaming_kib = peak;
    let (direct, through) = (StreamRow::new(&direct), StreamRow::new(&through));
    let streaming = Streaming {
        streams: settings.streams,
        ramp_ms: settings.ramp.as_millis() as u64,
        chunks: settings.chunks,
        interval_ms: settings.interval_ms,
        extra_first_chunk_us: (
            through.first_chunk_us.0 as i64 - direct.first_chunk_us.0 as i64,
            through.first_chunk_us.1 as i64 - direct.first_chunk_us.1 as i64,
        ),
        extra_gap_us: (
            through.gap_us.0 as i64 - direct.gap_us.0 as i64,
            through.gap_us.1 as i64 - direct.gap_us.1 as i64,
        ),
        direct,
        gateway: through,
    };
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

async fn sweep(
    settings: &Settings,
    targets: &[(&'static str, Target)],
    processes: &[Vec<u32>],
) -> Vec<LatencyRow> {
    let mut rows = Vec::new();
    for &concurrency in settings.concurrencies {
        for ((name, t), pids) in targets.iter().zip(processes) {
            eprintln!("latency: {name} at {concurrency} connections");
            // The server's CPU (the mock for direct calls; the gateway or nginx
            // alone otherwise), whole run over whole run, warm-up included.
            let cpu_before = stack::cpu_micros_all(pids);
            let sample =
                load::closed_loop(t, concurrency, settings.warmup, settings.duration).await;
            let cpu_after = stack::cpu_micros_all(pids);
            let mut row = LatencyRow::new(name, concurrency, &sample);
            if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
                let whole = 1.0 + settings.warmup.as_secs_f64() / settings.duration.as_secs_f64();
                let requests = (sample.ok as f64 * whole).max(1.0);
                row.cpu_us_per_request = Some(after.saturating_sub(before) as f64 / requests);
            }
            rows.push(row);
        }
    }
    rows
}

fn added(rows: &[LatencyRow], concurrencies: &[usize]) -> Vec<Added> {
    concurrencies
        .iter()
        .filter_map(|&c| {
            let find = |name: &str| rows.iter().find(|r| r.target == name && r.concurrency == c);
            let (direct, gateway) = (find("direct")?, find("gateway")?);
            Some(Added {
                concurrency: c,
                p50_us: gateway.p50_us as i64 - direct.p50_us as i64,
                p90_us: gateway.p90_us as i64 - direct.p90_us as i64,
                p99_us: gateway.p99_us as i64 - direct.p99_us as i64,
            })
        })
        .collect()
}

async fn throughput(
    settings: &Settings,
    targets: &[(&'static str, Target)],
    rows: &[LatencyRow],
) -> Throughput {
    let rate = |name: &str| {
        rows.iter()
            .find(|r| r.target == name && r.concurrency == 64)
            .map(|r| r.requests_per_second)
    };
    let mut measured = Vec::new();
    for (name, t) in targets {
        let value = match rate(name) {
            Some(value) => value,
            None => {
                eprintln!("throughput: {name} at 64 connections");
                load::closed_loop(t, 64, settings.warmup, settings.duration)
                    .await
                    .rate()
            }
        };
        measured.push((*name, value));
    }
    let get = |name: &str| measured.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    let direct = get("direct").unwrap_or(0.0);
    let gateway = get("gateway").unwrap_or(0.0);
    let nginx = get("nginx");
    Throughput {
        direct,
        gateway,
        nginx,
        gateway_over_nginx: nginx.map(|n| gateway / n.max(1e-9)),
        gateway_over_direct: gateway / direct.max(1e-9),
    }
}

/// The bound on p99 for the rate search.
const RATE_P99_BOUND_US: u64 = 5_000;

async fn max_rates(settings: &Settings, targets: &[(&'static str, Target)]) -> Vec<MaxRate> {
    let mut results = Vec::new();
    for (name, t) in targets {
        let mut rate = settings.rate_start;
        let mut best = 0.0;
        let mut steps = Vec::new();
        for _ in 0..settings.rate_steps {
            eprintln!("rate: {name} at {rate:.0}/s");
            let sample = load::paced(t, rate, 64, settings.warmup, settings.rate_duration).await;
            let p99 = sample.latency.value_at_quantile(0.99);
            let achieved = sample.rate();
            let passed = sample.errors == 0 && p99 < RATE_P99_BOUND_US && achieved >= 0.95 * rate;
            steps.push(RateStep {
                rate,
                achieved,
                p99_us: p99,
                errors: sample.errors,
                passed,
            });
            if !passed {
                break;
            }
            best = achieved;
            rate *= settings.rate_factor;
        }
        results.push(MaxRate {
            target: name,
            requests_per_second: best,
            steps,
        });
    }
    results
}

async fn fixed_delay(
    settings: &Settings,
    mock: &stack::Mock,
    gateway: &stack::Gateway,
) -> Vec<LatencyRow> {
    let auth = Some(gateway.authorization.as_str());
    let mut targets = vec![
        ("direct", target(mock.delayed, None, DELAYED)),
        ("gateway", target(gateway.address, auth, DELAYED)),
    ];
    // nginx proxies the zero-delay listener only: here the gateway is compared with
    // the mock alone.
    let mut rows = Vec::new();
    for (name, t) in targets.drain(..) {
        eprintln!("fixed delay: {name} at 256 connections");
        let sample = load::closed_loop(&t, 256, settings.warmup, settings.duration).await;
        rows.push(LatencyRow::new(name, 256, &sample));
    }
    rows
}

/// Runs `work` while sampling the resident memory of `pid`; its result and the peak.
async fn while_watching<T>(pid: u32, work: impl std::future::Future<Output = T>) -> (T, u64) {
    let peak = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (peak, done) = (peak.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                if let Some(kib) = stack::rss_kib(pid) {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let result = work.await;
    done.store(true, Ordering::Relaxed);
    let _ = watcher.await;
    (result, peak.load(Ordering::Relaxed))
}

fn checks(report: &Report) -> Vec<TargetCheck> {
    let added_1 = report.added.iter().find(|a| a.concurrency == 1);
    let mut checks = vec![
        TargetCheck {
            name: "added latency at 1 connection, p50",
            target: "<= 100 µs".into(),
            measured: added_1.map_or("-".into(), |a| format!("{} µs", a.p50_us)),
            met: added_1.map(|a| a.p50_us <= 100),
        },
        TargetCheck {
            name: "added latency at 1 connection, p99",
            target: "<= 300 µs".into(),
            measured: added_1.map_or("-".into(), |a| format!("{} µs", a.p99_us)),
            met: added_1.map(|a| a.p99_us <= 300),
        },
        TargetCheck {
            name: "throughput at 64 connections vs nginx",
            target: ">= 1.00".into(),
            measured: report
                .throughput_64
                .gateway_over_nginx
                .map_or("nginx not installed".into(), |r| format!("{r:.2}")),
            met: report.throughput_64.gateway_over_nginx.map(|r| r >= 1.0),
        },
    ];
    let s = &report.streaming;
    checks.push(TargetCheck {
        name: "streams whole, no chunk held back",
        target: "all whole".into(),
        measured: format!("{} of {}", s.gateway.complete, s.streams),
        met: Some(s.gateway.failed == 0 && s.gateway.complete as usize == s.streams),
    });
    checks.push(TargetCheck {
        name: "added time to first chunk, p99",
        target: "<= 1000 µs".into(),
        measured: format!("{} µs", s.extra_first_chunk_us.1),
        met: Some(s.extra_first_chunk_us.1 <= 1_000),
    });
    let m = &report.memory;
    checks.push(TargetCheck {
        name: "memory idle",
        target: "<= 30 MiB".into(),
        measured: format!("{:.1} MiB", m.idle_kib as f64 / 1024.0),
        met: Some(m.idle_kib > 0 && m.idle_kib <= 30 * 1024),
    });
    checks.push(TargetCheck {
        name: "memory flat across rounds",
        target: "growth <= 1 MiB".into(),
        measured: format!("{:+.1} MiB", m.growth_kib as f64 / 1024.0),
        met: Some(m.growth_kib <= 1024),
    });
    checks
}
