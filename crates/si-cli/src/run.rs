//! `si-cli`: arguments to the command they name, and its outcome to an exit
//! status, in one place.

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use si_core::{Config, Environment};

use crate::CliError;
use crate::args::{
    ApikeysCommand, Args, AuditCommand, Command, DbCommand, JwtCommand, UsersCommand,
};
use crate::commands::{apikeys, audit, deploy, gpu, health, jwt, keys, up, users};

/// Exit status for an unusable configuration.
const EXIT_CONFIG: u8 = 64;

/// Runs `si-cli` with `args` (the program name first): 0 on success, 1 when a
/// check failed or a command could not be done, 64 on an unusable configuration.
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let args = match Args::try_parse_from(args) {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(args) {
        Ok(code) => code,
        Err(Stop::Config(e)) => {
            eprintln!("si-cli: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(Stop::Failed(e)) => {
            eprintln!("si-cli: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Why a command did not run to its end.
enum Stop {
    /// The configuration is unusable.
    Config(CliError),
    /// The command failed.
    Failed(CliError),
}

impl From<CliError> for Stop {
    fn from(e: CliError) -> Self {
        Stop::Failed(e)
    }
}

/// The command `args` names.
fn run(args: Args) -> Result<ExitCode, Stop> {
    if let Command::Serve { listen } = &args.command {
        return Ok(serve(args.config.as_deref(), listen.as_deref()));
    }
    // `keys generate` must work even when the key file it replaces is broken.
    let read_key_file = !matches!(args.command, Command::Keys(_));
    let config = load_config(args.config.as_deref(), read_key_file).map_err(Stop::Config)?;
    let config_path = args.config;
    let fine = match args.command {
        Command::Up {
            host,
            no_gateway,
            apply_plan,
            detach,
        } => {
            let options = up::UpOptions {
                config_path,
                apply_plan,
                host: Some(host.unwrap_or_else(up::this_host_name)),
                without_gateway: no_gateway,
            };
            up::start(config, &options, detach)?
        }
        Command::Deploy(layout) => deploy::run(&config, layout, config_path)?,
        Command::Keys(command) => keys::run(command, &config)?,
        Command::Serve { .. } => true,
        other => crate::runtime()?.block_on(dispatch(other, &config))?,
    };
    Ok(if fine {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn dispatch(command: Command, config: &Config) -> Result<bool, CliError> {
    let out = &mut std::io::stdout();
    match command {
        Command::Users(command) => run_users(command, config, out).await?,
        Command::Apikeys(ApikeysCommand::Create {
            name,
            role,
            location,
            expires,
            forward_user,
            rate_limit,
        }) => {
            let made = apikeys::Made {
                role,
                location: &location,
                expires,
                forward_user,
                rate_limit,
            };
            let key = apikeys::create(config, &name, made).await?;
            say(out, &apikeys::announce(&name, &key))?;
        }
        Command::Apikeys(ApikeysCommand::List) => apikeys::list(config, out).await?,
        Command::Apikeys(ApikeysCommand::Revoke { name }) => {
            apikeys::revoke(config, &name).await?;
            say(
                out,
                &format!("revoked API key `{name}`: every gateway refuses it within a second"),
            )?;
        }
        Command::Db(DbCommand::Migrate) => {
            let place = si_store::AccountStores::migrate(config)
                .await
                .map_err(|e| CliError::Message(e.to_string()))?;
            say(out, &format!("{place}: schema up to date"))?;
        }
        Command::Audit(AuditCommand::Verify { expect_head }) => {
            return audit::verify(config, expect_head.as_deref(), out).await;
        }
        Command::Audit(AuditCommand::Export { since, until }) => {
            audit::export(config, since.as_deref(), until.as_deref(), out).await?;
        }
        Command::Jwt(JwtCommand::Rotate) => {
            let kid = jwt::rotate(config)?;
            let data_dir = config.gateway.data_dir.display();
            say(
                out,
                &format!("new JWT signing secret (key id {kid}) in {data_dir}"),
            )?;
            say(
                out,
                "restart the gateway to sign with it; tokens signed with the previous secret \
                 stay valid until they expire",
            )?;
        }
        Command::Gpu(command) => return gpu::run(command, config, out),
        Command::Status { json } => return up::status(config, json, out).await,
        Command::Stop => {
            up::stop(config, out).await?;
        }
        Command::TinyModel { path, seed } => gpu::write_tiny_model(&path, seed, out)?,
        Command::Health { gateway, metrics } => {
            let gateway = gateway.unwrap_or_else(|| format!("http://{}", config.gateway.listen));
            let metrics = metrics.or_else(|| {
                (config.gateway.metrics_listen).map(|address| format!("http://{address}"))
            });
            return health::check(&gateway, metrics.as_deref(), out).await;
        }
        Command::Up { .. } | Command::Deploy(_) | Command::Keys(_) | Command::Serve { .. } => {}
    }
    Ok(true)
}

async fn run_users(
    command: UsersCommand,
    config: &Config,
    out: &mut impl std::io::Write,
) -> Result<(), CliError> {
    let mut said = |line: String| say(out, &line);
    match command {
        UsersCommand::Add {
            name,
            role,
            location,
            ..
        } => {
            let password = users::read_password(&mut std::io::stdin().lock())?;
            users::add(config, &name, role, &location, &password).await?;
            said(format!("added {role} `{name}` at location `{location}`"))
        }
        UsersCommand::Disable { name } => {
            users::set_disabled(config, &name, true).await?;
            said(format!(
                "disabled `{name}`: logins refused, sessions revoked"
            ))
        }
        UsersCommand::Enable { name } => {
            users::set_disabled(config, &name, false).await?;
            said(format!("enabled `{name}`"))
        }
        UsersCommand::Passwd { name, .. } => {
            let password = users::read_password(&mut std::io::stdin().lock())?;
            users::set_password(config, &name, &password).await?;
            said(format!(
                "new password for `{name}`; their sessions were ended"
            ))
        }
        UsersCommand::List => users::list(config, out).await,
    }
}

/// `si-cli serve`: exactly what `si-server` runs.
fn serve(config: Option<&Path>, listen: Option<&str>) -> ExitCode {
    let mut args: Vec<OsString> = vec!["si-cli serve".into()];
    if let Some(path) = config {
        args.extend(["--config".into(), path.as_os_str().to_owned()]);
    }
    if let Some(listen) = listen {
        args.extend(["--listen".into(), listen.into()]);
    }
    si_server::command::main(args)
}

/// The configuration, with the process environment and (unless told not to)
/// `.api_keys.env` beneath it.
fn load_config(path: Option<&Path>, read_key_file: bool) -> Result<Config, CliError> {
    let vars = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    let mut env = Environment::from_pairs(vars);
    if read_key_file {
        env = env.with_file_defaults(Path::new(keys::KEY_FILE))?;
    }
    Ok(Config::load(path, &env)?)
}

/// Writes one line for a person to `out`.
fn say(out: &mut impl std::io::Write, line: &str) -> Result<(), CliError> {
    writeln!(out, "{line}").map_err(|e| CliError::Message(format!("cannot write output: {e}")))
}
