//! The report as text: a few lines of prose and plain tables, one per phase.

use std::fmt::Write;

use bytesize::ByteSize;
use comfy_table::presets::NOTHING;
use comfy_table::{CellAlignment, Row, Table};

use super::{LatencyRow, Machine, Report, StreamRow};

/// The report as readable tables.
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    heading(&mut out, "si-bench", report.mode, &report.machine);
    latency(&mut out, report);
    throughput(&mut out, report);
    rates(&mut out, report);
    streaming(&mut out, report);
    memory(&mut out, report);
    targets(&mut out, report);
    out
}

/// The first lines of a report: which run, where, and whether its figures count.
pub(crate) fn heading(out: &mut String, run: &str, mode: &str, m: &Machine) {
    let _ = writeln!(
        out,
        "{run} ({mode}) on {} CPUs, {}, Linux {}",
        m.cpus, m.cpu, m.kernel
    );
    if mode == "smoke" {
        let _ = writeln!(
            out,
            "smoke run: every phase ran briefly; the figures mean nothing"
        );
    }
}

/// A borderless table of `rows` under `header` (none when empty), its columns two
/// spaces apart; the columns numbered in `right` (figures) are right-aligned.
pub(crate) fn plain<R: Into<Row>>(
    header: &[&str],
    rows: impl IntoIterator<Item = R>,
    right: &[usize],
) -> Table {
    let mut table = Table::new();
    table.load_style(NOTHING);
    if !header.is_empty() {
        table.set_header(header.to_vec());
    }
    table.add_rows(rows);
    for (i, column) in table.column_iter_mut().enumerate() {
        column.set_padding((0, 2));
        if right.contains(&i) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    table
}

/// Writes `title`, then `table` without trailing spaces.
pub(crate) fn section(out: &mut String, title: &str, table: &Table) {
    let _ = writeln!(out, "\n{title}\n{}", table.trim_fmt());
}

fn latency(out: &mut String, report: &Report) {
    section(
        out,
        "Latency, zero-delay mock (µs)",
        &latency_table(&report.latency),
    );
    let rows = report.added.iter().map(|row| {
        [row.concurrency as i64, row.p50_us, row.p90_us, row.p99_us].map(|n| n.to_string())
    });
    let table = plain(&["conns", "p50", "p90", "p99"], rows, &[0, 1, 2, 3]);
    section(out, "Added by the gateway (µs)", &table);
}

/// Closed-loop rows: target, connections, percentiles, rate, errors, CPU.
pub(crate) fn latency_table(rows: &[LatencyRow]) -> Table {
    let rows = rows.iter().map(|row| {
        let cpu = row
            .cpu_us_per_request
            .map_or(String::new(), |c| format!("{c:.1}"));
        vec![
            row.target.to_owned(),
            row.concurrency.to_string(),
            row.p50_us.to_string(),
            row.p90_us.to_string(),
            row.p99_us.to_string(),
            format!("{:.0}", row.requests_per_second),
            row.errors.to_string(),
            cpu,
        ]
    });
    let header = [
        "target",
        "conns",
        "p50",
        "p90",
        "p99",
        "req/s",
        "errors",
        "CPU µs/req",
    ];
    plain(&header, rows, &[1, 2, 3, 4, 5, 6, 7])
}

fn throughput(out: &mut String, report: &Report) {
    let t = &report.throughput_64;
    let _ = writeln!(
        out,
        "\nThroughput at 64 connections: direct {:.0}/s, gateway {:.0}/s ({:.2} of direct), nginx {}",
        t.direct,
        t.gateway,
        t.gateway_over_direct,
        match (t.nginx, t.gateway_over_nginx) {
            (Some(n), Some(r)) => format!("{n:.0}/s; gateway/nginx = {r:.2}"),
            _ => "not installed".into(),
        }
    );
}

fn rates(out: &mut String, report: &Report) {
    let rows = (report.max_rate.iter()).map(|rate| {
        [
            rate.target.to_owned(),
            format!("{:.0} req/s", rate.requests_per_second),
        ]
    });
    let table = plain(&[], rows, &[1]);
    section(out, "Highest rate with p99 < 5 ms and no errors", &table);
    let rows = report.fixed_delay.iter().map(|row| {
        [
            row.target.to_owned(),
            row.p50_us.to_string(),
            row.p99_us.to_string(),
            format!("{:.0}", row.requests_per_second),
            row.errors.to_string(),
        ]
    });
    let header = ["target", "p50", "p99", "req/s", "errors"];
    let table = plain(&header, rows, &[1, 2, 3, 4]);
    section(out, "Fixed-delay mock, 256 connections (µs)", &table);
}

fn streaming(out: &mut String, report: &Report) {
    let s = &report.streaming;
    let row = |name: &str, row: &StreamRow| {
        let (first, gap) = (row.first_chunk_us, row.gap_us);
        let figures = [row.complete, row.failed, first.0, first.1, gap.0, gap.1];
        let mut cells = vec![name.to_owned()];
        cells.extend(figures.map(|n| n.to_string()));
        cells
    };
    let (first, gap) = (s.extra_first_chunk_us, s.extra_gap_us);
    let mut added = vec!["added".to_owned(), String::new(), String::new()];
    added.extend([first.0, first.1, gap.0, gap.1].map(|n| n.to_string()));
    let rows = [row("direct", &s.direct), row("gateway", &s.gateway), added];
    let header = [
        "",
        "whole",
        "failed",
        "first chunk p50",
        "p99",
        "gap p50",
        "p99",
    ];
    let table = plain(&header, rows, &[1, 2, 3, 4, 5, 6]);
    let title = format!(
        "Streaming: {} streams started over {} ms, each {} chunks {} ms apart (µs)",
        s.streams, s.ramp_ms, s.chunks, s.interval_ms
    );
    section(out, &title, &table);
}

fn memory(out: &mut String, report: &Report) {
    let mem = &report.memory;
    let size = |kib: u64| ByteSize::kib(kib).display().iec().to_string();
    let rounds: Vec<String> = mem.after_rounds_kib.iter().map(|k| size(*k)).collect();
    // Growth may be negative, which ByteSize cannot show.
    let _ = writeln!(
        out,
        "\nGateway memory (RSS): idle {}, peak under load {}, peak with streams {}, after each round {}, growth {:+.1} MiB",
        size(mem.idle_kib),
        size(mem.peak_under_load_kib),
        size(mem.peak_streaming_kib),
        rounds.join(" → "),
        mem.growth_kib as f64 / 1024.0
    );
}

fn targets(out: &mut String, report: &Report) {
    let rows = report.targets.iter().map(|check| {
        let verdict = match check.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "not measured",
        };
        [check.name, &check.target, &check.measured, verdict]
    });
    section(out, "Targets", &plain(&[], rows, &[]));
}
