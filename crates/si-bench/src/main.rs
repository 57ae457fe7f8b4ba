//! `si-bench`: how much the gateway adds to a call to llama-server, against calling
//! the server directly and against nginx, in one run on one machine.
//!
//! It starts a mock llama-server and the gateway (this executable again, in other
//! modes, so each is its own process with its own memory figure) and, when
//! installed, nginx; drives them with its own HTTP/1.1 client over loopback; prints
//! a table and writes the figures as JSON. `--smoke` runs every phase briefly to
//! show that the benchmark works; its figures mean nothing. `si-bench shared`
//! measures the gateway on a PostgreSQL store, alone and two side by side, against
//! the gateway on SQLite (module `shared`).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde::Serialize;

mod flood;
mod load;
mod mock;
mod plan;
mod report;
mod shared;
mod stack;

/// The allocator `si-server` uses, so that the gateway measured here is the same.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    version,
    about = "Benchmark the gateway against direct calls and nginx"
)]
struct Args {
    #[command(subcommand)]
    mode: Option<Mode>,
    /// Every phase, briefly: checks that the benchmark runs, measures nothing.
    #[arg(long)]
    smoke: bool,
    /// Where the JSON report goes.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "target/si-bench/report.json"
    )]
    out: PathBuf,
    /// Leave nginx out even if it is installed.
    #[arg(long)]
    no_nginx: bool,
    /// Only the latency sweep and throughput, for quick before/after comparisons
    /// while profiling.
    #[arg(long, conflicts_with = "smoke")]
    quick: bool,
}

#[derive(Subcommand)]
enum Mode {
    /// Run the mock llama-server (used by the benchmark itself).
    #[command(hide = true)]
    Mock {
        #[arg(long)]
        delay_ms: u64,
        #[arg(long)]
        chunks: u32,
        #[arg(long)]
        interval_ms: u64,
    },
    /// Flood the gateway with half-sent requests from one address, then its metrics
    /// port, and time another client's health checks and login meanwhile.
    Flood {
        /// Connections from the flooding address.
        #[arg(long, default_value_t = 12_000)]
        connections: usize,
        /// Connections to the metrics port.
        #[arg(long, default_value_t = 6_000)]
        metrics_connections: usize,
        /// The gateway's open-file limit while its metrics port is flooded.
        #[arg(long, default_value_t = 4_096)]
        metrics_open_files: u64,
        /// An `si-server` binary to measure instead of this executable's gateway.
        #[arg(long, value_name = "PATH")]
        gateway: Option<PathBuf>,
    },
    /// The gateway on SQLite, on a shared PostgreSQL database, and two gateways on
    /// that database with requests split between them, each against direct calls.
    Shared {
        /// A PostgreSQL server (any database on it): the run creates a database of
        /// its own there and drops it at the end.
        #[arg(
            long,
            value_name = "URL",
            default_value = "postgres://postgres@127.0.0.1:5432/postgres"
        )]
        database_url: String,
        /// Redis for the shared gateways' rate-limit counters (`SI_REDIS_URL`);
        /// without it each gateway counts in its own memory.
        #[arg(long, value_name = "URL")]
        redis_url: Option<String>,
        /// Every setup, briefly: checks that the run works, measures nothing.
        #[arg(long)]
        smoke: bool,
        /// Where the JSON report goes.
        #[arg(
            long,
            value_name = "PATH",
            default_value = "target/si-bench/shared.json"
        )]
        out: PathBuf,
    },
    /// Run the gateway, exactly as `si-server` does (used by the benchmark itself).
    #[command(hide = true)]
    Gateway {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    match args.mode {
        Some(Mode::Gateway { args }) => {
            si_server::command::main(std::iter::once(OsString::from("si-server")).chain(args))
        }
        Some(Mode::Mock {
            delay_ms,
            chunks,
            interval_ms,
        }) => match mock::run(delay_ms, chunks, interval_ms) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("si-bench mock: {e}");
                ExitCode::FAILURE
            }
        },
        Some(Mode::Flood {
            connections,
            metrics_connections,
            metrics_open_files,
            gateway,
        }) => {
            let settings = flood::Settings {
                connections,
                metrics_connections,
                metrics_open_files,
                gateway,
            };
            let flooded = std::env::current_exe()
                .map_err(|e| format!("cannot find this executable: {e}"))
                .and_then(|exe| runtime()?.block_on(flood::run(&exe, &settings)));
            match flooded {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("si-bench flood: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Mode::Shared {
            database_url,
            redis_url,
            smoke,
            out,
        }) => {
            let settings = if smoke {
                plan::Settings::smoke()
            } else {
                plan::Settings::full()
            };
            let servers = shared::Servers {
                database_url,
                redis_url,
            };
            run_shared(&settings, &servers, &out)
        }
        None => {
            let settings = if args.smoke {
                plan::Settings::smoke()
            } else if args.quick {
                plan::Settings::quick()
            } else {
                plan::Settings::full()
            };
            run_benchmark(&settings, &args.out, !args.no_nginx)
        }
    }
}

/// The benchmark's async runtime.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

fn run_benchmark(settings: &plan::Settings, out: &std::path::Path, with_nginx: bool) -> ExitCode {
    let measured = runtime().and_then(|runtime| runtime.block_on(plan::run(settings, with_nginx)));
    match measured {
        Ok(report) => publish(&report::table(&report), &report, out),
        Err(e) => {
            eprintln!("si-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_shared(
    settings: &plan::Settings,
    servers: &shared::Servers,
    out: &std::path::Path,
) -> ExitCode {
    let measured = runtime().and_then(|runtime| runtime.block_on(shared::run(settings, servers)));
    match measured {
        Ok(report) => publish(&shared::table(&report), &report, out),
        Err(e) => {
            eprintln!("si-bench shared: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints `table` and writes `report` as JSON to `out`.
fn publish(table: &str, report: &impl Serialize, out: &std::path::Path) -> ExitCode {
    print!("{table}");
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
    match serde_json::to_string_pretty(report)
        .map_err(|e| e.to_string())
        .and_then(|json| std::fs::write(out, json + "\n").map_err(|e| e.to_string()))
    {
        Ok(()) => {
            println!("\nreport: {}", out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("si-bench: cannot write {}: {e}", out.display());
            ExitCode::FAILURE
        }
    }
}
