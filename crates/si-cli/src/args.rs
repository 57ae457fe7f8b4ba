//! `si-cli`'s command line, parsed by clap: every command, its arguments and
//! their help.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use si_core::Role;

/// `si-cli`'s arguments.
#[derive(Parser)]
#[command(version, about = "Manage the Synthetic Intelligence platform")]
pub struct Args {
    /// TOML configuration file (default: the built-in one, see examples/si.toml).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// A command.
#[derive(Subcommand)]
pub enum Command {
    /// API keys of the llama-server backends.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Users of the gateway.
    #[command(subcommand)]
    Users(UsersCommand),
    /// API keys for applications (a chat front end, the EHR, a batch job).
    #[command(subcommand)]
    Apikeys(ApikeysCommand),
    /// The audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The account database (users, sessions, revocations).
    #[command(subcommand)]
    Db(DbCommand),
    /// The gateway's token signing secret.
    #[command(subcommand)]
    Jwt(JwtCommand),
    /// GPU memory: estimate one server, show the GPUs, plan the placement.
    #[command(subcommand)]
    Gpu(GpuCommand),
    /// Render, from this configuration, the files other tools run the platform with:
    /// PM2 ecosystem.config.js, systemd units (one per process, or
    /// si-platform.service running `si-cli up`), an nginx site, prometheus.yml.
    #[command(alias = "render")]
    Deploy(DeployArgs),
    /// Write a tiny random-weight llama model (a few hundred KB) that llama-server
    /// loads and answers with in milliseconds: for tests and trying the stack
    /// without downloading a model. Its answers are random letters.
    TinyModel {
        /// Where to write it.
        path: PathBuf,
        /// The weights' seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Run the whole platform from this configuration: every llama-server this
    /// host runs, then the gateway, each restarted with back-off if it exits, logs
    /// under `supervisor.logs_dir`. Stop it with `si-cli stop`, SIGTERM or Ctrl-C
    /// (the gateway drains first, then the model servers stop).
    Up {
        /// The GPU host this is (default: this machine's host name): only the
        /// backends whose `host` is NAME run here, or with no `host`, those whose
        /// URL names NAME, a loopback address, localhost or an address of this
        /// machine. The others are left to their hosts.
        #[arg(long, value_name = "NAME", value_parser = host_name)]
        host: Option<String>,
        /// Run the model servers alone, no gateway: for a GPU host whose gateways
        /// run elsewhere.
        #[arg(long)]
        no_gateway: bool,
        /// Start with the GPU plan's changes (`si-cli gpu plan`) when the configured
        /// placement does not fit the GPUs.
        #[arg(long)]
        apply_plan: bool,
        /// Run in the background: return once the gateway has started (exit 1
        /// unless every process is then ready), the supervisor's own log in
        /// `supervisor.logs_dir`/supervisor.log.
        #[arg(long)]
        detach: bool,
    },
    /// Each supervised process: pid, state, uptime, restarts, health, port, GPU.
    /// Exit 1 unless every one is ready and healthy.
    Status {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop what `si-cli up` runs: the gateway first (it drains its requests),
    /// then the model servers.
    Stop,
    /// Run the gateway itself, exactly as `si-server` does (what `si-cli up`
    /// supervises).
    Serve {
        /// Address to listen on, overriding `gateway.listen`.
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
    },
    /// Show the gateway's and each backend's health; exit 1 if any is not ok.
    Health {
        /// The gateway's base URL (default: http:// + `gateway.listen`).
        #[arg(long, value_name = "URL")]
        gateway: Option<String>,
        /// Its metrics listener, which shows each backend (default: http:// +
        /// `gateway.metrics_listen`).
        #[arg(long, value_name = "URL")]
        metrics: Option<String>,
    },
}

/// `si-cli gpu ...`
#[derive(Subcommand)]
pub enum GpuCommand {
    /// The GPU memory one llama-server needs for MODEL, by part.
    Estimate {
        /// The GGUF file (a header-only file works).
        model: PathBuf,
        /// Context size (-c).
        #[arg(long, default_value_t = si_gpu::deployment::DEFAULT_CONTEXT,
              value_parser = clap::value_parser!(u64).range(256..=4_194_304))]
        ctx: u64,
        /// K cache type (f16, q8_0, q4_0, ...).
        #[arg(long, default_value = "f16")]
        cache_type_k: si_gpu::estimate::CacheType,
        /// V cache type (a quantised one needs flash attention).
        #[arg(long, default_value = "f16")]
        cache_type_v: si_gpu::estimate::CacheType,
        /// Flash attention: on (auto counts as on) or off.
        #[arg(long, default_value = "on", value_parser = ["on", "off", "auto"])]
        flash_attn: String,
        /// Layers offloaded (-ngl); default all.
        #[arg(long)]
        ngl: Option<u32>,
        /// Bytes as JSON under weights, kv_cache, compute, overhead, total.
        #[arg(long)]
        json: bool,
    },
    /// The GPUs now: memory, utilisation, temperature, and which backend each
    /// process serves.
    Status {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Place every configured llama-server on the GPUs with a margin free; say what
    /// to change when they do not fit. Exit 1 if some fit nowhere.
    Plan {
        /// Only the servers the GPU host NAME runs (its backends' `host`, or the
        /// host in their URL), as `si-cli up --host NAME` starts them.
        #[arg(long, value_name = "NAME", value_parser = host_name)]
        host: Option<String>,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `si-cli keys ...`
#[derive(Subcommand)]
pub enum KeysCommand {
    /// Rotate one backend's key in two steps, with no failed request: the first
    /// run adds a new key beside the old one; restart that llama-server accepting
    /// both; the second run switches the gateway to the new key.
    Rotate {
        /// The backend, e.g. biomistral-7b-8085.
        backend: String,
    },
    /// Write `.api_keys.env` with a new random key per backend (mode 0600).
    Generate {
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
}

/// `si-cli audit ...`
#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain; exit 1 and name the first bad record if it is broken.
    Verify {
        /// A chain head hash copied earlier (the gateway logs one every 1,000
        /// records): also fail if no record has it (records cut off or rewritten).
        #[arg(long, value_name = "HASH")]
        expect_head: Option<String>,
    },
    /// Write records as JSON lines to standard output.
    Export {
        /// From this time on (RFC 3339, e.g. 2026-11-26T00:00:00Z, or a date).
        #[arg(long)]
        since: Option<String>,
        /// Before this time.
        #[arg(long)]
        until: Option<String>,
    },
}

/// `si-cli db ...`
#[derive(Subcommand)]
pub enum DbCommand {
    /// Bring the account database's schema up to date (the SQLite file, or the
    /// PostgreSQL database `store.database_url` names), for deployments whose
    /// gateways run with `store.migrate_at_start = false`.
    Migrate,
}

/// `si-cli jwt ...`
#[derive(Subcommand)]
pub enum JwtCommand {
    /// Make a new signing secret; the current one stays valid for verification
    /// (restart the gateway to use the new one).
    Rotate,
}

/// `si-cli apikeys ...`
#[derive(Subcommand)]
pub enum ApikeysCommand {
    /// Make a key; it is printed once, and only its hash is kept.
    Create {
        /// Its name (what the audit trail calls it), e.g. open-webui.
        name: String,
        /// The role it acts with: admin, clinician or billing.
        #[arg(long)]
        role: Role,
        /// The location it acts at.
        #[arg(long)]
        location: String,
        /// How long it works, e.g. 90d or 12h; without it, until revoked.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires: Option<std::time::Duration>,
        /// It may name the person it acts for, as a chat front end with user
        /// forwarding does (X-OpenWebUI-User-Email, -Id or -Name): the audit then
        /// records that person, and per-user limits apply to them.
        #[arg(long)]
        forward_user: bool,
        /// Its own quota, in requests per minute, on top of the per-user,
        /// per-location and per-address limits (shared by every gateway when
        /// they count in Redis); without it, none of its own.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        rate_limit: Option<u32>,
    },
    /// List keys: name, role, location, created, last used, expiry, rate limit,
    /// whether it forwards users (never the keys themselves).
    List,
    /// Revoke a key: every gateway refuses it within a second.
    Revoke {
        /// Its name.
        name: String,
    },
}

/// `si-cli users ...`
#[derive(Subcommand)]
pub enum UsersCommand {
    /// Add a user; the password is read from standard input.
    Add {
        /// Login name.
        name: String,
        /// admin, clinician or billing.
        #[arg(long)]
        role: Role,
        /// The location the user logs in at (`*` for any).
        #[arg(long)]
        location: String,
        /// Read the password from standard input (required: never on the command line).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// List users.
    List,
    /// Stop a user from logging in; their tokens stop working within a second.
    Disable {
        /// Login name.
        name: String,
    },
    /// Let a disabled user log in again.
    Enable {
        /// Login name.
        name: String,
    },
    /// Set a new password (read from standard input); ends the user's sessions.
    Passwd {
        /// Login name.
        name: String,
        /// Read the password from standard input (required: never on the command line).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
}

/// Where the files `si-cli deploy` renders expect things on the host.
#[derive(clap::Args)]
pub struct DeployArgs {
    /// Where the files go.
    #[arg(long, value_name = "DIR", default_value = "rendered")]
    pub out: PathBuf,
    /// The directory the platform runs in on the host (configuration,
    /// .api_keys.env, models/, logs/); default: the current one.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// The si-server executable on the host.
    #[arg(long, value_name = "PATH", default_value = "/usr/local/bin/si-server")]
    pub si_server: PathBuf,
    /// The si-cli executable on the host (for si-platform.service).
    #[arg(long, value_name = "PATH", default_value = "/usr/local/bin/si-cli")]
    pub si_cli: PathBuf,
    /// The llama-server executable on the host.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/usr/local/bin/llama-server"
    )]
    pub llama_server: PathBuf,
    /// The user the services run as.
    #[arg(long, default_value = "si")]
    pub user: String,
    /// The site's host name.
    #[arg(long, default_value = "localhost")]
    pub server_name: String,
    /// TLS certificate for nginx.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/etc/ssl/certs/synthetic-intelligence.crt"
    )]
    pub tls_cert: PathBuf,
    /// TLS key for nginx.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/etc/ssl/private/synthetic-intelligence.key"
    )]
    pub tls_key: PathBuf,
    /// Render the model servers of the GPU host NAME alone (its backends' `host`,
    /// or the host in their URL; loopback ones run on every host), as `si-cli up
    /// --host NAME` runs them; default: every backend.
    #[arg(long, value_name = "NAME", value_parser = host_name)]
    pub host: Option<String>,
}

/// A GPU host's name, as a backend's `host` may be written.
fn host_name(text: &str) -> Result<String, String> {
    if si_core::config::is_host_name(text) {
        Ok(text.to_owned())
    } else {
        Err("expected a host name such as gpu-a (letters, digits, `-`, `.`, `_`)".into())
    }
}
