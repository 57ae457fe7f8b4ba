//! `si-cli deploy`: the files other tools need to run the platform, rendered from
//! the same configuration the gateway reads, so ports, models and GPUs cannot
//! disagree: a PM2 ecosystem file, systemd units, an nginx site and a Prometheus
//! scrape configuration. With `--host`, the files that start model servers hold
//! that GPU host's alone.
//!
//! API keys never appear in a rendered file or on a command line (where `ps`
//! shows them): each llama-server reads its key from the key file into
//! `LLAMA_API_KEY` in its environment.
//!
//! The files' text is in the templates under `templates/`; this module only
//! computes the values they are rendered with.

use std::path::{Path, PathBuf};
use std::time::Duration;

use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value, context};
use si_core::secret::SecretRef;
use si_core::{BackendConfig, Config};

use crate::CliError;
use crate::args::DeployArgs;

mod site;

/// Where the rendered files expect things to be on the host.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The directory the platform runs in: configuration, `.api_keys.env`,
    /// `models/`, `logs/`.
    pub root: PathBuf,
    /// `si-server`.
    pub si_server: PathBuf,
    /// `si-cli`, for the unit that runs the whole platform under `si-cli up`.
    pub si_cli: PathBuf,
    /// `llama-server`.
    pub llama_server: PathBuf,
    /// The configuration file, as `si-server --config` takes it.
    pub config: PathBuf,
    /// The user the services run as.
    pub user: String,
    /// The site's host name, for nginx.
    pub server_name: String,
    /// TLS certificate and key, for nginx.
    pub tls_certificate: PathBuf,
    /// TLS key.
    pub tls_key: PathBuf,
    /// The GPU host the model servers are rendered for (`None`: every backend).
    pub host: Option<String>,
}

/// One rendered file: its name and text.
pub type Rendered = (String, String);

/// The templates, by name (`templates/NAME.j2`).
const TEMPLATES: [(&str, &str); 7] = [
    (
        "ecosystem.config.js",
        include_str!("../../templates/ecosystem.config.js.j2"),
    ),
    ("hardening", include_str!("../../templates/hardening.j2")),
    (
        "si-gateway.service",
        include_str!("../../templates/si-gateway.service.j2"),
    ),
    (
        "si-platform.service",
        include_str!("../../templates/si-platform.service.j2"),
    ),
    (
        "si-llama.service",
        include_str!("../../templates/si-llama.service.j2"),
    ),
    (
        "synthetic-intelligence.nginx.conf",
        include_str!("../../templates/synthetic-intelligence.nginx.conf.j2"),
    ),
    (
        "prometheus.yml",
        include_str!("../../templates/prometheus.yml.j2"),
    ),
];

/// Every file, for `config` on `layout`.
pub fn render(config: &Config, layout: &Layout) -> Result<Vec<Rendered>, CliError> {
    let templates = templates()?;
    let render = |template: &str, file: String, values: Value| {
        let text = templates
            .get_template(template)
            .and_then(|t| t.render(values))
            .map_err(|e| CliError::Message(format!("cannot render {file}: {e}")))?;
        Ok::<_, CliError>((file, text))
    };
    let servers = model_servers(config, layout)?;
    let mut files = Vec::new();
    // These files are named as their templates. nginx and Prometheus reach every
    // backend, wherever it runs; the rest start this host's model servers.
    for (name, values) in [
        ("ecosystem.config.js", pm2(config, &servers, layout)),
        ("si-gateway.service", gateway_unit(config, layout)),
        (
            "synthetic-intelligence.nginx.conf",
            site::nginx(config, layout),
        ),
        ("prometheus.yml", site::prometheus(config)),
        (
            "si-platform.service",
            platform_unit(config, &servers, layout),
        ),
    ] {
        files.push(render(name, name.to_owned(), values)?);
    }
    for backend in &servers {
        let values = llama_unit(backend, layout);
        files.push(render("si-llama.service", unit_name(backend), values)?);
    }
    Ok(files)
}

/// The model servers the files start: those of `layout.host`, or every one. Two
/// on one port cannot run on one machine: that is a configuration for several
/// hosts, rendered one host at a time.
fn model_servers(config: &Config, layout: &Layout) -> Result<Vec<BackendConfig>, CliError> {
    let servers = match &layout.host {
        Some(host) => super::on_host(config, host)?.backends,
        None => config.backends.clone(),
    };
    for (i, backend) in servers.iter().enumerate() {
        if let Some(other) = servers[..i].iter().find(|o| o.url.port == backend.url.port) {
            return Err(CliError::Message(format!(
                "backends `{}` ({}) and `{}` ({}) both listen on port {}, so they run on \
                 different hosts: render each host's files with `--host NAME`",
                other.name,
                other.host_name(),
                backend.name,
                backend.host_name(),
                backend.url.port
            )));
        }
    }
    Ok(servers)
}

/// The templates, set up for configuration files rather than HTML: nothing
/// escaped, block tags on lines of their own leave no blank lines, the last
/// newline kept, and a value missing from the context an error.
fn templates() -> Result<Environment<'static>, CliError> {
    let mut templates = Environment::new();
    templates.set_auto_escape_callback(|_| AutoEscape::None);
    templates.set_undefined_behavior(UndefinedBehavior::Strict);
    templates.set_trim_blocks(true);
    templates.set_lstrip_blocks(true);
    templates.set_keep_trailing_newline(true);
    for (name, text) in TEMPLATES {
        templates
            .add_template(name, text)
            .map_err(|e| CliError::Message(format!("template {name}: {e}")))?;
    }
    Ok(templates)
}

/// Writes `files` into `dir` (created if needed).
pub fn write(dir: &Path, files: &[Rendered]) -> Result<(), CliError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| CliError::Message(format!("cannot create {}: {e}", dir.display())))?;
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text)
            .map_err(|e| CliError::Message(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(())
}

fn unit_name(backend: &BackendConfig) -> String {
    format!("si-llama-{}.service", backend.name)
}

/// A shell command that reads the key file, puts the backend's key (alone) into
/// `LLAMA_API_KEY`, and runs llama-server.
fn llama_shell(backend: &BackendConfig, layout: &Layout) -> String {
    let args: Vec<String> = si_supervisor::launch::llama_server(backend, &layout.root)
        .args
        .iter()
        .map(|a| shell_quote(a))
        .collect();
    // The shell reads the variable or the file when the server starts, so the
    // key itself is in no rendered file.
    let key = match &backend.api_key_ref {
        SecretRef::Env(var) => format!("LLAMA_API_KEY=\"${var}\" "),
        SecretRef::Path(path) => format!(
            "LLAMA_API_KEY=\"$(head -n1 {})\" ",
            shell_quote(&path.display().to_string())
        ),
    };
    // Sourced, not exported: the server's environment gets its own key alone.
    let keys = layout.root.join(".api_keys.env").display().to_string();
    format!(
        ". {}; {key}exec {} {}",
        shell_quote(&keys),
        shell_quote(&layout.llama_server.display().to_string()),
        args.join(" ")
    )
}

fn shell_quote(text: &str) -> String {
    if text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./:=@".contains(c))
    {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// `text` as a JavaScript string literal.
fn js_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into())
}

/// PM2's `ecosystem.config.js`: the gateway and every llama-server, with logs
/// under `logs/` and restarts with back-off. Every string is a JavaScript
/// literal already.
fn pm2(config: &Config, servers: &[BackendConfig], layout: &Layout) -> Value {
    let root = layout.root.display().to_string();
    let log = |name: &str| js_string(&format!("{root}/logs/{name}"));
    let servers: Vec<Value> = servers
        .iter()
        .map(|backend| {
            let port = backend.url.port;
            let launch = si_supervisor::launch::llama_server(backend, &layout.root);
            let env: Vec<(&str, String)> =
                launch.env.iter().map(|(k, v)| (*k, js_string(v))).collect();
            context! {
                name => js_string(&format!("llama-{port}")),
                command => js_string(&llama_shell(backend, layout)),
                env => env,
                out_file => log(&format!("llama-{port}-out.log")),
                error_file => log(&format!("llama-{port}-error.log")),
            }
        })
        .collect();
    let kill_timeout = config.gateway.stop_timeout().as_millis();
    context! {
        root => js_string(&root),
        llama_servers => servers,
        gateway => context! {
            script => js_string(&layout.si_server.display().to_string()),
            config => js_string(&layout.config.display().to_string()),
            out_file => log("gateway-out.log"),
            error_file => log("gateway-error.log"),
            kill_timeout_ms => u64::try_from(kill_timeout).unwrap_or(u64::MAX),
        },
    }
}

fn gateway_unit(config: &Config, layout: &Layout) -> Value {
    context! {
        user => layout.user,
        root => layout.root.display().to_string(),
        si_server => layout.si_server.display().to_string(),
        config => layout.config.display().to_string(),
        stop_timeout_s => config.gateway.stop_timeout().as_secs(),
    }
}

/// The whole platform as one unit: `si-cli up` starts and watches every
/// llama-server (of the host rendered for) and the gateway. An alternative to
/// the per-process units.
fn platform_unit(config: &Config, servers: &[BackendConfig], layout: &Layout) -> Value {
    let conflicts: Vec<String> = std::iter::once("si-gateway.service".to_owned())
        .chain(servers.iter().map(unit_name))
        .collect();
    // The supervisor stops the gateway (which drains), then the model servers.
    let stop =
        config.gateway.stop_timeout() + config.supervisor.stop_timeout + Duration::from_secs(10);
    context! {
        conflicts => conflicts,
        user => layout.user,
        root => layout.root.display().to_string(),
        si_cli => layout.si_cli.display().to_string(),
        config => layout.config.display().to_string(),
        host => layout.host,
        stop_timeout_s => stop.as_secs(),
    }
}

fn llama_unit(backend: &BackendConfig, layout: &Layout) -> Value {
    let launch = si_supervisor::launch::llama_server(backend, &layout.root);
    context! {
        name => backend.name,
        model => backend.model,
        user => layout.user,
        root => layout.root.display().to_string(),
        env => launch.env,
        // `$$` is systemd's literal `$`: the shell, not systemd, reads the key
        // variable, so its value never reaches a command line.
        command => shell_quote(&llama_shell(backend, layout)).replace('$', "$$"),
    }
}

/// `si-cli deploy`: renders every file for `args` into `args.out`, run from the
/// current directory with the configuration file at `config_path`.
pub fn run(
    config: &Config,
    args: DeployArgs,
    config_path: Option<PathBuf>,
) -> Result<bool, CliError> {
    let DeployArgs {
        out,
        root,
        si_server,
        si_cli,
        llama_server,
        user,
        server_name,
        tls_cert,
        tls_key,
        host,
    } = args;
    let here = std::env::current_dir()
        .map_err(|e| CliError::Message(format!("cannot read the current directory: {e}")))?;
    let root = root.unwrap_or(here.clone());
    let config_file = match config_path {
        Some(path) if path.is_absolute() => path,
        Some(path) => here.join(path),
        None => root.join("si.toml"),
    };
    let layout = Layout {
        root,
        si_server,
        si_cli,
        llama_server,
        config: config_file,
        user,
        server_name,
        tls_certificate: tls_cert,
        tls_key,
        host,
    };
    let files = render(config, &layout)?;
    write(&out, &files)?;
    for (name, _) in &files {
        println!("wrote {}", out.join(name).display());
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "the-biomistral-key-0123456789abcdef";

    fn layout(root: &str) -> Layout {
        Layout {
            root: root.into(),
            si_server: "/usr/local/bin/si-server".into(),
            si_cli: "/usr/local/bin/si-cli".into(),
            llama_server: "/usr/local/bin/llama-server".into(),
            config: format!("{root}/si.toml").into(),
            user: "si".into(),
            server_name: "localhost".into(),
            tls_certificate: "/etc/ssl/certs/si.crt".into(),
            tls_key: "/etc/ssl/private/si.key".into(),
            host: None,
        }
    }

    #[test]
    fn the_llama_server_command_is_quoted_for_the_shell_and_systemd_and_holds_no_key() {
        let env = si_core::Environment::from_pairs([(
            "API_KEY_BIOMISTRAL_8085".to_owned(),
            KEY.to_owned(),
        )]);
        let mut config = Config::load(None, &env).unwrap();
        config.backends[0].api_key_ref = SecretRef::Path("/etc/si/it's key".into());
        let files = render(&config, &layout("/srv/it's si")).unwrap();
        let text = |name: &str| {
            let found = files.iter().find(|(n, _)| n == name);
            found.map(|(_, text)| text.clone()).unwrap()
        };
        for (name, text) in &files {
            assert!(!text.contains(KEY), "{name} holds the key");
        }
        let from_env = text("si-llama-biomistral-7b-8085.service");
        assert!(
            from_env.contains(r#"LLAMA_API_KEY="$$API_KEY_BIOMISTRAL_8085" exec "#),
            "{from_env}"
        );
        let from_file = text(&unit_name(&config.backends[0]));
        assert!(
            from_file.contains(
                r#"LLAMA_API_KEY="$$(head -n1 '\''/etc/si/it'\''\'\'''\''s key'\'')" exec "#
            ),
            "{from_file}"
        );
        assert!(from_file.contains("\nWorkingDirectory=/srv/it's si\n"));
        assert!(from_file.contains("\nEnvironment=CUDA_DEVICE_ORDER=PCI_BUS_ID\n"));
        assert!(from_file.ends_with("UMask=0077\n\n[Install]\nWantedBy=multi-user.target\n"));
        let pm2 = text("ecosystem.config.js");
        assert!(pm2.contains("      cwd: \"/srv/it's si\",\n"), "{pm2}");
        assert!(pm2.contains(r#"LLAMA_API_KEY=\"$(head -n1 '/etc/si/it'\\''s key')\""#));
    }
}
