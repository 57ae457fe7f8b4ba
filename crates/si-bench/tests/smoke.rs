//! The benchmark's smoke run: every phase runs briefly against the real gateway and
//! produces a complete, self-consistent report. No timing is asserted: the figures
//! of a smoke run mean nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::process::Command;

use serde_json::Value;

#[test]
fn the_smoke_run_measures_every_phase_without_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report.json");
    let run = Command::new(env!("CARGO_BIN_EXE_si-bench"))
        .arg("--smoke")
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("Targets"), "{stdout}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(report["mode"], "smoke");

    let rows = report["latency"].as_array().unwrap();
    for target in ["direct", "gateway"] {
        assert!(
            rows.iter().any(|r| r["target"] == target),
            "no {target} rows"
        );
    }
    for row in rows {
        let n = |key: &str| row[key].as_u64().unwrap();
        assert!(n("requests") > 0, "{row}");
        assert!(
            n("p50_us") <= n("p90_us") && n("p90_us") <= n("p99_us"),
            "{row}"
        );
        // nginx is someone else's proxy: only ours must be error-free.
        if row["target"] != "nginx" {
            assert_eq!(n("errors"), 0, "{row}");
        }
        assert!(row["cpu_us_per_request"].as_f64().unwrap() >= 0.0, "{row}");
    }
    assert_eq!(
        report["added"].as_array().unwrap().len(),
        2,
        "one row per concurrency"
    );
    assert!(report["throughput_64"]["gateway"].as_f64().unwrap() > 0.0);
    assert!(report["max_rate"].as_array().unwrap().len() >= 2);
    for row in report["fixed_delay"].as_array().unwrap() {
        assert_eq!(row["errors"], 0, "{row}");
    }

    let streaming = &report["streaming"];
    let streams = streaming["streams"].as_u64().unwrap();
    for target in ["direct", "gateway"] {
        assert_eq!(
            streaming[target]["complete"].as_u64(),
            Some(streams),
            "{streaming}"
        );
        assert_eq!(streaming[target]["failed"].as_u64(), Some(0), "{streaming}");
    }
    // Chunks are 20 ms apart at the mock: a gateway that held them back and sent
    // them together would show gaps near zero.
    let gap_p50 = streaming["gateway"]["gap_us"][0].as_u64().unwrap();
    assert!(gap_p50 >= 10_000, "{streaming}");

    let memory = &report["memory"];
    assert!(memory["idle_kib"].as_u64().unwrap() > 0);
    assert!(memory["peak_under_load_kib"].as_u64().unwrap() > 0);
    assert_eq!(memory["after_rounds_kib"].as_array().unwrap().len(), 2);
    assert_eq!(report["targets"].as_array().unwrap().len(), 7);
}
