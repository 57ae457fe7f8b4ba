//! `si-bench shared`: what sharing the store costs the gateway. In one run, beside
//! calls straight to the mock llama-server: the gateway on SQLite files of its own
//! (as the main run measures it); one gateway on a PostgreSQL database; and two
//! gateways on that database with one signing secret, the load generator's
//! connections split between them with nothing in between, so that nothing but the
//! gateways is measured.

mod database;
mod report;

use std::path::Path;
use std::time::Duration;

use crate::load::{self, Target};
use crate::plan::{self, CHAT, Settings};
use crate::report::{LatencyRow, Machine, Throughput};
use crate::stack::{self, Launch, Shared, Store};
use database::BenchDatabase;
pub use report::{SetupReport, SharedReport, table};

/// The servers the shared setups use.
pub struct Servers {
    /// A PostgreSQL server, by a URL naming any database on it; the run creates a
    /// database of its own there.
    pub database_url: String,
    /// Redis for the rate-limit counters, when the gateways are to share them.
    pub redis_url: Option<String>,
}

/// Connections measured: one, for the latency a lone request sees, and 64, the
/// main run's throughput point.
const CONNECTIONS: [usize; 2] = [1, 64];

/// One arrangement of gateways under test.
struct Setup {
    name: &'static str,
    /// One per gateway.
    stores: Vec<Store>,
}

impl Setup {
    /// Whether its gateways keep their state in the shared database.
    fn shares(&self) -> bool {
        self.stores.iter().any(|s| matches!(s, Store::Shared(_)))
    }
}

/// What every setup is measured with.
struct Bench<'a> {
    exe: &'a Path,
    settings: &'a Settings,
    mock: &'a stack::Mock,
    /// The PostgreSQL server's main process, when it runs on this machine.
    database_server: Option<u32>,
}

/// Measures every setup in a database created for the run, and drops it (an
/// interrupted run leaves it behind, named in its first line); each measurement
/// as long as the main run's (`settings`), at [`CONNECTIONS`] only.
pub async fn run(settings: &Settings, servers: &Servers) -> Result<SharedReport, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let database = BenchDatabase::create(&servers.database_url).await?;
    eprintln!("database {} (dropped at the end)", database.name());
    let measured = match setups(&database, servers) {
        Ok(setups) => measure_all(&exe, settings, setups, database.server_process()).await,
        Err(e) => Err(e),
    };
    let name = database.name().to_owned();
    let dropped = database.remove().await;
    let setups = measured?;
    dropped?;
    Ok(SharedReport {
        mode: settings.mode,
        machine: Machine::this(),
        database: name,
        redis: servers.redis_url.is_some(),
        setups,
    })
}

/// SQLite; one gateway on the shared database; two on it, one secret between them.
fn setups(database: &BenchDatabase, servers: &Servers) -> Result<Vec<Setup>, String> {
    let jwt_secret = stack::random_secret()?;
    let shared = |name: &str| {
        Store::Shared(Shared {
            database_url: database.url().to_owned(),
            redis_url: servers.redis_url.clone(),
            jwt_secret: jwt_secret.clone(),
            name: name.to_owned(),
        })
    };
    Ok(vec![
        Setup {
            name: "sqlite",
            stores: vec![Store::Own],
        },
        Setup {
            name: "postgres",
            stores: vec![shared("bench-solo")],
        },
        Setup {
            name: "postgres x2",
            stores: vec![shared("bench-a"), shared("bench-b")],
        },
    ])
}

/// Starts the mock once and measures each setup in turn, its gateways stopped
/// before the next one's start.
async fn measure_all(
    exe: &Path,
    settings: &Settings,
    setups: Vec<Setup>,
    database_server: Option<u32>,
) -> Result<Vec<SetupReport>, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    // Only its zero-delay listener is used.
    let mock = stack::start_mock(exe, 0, 1, 1)?;
    let bench = Bench {
        exe,
        settings,
        mock: &mock,
        database_server,
    };
    let mut reports = Vec::with_capacity(setups.len());
    for (index, setup) in setups.into_iter().enumerate() {
        let dir = dir.path().join(format!("setup-{index}"));
        reports.push(measure(&bench, setup, &dir).await?);
    }
    Ok(reports)
}

/// One setup: its gateways started, warmed up, and measured at each of
/// [`CONNECTIONS`] right after direct calls at the same number, so that a drift
/// in the shared machine's speed between setups does not count as added latency.
async fn measure(bench: &Bench<'_>, setup: Setup, dir: &Path) -> Result<SetupReport, String> {
    let (settings, mock) = (bench.settings, bench.mock);
    let database_server = bench.database_server.filter(|_| setup.shares());
    let gateways = start_gateways(bench.exe, mock, setup.stores, dir).await?;
    // One token for all, the first gateway's: the others honour it, as they must
    // behind a load balancer.
    let authorization = gateways
        .first()
        .map(|g| g.authorization.clone())
        .ok_or("a setup without a gateway")?;
    let through: Vec<Target> = gateways
        .iter()
        .map(|g| plan::target(g.address, Some(&authorization), CHAT))
        .collect();
    let direct = [plan::target(mock.immediate, None, CHAT)];
    let pids: Vec<u32> = gateways.iter().map(|g| g.process.pid()).collect();
    eprintln!("{}: warming up", setup.name);
    load::closed_loop_across(&through, 16, Duration::ZERO, settings.warmup * 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The server's processes once the gateways' pools hold their connections, so
    // that the backends serving them are among them.
    let database = database_server.map_or(Vec::new(), stack::with_children);

    let times = (settings.warmup, settings.duration);
    let cpu_before: Vec<Option<u64>> = pids.iter().map(|&pid| stack::cpu_micros(pid)).collect();
    let mut latency = Vec::new();
    for connections in CONNECTIONS {
        let mock_pid = [mock.process.pid()];
        latency.push(plan::latency_row("direct", &direct, connections, times, &mock_pid).await);
        let row = plan::latency_row(setup.name, &through, connections, times, &pids);
        latency.push(with_database_cpu(row, &database, times).await);
    }
    let cpu_ms_per_gateway = (pids.iter().zip(cpu_before))
        .map(|(&pid, before)| match (before, stack::cpu_micros(pid)) {
            (Some(before), Some(after)) => after.saturating_sub(before) as f64 / 1_000.0,
            _ => 0.0,
        })
        .collect();
    let added = plan::added(&latency, &CONNECTIONS, setup.name);
    Ok(SetupReport {
        name: setup.name,
        gateways: gateways.len(),
        throughput_64: throughput_64(&latency, setup.name),
        cpu_ms_per_gateway,
        latency,
        added,
    })
}

/// `row`, measured, with the CPU time the database server's processes
/// `database` (none: not measured) spent per request meanwhile.
async fn with_database_cpu(
    row: impl std::future::Future<Output = LatencyRow>,
    database: &[u32],
    times: (Duration, Duration),
) -> LatencyRow {
    let before = stack::cpu_micros_all(database).filter(|_| !database.is_empty());
    let mut row = row.await;
    if let (Some(before), Some(after)) = (before, stack::cpu_micros_all(database)) {
        let used = after.saturating_sub(before);
        row.database_cpu_us_per_request = Some(plan::cpu_per_request(used, row.requests, times));
    }
    row
}

/// A gateway on each of `stores`, each in a directory of its own under `dir`.
async fn start_gateways(
    exe: &Path,
    mock: &stack::Mock,
    stores: Vec<Store>,
    dir: &Path,
) -> Result<Vec<stack::Gateway>, String> {
    let mut gateways = Vec::with_capacity(stores.len());
    for (index, store) in stores.into_iter().enumerate() {
        let launch = Launch {
            store,
            ..Launch::embedded(exe)
        };
        let dir = dir.join(format!("gateway-{index}"));
        gateways.push(stack::start_gateway(&launch, mock, &dir).await?);
    }
    Ok(gateways)
}

/// Requests per second at 64 connections, from the rows measured there.
fn throughput_64(rows: &[LatencyRow], through: &str) -> Throughput {
    let rate = |name: &str| {
        rows.iter()
            .find(|r| r.target == name && r.concurrency == 64)
            .map_or(0.0, |r| r.requests_per_second)
    };
    let (direct, gateway) = (rate("direct"), rate(through));
    Throughput {
        direct,
        gateway,
        nginx: None,
        gateway_over_nginx: None,
        gateway_over_direct: gateway / direct.max(1e-9),
    }
}
