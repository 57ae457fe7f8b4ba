//! `si-cli`: keys, users and health checks for the Synthetic Intelligence platform.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use secrecy::SecretString;
use si_cli::CliError;
use si_cli::commands::{audit, gpu, health, jwt, keys, probe, up, users};
use si_core::{BackendConfig, Config, Environment, Role};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The backends' API keys, in the working directory.
const KEY_FILE: &str = ".api_keys.env";

/// Exit status for an unusable configuration.
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(version, about = "Manage the Synthetic Intelligence platform")]
struct Args {
    /// TOML configuration file (default: the built-in one, see examples/si.toml).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// API keys of the llama-server backends.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Users of the gateway.
    #[command(subcommand)]
    Users(UsersCommand),
    /// The audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
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
    Deploy {
        /// Where the files go.
        #[arg(long, value_name = "DIR", default_value = "rendered")]
        out: PathBuf,
        /// The directory the platform runs in on the host (configuration,
        /// .api_keys.env, models/, logs/); default: the current one.
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
        /// The si-server executable on the host.
        #[arg(long, value_name = "PATH", default_value = "/usr/local/bin/si-server")]
        si_server: PathBuf,
        /// The si-cli executable on the host (for si-platform.service).
        #[arg(long, value_name = "PATH", default_value = "/usr/local/bin/si-cli")]
        si_cli: PathBuf,
        /// The llama-server executable on the host.
        #[arg(
            long,
            value_name = "PATH",
            default_value = "/usr/local/bin/llama-server"
        )]
        llama_server: PathBuf,
        /// The user the services run as.
        #[arg(long, default_value = "si")]
        user: String,
        /// The site's host name.
        #[arg(long, default_value = "localhost")]
        server_name: String,
        /// TLS certificate for nginx.
        #[arg(
            long,
            value_name = "PATH",
            default_value = "/etc/ssl/certs/synthetic-intelligence.crt"
        )]
        tls_cert: PathBuf,
        /// TLS key for nginx.
        #[arg(
            long,
            value_name = "PATH",
            default_value = "/etc/ssl/private/synthetic-intelligence.key"
        )]
        tls_key: PathBuf,
    },
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
    /// Run the whole platform from this configuration: every llama-server, then
    /// the gateway, each restarted with back-off if it exits, logs under
    /// `supervisor.logs_dir`. Stop it with `si-cli stop`, SIGTERM or Ctrl-C (the
    /// gateway drains first, then the model servers stop).
    Up {
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
    },
}

#[derive(Subcommand)]
enum GpuCommand {
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
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
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

#[derive(Subcommand)]
enum AuditCommand {
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

#[derive(Subcommand)]
enum JwtCommand {
    /// Make a new signing secret; the current one stays valid for verification
    /// (restart the gateway to use the new one).
    Rotate,
}

#[derive(Subcommand)]
enum UsersCommand {
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

fn main() -> ExitCode {
    let args = Args::parse();
    if let Command::Serve { listen } = &args.command {
        let mut serve_args: Vec<std::ffi::OsString> = vec!["si-cli serve".into()];
        if let Some(path) = &args.config {
            serve_args.extend(["--config".into(), path.clone().into_os_string()]);
        }
        if let Some(listen) = listen {
            serve_args.extend(["--listen".into(), listen.into()]);
        }
        return si_server::command::main(serve_args);
    }
    // `keys generate` must work even when the key file it replaces is broken.
    let read_key_file = !matches!(args.command, Command::Keys(_));
    let config = match load_config(args.config.as_deref(), read_key_file) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("si-cli: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let config_path = args.config.clone();
    if let Command::Up { apply_plan, detach } = args.command {
        let options = up::UpOptions {
            config_path,
            apply_plan,
        };
        return match up::start(config, &options, detach) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("si-cli: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Command::Deploy { .. } = &args.command {
        return match run_deploy(args.command, &config, config_path) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("si-cli: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match run(args.command, &config) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("si-cli: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(path: Option<&Path>, read_key_file: bool) -> Result<Config, CliError> {
    let vars = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    let mut env = Environment::from_pairs(vars);
    if read_key_file {
        env = env.with_file_defaults(Path::new(KEY_FILE))?;
    }
    Ok(Config::load(path, &env)?)
}

fn run(command: Command, config: &Config) -> Result<bool, CliError> {
    let data_dir = &config.gateway.data_dir;
    match command {
        Command::Keys(command) => run_keys(command, config)?,
        Command::Users(command) => run_users(command, data_dir)?,
        Command::Audit(AuditCommand::Verify { expect_head }) => {
            return audit::verify(
                data_dir,
                expect_head.as_deref(),
                &mut std::io::stdout().lock(),
            );
        }
        Command::Audit(AuditCommand::Export { since, until }) => {
            let out = &mut std::io::stdout().lock();
            audit::export(data_dir, since.as_deref(), until.as_deref(), out)?;
        }
        Command::Jwt(JwtCommand::Rotate) => {
            let kid = jwt::rotate(config)?;
            println!(
                "new JWT signing secret (key id {kid}) in {}",
                data_dir.display()
            );
            println!(
                "restart the gateway to sign with it; tokens signed with the previous secret \
                 stay valid until they expire"
            );
        }
        Command::Gpu(command) => return run_gpu(command, config),
        Command::Deploy { .. } | Command::Up { .. } | Command::Serve { .. } => {}
        Command::Status { json } => {
            let out = &mut std::io::stdout().lock();
            return runtime()?.block_on(up::status(config, json, out));
        }
        Command::Stop => {
            let out = &mut std::io::stdout().lock();
            runtime()?.block_on(up::stop(config, out))?;
        }
        Command::TinyModel { path, seed } => {
            let bytes = si_gpu::gguf::write::tiny_llama(seed);
            std::fs::write(&path, &bytes)
                .map_err(|e| CliError::Message(format!("cannot write {}: {e}", path.display())))?;
            println!("wrote {} ({} bytes)", path.display(), bytes.len());
        }
        Command::Health { gateway } => {
            let gateway = gateway.unwrap_or_else(|| format!("http://{}", config.gateway.listen));
            return runtime()?.block_on(health::check(&gateway, &mut std::io::stdout().lock()));
        }
    }
    Ok(true)
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Message(format!("cannot start the async runtime: {e}")))
}

fn run_deploy(
    command: Command,
    config: &Config,
    config_path: Option<PathBuf>,
) -> Result<(), CliError> {
    let Command::Deploy {
        out,
        root,
        si_server,
        si_cli,
        llama_server,
        user,
        server_name,
        tls_cert,
        tls_key,
    } = command
    else {
        return Ok(());
    };
    let here = std::env::current_dir()
        .map_err(|e| CliError::Message(format!("cannot read the current directory: {e}")))?;
    let root = root.unwrap_or(here.clone());
    let config_file = match config_path {
        Some(path) if path.is_absolute() => path,
        Some(path) => here.join(path),
        None => root.join("si.toml"),
    };
    let layout = si_cli::commands::deploy::Layout {
        root,
        si_server,
        si_cli,
        llama_server,
        config: config_file,
        user,
        server_name,
        tls_certificate: tls_cert,
        tls_key,
    };
    let files = si_cli::commands::deploy::render(config, &layout)?;
    si_cli::commands::deploy::write(&out, &files)?;
    for (name, _) in &files {
        println!("wrote {}", out.join(name).display());
    }
    Ok(())
}

fn run_gpu(command: GpuCommand, config: &Config) -> Result<bool, CliError> {
    let out = &mut std::io::stdout().lock();
    let overhead = config.gpu.process_overhead_bytes;
    let inventory = || {
        si_gpu::inventory::open(&config.gpu)
            .map_err(|e| CliError::Message(format!("cannot read the GPUs: {e}")))
    };
    match command {
        GpuCommand::Estimate {
            model,
            ctx,
            cache_type_k,
            cache_type_v,
            flash_attn,
            ngl,
            json,
        } => {
            let settings = si_gpu::estimate::ServerSettings {
                context: ctx,
                cache_type_k,
                cache_type_v,
                flash_attn: flash_attn != "off",
                gpu_layers: ngl,
                ubatch: si_gpu::estimate::DEFAULT_UBATCH,
            };
            if cache_type_v.is_quantized() && !settings.flash_attn {
                return Err(CliError::Message(
                    "a quantised V cache needs flash attention (--flash-attn on)".into(),
                ));
            }
            gpu::estimate(&model, &settings, overhead, json, out)?;
        }
        GpuCommand::Status { json } => {
            let (inventory, note) = inventory()?;
            gpu::status(config, inventory.as_ref(), note.as_deref(), json, out)?;
        }
        GpuCommand::Plan { json } => {
            let servers = si_gpu::deployment::servers(config, Path::new("."))
                .map_err(|e| CliError::Message(e.to_string()))?;
            let (inventory, note) = inventory()?;
            if let (Some(note), false) = (&note, json) {
                println!("note: {note}\n");
            }
            let readings = inventory
                .read()
                .map_err(|e| CliError::Message(format!("cannot read the GPUs: {e}")))?;
            let gpus = si_gpu::deployment::gpu_specs(&readings);
            let plan = si_gpu::plan::plan(&servers, &gpus, config.gpu.margin_bytes, overhead);
            return gpu::write_plan(config, &plan, json, out);
        }
    }
    Ok(true)
}

fn run_keys(command: KeysCommand, config: &Config) -> Result<(), CliError> {
    let file = Path::new(KEY_FILE);
    match command {
        KeysCommand::Generate { force } => {
            let names = keys::generate(config, file, Path::new(".gitignore"), force)?;
            println!(
                "wrote {} keys to {KEY_FILE} (mode 0600): {}",
                names.len(),
                names.join(", ")
            );
            println!(
                "start each llama-server with its key in LLAMA_API_KEY (see the README); \
                 never with --api-key, which `ps` shows"
            );
        }
        KeysCommand::Rotate { backend } => {
            let runtime = runtime()?;
            let accepts = |b: &BackendConfig, key: &SecretString| {
                runtime.block_on(probe::accepts_key(b, key))
            };
            match keys::rotate(config, file, &backend, accepts)? {
                keys::RotationStep::Staged { current, next } => {
                    println!("added {next} to {KEY_FILE} beside {current}");
                    println!(
                        "now restart llama-server `{backend}` accepting both keys, e.g. \
                         LLAMA_API_KEY=\"${current},${next}\", then run this command again"
                    );
                }
                keys::RotationStep::Switched { current } => {
                    println!(
                        "{current} now holds the new key; a running gateway switches within 2 s"
                    );
                    println!(
                        "then restart llama-server `{backend}` with only the new key \
                         (LLAMA_API_KEY=\"${current}\") to retire the old one"
                    );
                }
            }
        }
    }
    Ok(())
}

fn run_users(command: UsersCommand, data_dir: &Path) -> Result<(), CliError> {
    match command {
        UsersCommand::Add {
            name,
            role,
            location,
            ..
        } => {
            let password = users::read_password(&mut std::io::stdin().lock())?;
            users::add(data_dir, &name, role, &location, &password)?;
            println!("added {role} `{name}` at location `{location}`");
        }
        UsersCommand::Disable { name } => {
            users::set_disabled(data_dir, &name, true)?;
            println!("disabled `{name}`: logins refused, sessions revoked");
        }
        UsersCommand::Enable { name } => {
            users::set_disabled(data_dir, &name, false)?;
            println!("enabled `{name}`");
        }
        UsersCommand::Passwd { name, .. } => {
            let password = users::read_password(&mut std::io::stdin().lock())?;
            users::set_password(data_dir, &name, &password)?;
            println!("new password for `{name}`; their sessions were ended");
        }
        UsersCommand::List => users::list(data_dir, &mut std::io::stdout().lock())?,
    }
    Ok(())
}
