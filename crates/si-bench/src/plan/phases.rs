//! The measurements of a run, one function per phase.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::{DELAYED, STREAM, Settings, target};
use crate::load::{self, Target};
use crate::report::{
    Added, LatencyRow, MaxRate, Memory, RateStep, StreamRow, Streaming, Throughput,
};
use crate::stack;

/// Closed-loop latency of each target at each concurrency, with the CPU time the
/// server measured spent per request.
pub(super) async fn sweep(
    settings: &Settings,
    targets: &[(&'static str, Target)],
    processes: &[Vec<u32>],
) -> Vec<LatencyRow> {
    let mut rows = Vec::new();
    for &concurrency in settings.concurrencies {
        for ((name, t), pids) in targets.iter().zip(processes) {
            let targets = std::slice::from_ref(t);
            let (warmup, duration) = (settings.warmup, settings.duration);
            rows.push(latency_row(name, targets, concurrency, (warmup, duration), pids).await);
        }
    }
    rows
}

/// A closed loop of `connections` spread over `targets` (one server, or several
/// gateways side by side) for `duration` after `warmup`, and the CPU time `pids`
/// (the servers measured) spent per request.
pub(crate) async fn latency_row(
    name: &'static str,
    targets: &[Target],
    connections: usize,
    (warmup, duration): (Duration, Duration),
    pids: &[u32],
) -> LatencyRow {
    eprintln!("latency: {name} at {connections} connections");
    // The servers' CPU, whole run over whole run, warm-up included.
    let cpu_before = stack::cpu_micros_all(pids);
    let sample = load::closed_loop_across(targets, connections, warmup, duration).await;
    let cpu_after = stack::cpu_micros_all(pids);
    let mut row = LatencyRow::new(name, connections, &sample);
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        let used = after.saturating_sub(before);
        row.cpu_us_per_request = Some(cpu_per_request(used, sample.ok, (warmup, duration)));
    }
    row
}

/// CPU µs per request of a closed loop in which `used_us` were spent from the
/// start of its warm-up and `answered` requests were answered after it.
pub(crate) fn cpu_per_request(
    used_us: u64,
    answered: u64,
    (warmup, duration): (Duration, Duration),
) -> f64 {
    // The warm-up ran at about the same rate as the measured part.
    let whole = 1.0 + warmup.as_secs_f64() / duration.as_secs_f64();
    used_us as f64 / (answered as f64 * whole).max(1.0)
}

/// What the target named `through` adds to direct calls, per concurrency.
pub(crate) fn added(rows: &[LatencyRow], concurrencies: &[usize], through: &str) -> Vec<Added> {
    concurrencies
        .iter()
        .filter_map(|&c| {
            let find = |name: &str| rows.iter().find(|r| r.target == name && r.concurrency == c);
            let (direct, gateway) = (find("direct")?, find(through)?);
            Some(Added {
                concurrency: c,
                p50_us: gateway.p50_us as i64 - direct.p50_us as i64,
                p90_us: gateway.p90_us as i64 - direct.p90_us as i64,
                p99_us: gateway.p99_us as i64 - direct.p99_us as i64,
            })
        })
        .collect()
}

/// Requests per second at 64 connections: from the sweep where it ran at 64,
/// else measured now.
pub(super) async fn throughput(
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

/// The highest paced rate each target sustains with p99 under the bound.
pub(super) async fn max_rates(
    settings: &Settings,
    targets: &[(&'static str, Target)],
) -> Vec<MaxRate> {
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

/// 256 connections against the mock that answers after a fixed delay.
pub(super) async fn fixed_delay(
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

/// Rounds of load at 64 connections through the gateway: the peak of its resident
/// memory, and its memory one second after each round, into `memory`.
pub(super) async fn memory_rounds(
    settings: &Settings,
    gateway: &stack::Gateway,
    target: &Target,
    memory: &mut Memory,
) {
    eprintln!(
        "memory: {} rounds at 64 connections",
        settings.memory_rounds
    );
    for _ in 0..settings.memory_rounds {
        let (_, peak) = while_watching(gateway.process.pid(), async {
            load::closed_loop(target, 64, Duration::ZERO, settings.duration).await
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
}

/// Many streams at once, straight to the mock and through the gateway; the
/// gateway's peak resident memory meanwhile.
pub(super) async fn streaming(
    settings: &Settings,
    mock: &stack::Mock,
    gateway: &stack::Gateway,
) -> (Streaming, u64) {
    eprintln!("streaming: {} streams at once", settings.streams);
    let auth = Some(gateway.authorization.as_str());
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
    (streaming, peak)
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
