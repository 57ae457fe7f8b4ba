//! The figures of one run, as JSON and as a table.

use hdrhistogram::Histogram;
use serde::Serialize;

mod text;

pub use text::table;
pub(crate) use text::{heading, latency_table, plain, section};

/// Everything one run measured.
#[derive(Serialize)]
pub struct Report {
    /// `full` or `smoke` (whose figures mean nothing).
    pub mode: &'static str,
    /// Where it ran.
    pub machine: Machine,
    /// Closed-loop latency per target and concurrency, zero-delay mock.
    pub latency: Vec<LatencyRow>,
    /// Gateway minus direct, per concurrency.
    pub added: Vec<Added>,
    /// Requests per second at 64 connections, zero-delay mock.
    pub throughput_64: Throughput,
    /// Highest paced rate whose p99 stayed under 5 ms with no error.
    pub max_rate: Vec<MaxRate>,
    /// 256 connections against a mock that answers after a fixed delay.
    pub fixed_delay: Vec<LatencyRow>,
    /// Many streams at once.
    pub streaming: Streaming,
    /// The gateway's resident memory.
    pub memory: Memory,
    /// The targets and whether this run met them.
    pub targets: Vec<TargetCheck>,
}

/// The machine.
#[derive(Serialize)]
pub struct Machine {
    /// CPUs the process may use.
    pub cpus: usize,
    /// CPU model, from `/proc/cpuinfo`.
    pub cpu: String,
    /// Kernel release.
    pub kernel: String,
}

impl Machine {
    /// This machine.
    pub fn this() -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu,
            kernel,
        }
    }
}

/// One closed-loop measurement.
#[derive(Serialize, Clone)]
pub struct LatencyRow {
    /// `direct`, `gateway` or `nginx`.
    pub target: &'static str,
    /// Connections.
    pub concurrency: usize,
    /// Latency percentiles, µs.
    pub p50_us: u64,
    /// 90th percentile, µs.
    pub p90_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// Requests answered per second.
    pub requests_per_second: f64,
    /// Requests answered.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// CPU time per request of the server measured (the mock for `direct`, else
    /// the proxy alone), µs: steadier than throughput on a shared machine.
    pub cpu_us_per_request: Option<f64>,
    /// CPU time per request of the PostgreSQL server that gateways share, when it
    /// runs on this machine (all its processes: other databases' work too), µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_cpu_us_per_request: Option<f64>,
}

impl LatencyRow {
    /// A row from a sample.
    pub fn new(target: &'static str, concurrency: usize, sample: &crate::load::Sample) -> Self {
        let (p50_us, p90_us, p99_us) = percentiles(&sample.latency);
        LatencyRow {
            target,
            concurrency,
            p50_us,
            p90_us,
            p99_us,
            requests_per_second: sample.rate(),
            requests: sample.ok,
            errors: sample.errors,
            cpu_us_per_request: None,
            database_cpu_us_per_request: None,
        }
    }
}

/// p50, p90 and p99 of `histogram`.
pub fn percentiles(histogram: &Histogram<u64>) -> (u64, u64, u64) {
    (
        histogram.value_at_quantile(0.5),
        histogram.value_at_quantile(0.9),
        histogram.value_at_quantile(0.99),
    )
}

/// What the gateway adds at one concurrency (negative: noise).
#[derive(Serialize)]
pub struct Added {
    /// Connections.
    pub concurrency: usize,
    /// Median, µs.
    pub p50_us: i64,
    /// 90th percentile, µs.
    pub p90_us: i64,
    /// 99th percentile, µs.
    pub p99_us: i64,
}

/// Requests per second at 64 connections.
#[derive(Serialize)]
pub struct Throughput {
    /// Straight to the mock.
    pub direct: f64,
    /// Through the gateway.
    pub gateway: f64,
    /// Through nginx, if installed.
    pub nginx: Option<f64>,
    /// Gateway over nginx.
    pub gateway_over_nginx: Option<f64>,
    /// Gateway over direct.
    pub gateway_over_direct: f64,
}

/// The highest paced rate one target sustained within the bound.
#[derive(Serialize)]
pub struct MaxRate {
    /// `direct`, `gateway` or `nginx`.
    pub target: &'static str,
    /// Requests per second, the last step that passed (0: none did).
    pub requests_per_second: f64,
    /// Every step tried.
    pub steps: Vec<RateStep>,
}

/// One step of the rate search.
#[derive(Serialize)]
pub struct RateStep {
    /// Rate asked for.
    pub rate: f64,
    /// Rate achieved.
    pub achieved: f64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// Failed requests.
    pub errors: u64,
    /// Whether it passed.
    pub passed: bool,
}

/// Streams held open at once.
#[derive(Serialize, Default)]
pub struct Streaming {
    /// Streams at once.
    pub streams: usize,
    /// Over how long they were started, ms.
    pub ramp_ms: u64,
    /// Content chunks per stream.
    pub chunks: u32,
    /// Between chunks at the mock, ms.
    pub interval_ms: u64,
    /// Straight to the mock.
    pub direct: StreamRow,
    /// Through the gateway.
    pub gateway: StreamRow,
    /// Gateway minus direct, time to first chunk, µs (p50, p99).
    pub extra_first_chunk_us: (i64, i64),
    /// Gateway minus direct, gap between chunks, µs (p50, p99).
    pub extra_gap_us: (i64, i64),
}

/// One target's streams.
#[derive(Serialize, Default)]
pub struct StreamRow {
    /// Streams that arrived whole, every chunk and `[DONE]`.
    pub complete: u64,
    /// Streams that failed or lost a chunk.
    pub failed: u64,
    /// Time to first chunk, µs (p50, p99).
    pub first_chunk_us: (u64, u64),
    /// Gap between chunks, µs (p50, p99).
    pub gap_us: (u64, u64),
}

impl StreamRow {
    /// A row from a sample.
    pub fn new(sample: &crate::load::StreamSample) -> Self {
        let first = percentiles(&sample.first_chunk);
        let gap = percentiles(&sample.gap);
        StreamRow {
            complete: sample.complete,
            failed: sample.failed,
            first_chunk_us: (first.0, first.2),
            gap_us: (gap.0, gap.2),
        }
    }
}

/// The gateway's resident memory, KiB.
#[derive(Serialize, Default)]
pub struct Memory {
    /// After start and one login.
    pub idle_kib: u64,
    /// Highest seen under the 64-connection load.
    pub peak_under_load_kib: u64,
    /// Highest seen while the streams ran.
    pub peak_streaming_kib: u64,
    /// One second after each round of load ended.
    pub after_rounds_kib: Vec<u64>,
    /// Last round minus first round.
    pub growth_kib: i64,
}

/// A target and whether it was met.
#[derive(Serialize)]
pub struct TargetCheck {
    /// What.
    pub name: &'static str,
    /// The bound.
    pub target: String,
    /// What this run measured.
    pub measured: String,
    /// Met or not (`None`: not measured in this run).
    pub met: Option<bool>,
}
