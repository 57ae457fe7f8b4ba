//! The targets a run is checked against.

use bytesize::ByteSize;

use crate::report::{Report, TargetCheck};

/// Each target and whether `report` met it.
pub(super) fn checks(report: &Report) -> Vec<TargetCheck> {
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
        measured: ByteSize::kib(m.idle_kib).display().iec().to_string(),
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
