//! The benchmark's smoke runs: every phase runs briefly against the real gateway and
//! produces a complete, self-consistent report; so does every setup of the
//! shared-store run (ignored unless PostgreSQL is at hand). No timing is asserted:
//! the figures of a smoke run mean nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::process::Command;

use serde_json::Value;

/// Runs `si-bench` with `args` and `--out`; what it printed and the report it
/// wrote, once it has succeeded.
fn bench(args: &[&str]) -> (String, Value) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report.json");
    let run = Command::new(env!("CARGO_BIN_EXE_si-bench"))
        .args(args)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(report["mode"], "smoke");
    (stdout, report)
}

#[test]
fn the_smoke_run_measures_every_phase_without_errors() {
    let (stdout, report) = bench(&["--smoke"]);
    assert!(stdout.contains("Targets"), "{stdout}");

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

/// The server the shared-store run creates its database on, as the gateway's
/// shared-store tests reach it (`.ci/postgres` makes sure one answers).
fn postgres_server() -> String {
    std::env::var("SI_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

#[test]
#[ignore = "needs PostgreSQL: .ci/run starts one and runs this with --ignored"]
fn the_shared_store_smoke_run_measures_every_setup_and_drops_its_database() {
    let server = postgres_server();
    let (stdout, report) = bench(&["shared", "--smoke", "--database-url", &server]);
    assert!(stdout.contains("postgres x2"), "{stdout}");
    let setups = report["setups"].as_array().unwrap();
    let shape: Vec<(&str, u64)> = setups
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["gateways"].as_u64().unwrap()))
        .collect();
    assert_eq!(shape, [("sqlite", 1), ("postgres", 1), ("postgres x2", 2)]);
    for setup in setups {
        let rows = setup["latency"].as_array().unwrap();
        assert_eq!(rows.len(), 4, "direct and through, at 1 and 64: {setup}");
        for row in rows {
            assert!(row["requests"].as_u64().unwrap() > 0, "{row}");
            assert_eq!(row["errors"], 0, "{row}");
            assert!(row["cpu_us_per_request"].as_f64().unwrap() >= 0.0, "{row}");
        }
        assert_eq!(setup["added"].as_array().unwrap().len(), 2, "{setup}");
        assert!(setup["throughput_64"]["gateway"].as_f64().unwrap() > 0.0);
        // Both of a pair served: the connections were split between them.
        for cpu in setup["cpu_ms_per_gateway"].as_array().unwrap() {
            assert!(cpu.as_f64().unwrap() > 0.0, "{setup}");
        }
    }

    let database = report["database"].as_str().unwrap().to_owned();
    assert!(database.starts_with("si_bench_"), "{database}");
    let left = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let (client, connection) = tokio_postgres::connect(&server, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .query("SELECT 1 FROM pg_database WHERE datname = $1", &[&database])
            .await
            .unwrap()
            .len()
    });
    assert_eq!(left, 0, "the run left its database {database} behind");
}
