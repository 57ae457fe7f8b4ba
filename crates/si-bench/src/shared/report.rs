//! The figures of a shared-store run, as JSON and as a table.

use std::fmt::Write;

use serde::Serialize;

use crate::report::{Added, LatencyRow, Machine, Throughput};
use crate::report::{heading, latency_table, plain, section};

/// Everything one shared-store run measured.
#[derive(Serialize)]
pub struct SharedReport {
    /// `full` or `smoke` (whose figures mean nothing).
    pub mode: &'static str,
    /// Where it ran.
    pub machine: Machine,
    /// The database created for the run (and dropped after it).
    pub database: String,
    /// Whether the shared gateways kept their rate-limit counters in Redis.
    pub redis: bool,
    /// One per setup, in the order measured.
    pub setups: Vec<SetupReport>,
}

/// One setup: a gateway on SQLite, one on the shared database, or two on it.
#[derive(Serialize)]
pub struct SetupReport {
    /// `sqlite`, `postgres` or `postgres x2`.
    pub name: &'static str,
    /// Gateway processes; CPU per request counts all of them.
    pub gateways: usize,
    /// Direct calls and calls through the gateways, at each concurrency.
    pub latency: Vec<LatencyRow>,
    /// Through the gateways minus direct, per concurrency.
    pub added: Vec<Added>,
    /// Requests per second at 64 connections.
    pub throughput_64: Throughput,
    /// CPU time each gateway used while measured, ms: with the connections split
    /// evenly, about the same for both of a pair.
    pub cpu_ms_per_gateway: Vec<f64>,
}

/// The report as readable tables.
pub fn table(report: &SharedReport) -> String {
    let mut out = String::new();
    heading(&mut out, "si-bench shared", report.mode, &report.machine);
    let counters = if report.redis {
        "in Redis"
    } else {
        "in each gateway's memory"
    };
    let _ = writeln!(
        out,
        "shared store: PostgreSQL database {} (dropped); rate-limit counters {counters}",
        report.database
    );
    let rows: Vec<LatencyRow> = report
        .setups
        .iter()
        .flat_map(|s| s.latency.iter().cloned())
        .collect();
    section(
        &mut out,
        "Latency, zero-delay mock, each setup beside direct calls (µs)",
        &latency_table(&rows),
    );
    section(
        &mut out,
        "Added to direct calls (µs); at 64 connections: throughput, CPU per request \
         (all gateways), each gateway's CPU while measured, and the PostgreSQL \
         server's CPU per request",
        &summary(report),
    );
    out
}

fn summary(report: &SharedReport) -> comfy_table::Table {
    let rows = report.setups.iter().map(|setup| {
        let added = |connections: usize| {
            setup
                .added
                .iter()
                .find(|a| a.concurrency == connections)
                .map_or("-".to_owned(), |a| format!("{} / {}", a.p50_us, a.p99_us))
        };
        let at_64 = (setup.latency.iter()).find(|r| r.target == setup.name && r.concurrency == 64);
        let cpu = |figure: Option<f64>| figure.map_or("-".to_owned(), |c| format!("{c:.1}"));
        let split = (setup.cpu_ms_per_gateway.iter())
            .map(|ms| format!("{ms:.0}"))
            .collect::<Vec<_>>()
            .join(" / ");
        let t = &setup.throughput_64;
        vec![
            setup.name.to_owned(),
            setup.gateways.to_string(),
            added(1),
            added(64),
            format!("{:.0}", t.gateway),
            format!("{:.2}", t.gateway_over_direct),
            cpu(at_64.and_then(|r| r.cpu_us_per_request)),
            split,
            cpu(at_64.and_then(|r| r.database_cpu_us_per_request)),
        ]
    });
    let header = [
        "setup",
        "gateways",
        "p50 / p99 at 1",
        "p50 / p99 at 64",
        "req/s",
        "of direct",
        "CPU µs/req",
        "CPU ms each",
        "PostgreSQL CPU µs/req",
    ];
    plain(&header, rows, &[1, 2, 3, 4, 5, 6, 7, 8])
}
