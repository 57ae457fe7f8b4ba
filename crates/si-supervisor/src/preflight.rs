//! Before anything starts: what would make a start fail (llama-server missing,
//! a model file missing or not GGUF, a backend without a key, a port taken, models
//! that do not fit the GPUs), then each process's program, arguments and
//! environment.

use std::collections::HashSet;
use std::ffi::OsString;
use std::net::{TcpListener, ToSocketAddrs};
use std::path::{Path, PathBuf};

use si_core::{BackendConfig, Config, GpuSource};

use crate::state::{Kind, ProcessSpec};
use crate::{Host, SupervisorError, UpOptions, launch, loopback, say};

/// Checks everything a start needs and describes each process, or lists every
/// problem found (nothing has been started then). `config` may be changed by the
/// GPU plan (`--apply-plan`).
pub fn prepare(
    config: &mut Config,
    options: &UpOptions,
    host: &Host,
) -> Result<Vec<ProcessSpec>, SupervisorError> {
    let root = &host.root;
    let mut problems = Vec::new();
    let llama_server = find_program(&config.supervisor.llama_server, host)
        .map_err(|problem| problems.push(problem));
    for backend in &config.backends {
        check_model(backend, root, &mut problems);
        if backend.api_key.is_none() {
            problems.push(format!(
                "backend `{}` has no API key ({}): a llama-server without one answers anyone \
                 on the host; run `si-cli keys generate`",
                backend.name, backend.api_key_ref
            ));
        }
    }
    check_ports(config, !options.without_gateway, &mut problems);
    if problems.is_empty() {
        check_gpus(config, options.apply_plan, root, &mut problems);
    }
    match llama_server {
        Ok(path) if problems.is_empty() => Ok(specs(config, options, host, &path)),
        _ => Err(SupervisorError::NotStarted(problems)),
    }
}

/// Every backend and (when it runs here) the gateway on a port of its own that
/// is free now.
fn check_ports(config: &Config, gateway: bool, problems: &mut Vec<String>) {
    let mut ports = HashSet::new();
    for backend in &config.backends {
        if !ports.insert(backend.url.port) {
            problems.push(format!(
                "port {} is configured for two backends; give `{}` its own",
                backend.url.port, backend.name
            ));
            continue;
        }
        let address = format!("{}:{}", backend.url.host, backend.url.port);
        check_port(&address, &format!("backend `{}`", backend.name), problems);
    }
    if !gateway {
        return;
    }
    let listen = config.gateway.listen;
    if ports.contains(&listen.port()) {
        problems.push(format!(
            "gateway.listen {listen} uses a backend's port; give the gateway its own"
        ));
    } else {
        check_port(
            &listen.to_string(),
            "the gateway (gateway.listen)",
            problems,
        );
    }
}

/// `name` as a path (relative to the root), or found on `PATH`.
fn find_program(name: &Path, host: &Host) -> Result<PathBuf, String> {
    let how = "build it from llama.cpp (see the README, \"Running it for real\") and put it \
               on PATH, or set supervisor.llama_server to its path";
    // A name with a directory in it is a path, which `which` does not look up
    // on PATH either.
    let is_path = name.components().count() > 1 || name.is_absolute();
    which::which_in(name, host.path.as_ref(), &host.root).map_err(|_| {
        if is_path {
            format!(
                "llama-server not found: supervisor.llama_server is {}, which is not an \
                 executable file; {how}",
                host.root.join(name).display()
            )
        } else {
            format!(
                "llama-server not found: no `{}` on PATH; {how}",
                name.display()
            )
        }
    })
}

fn check_model(backend: &BackendConfig, root: &Path, problems: &mut Vec<String>) {
    let Some(file) = &backend.launch.model_file else {
        problems.push(format!(
            "backend `{}` has no model_file: set it to the GGUF file llama-server loads",
            backend.name
        ));
        return;
    };
    let path = root.join(file);
    if !path.exists() {
        problems.push(format!(
            "backend `{}`: model file {} does not exist; download the model's GGUF there \
             (see the README, \"Running it for real\"), or for a trial write a tiny one with \
             `si-cli tiny-model {}`",
            backend.name,
            path.display(),
            file.display()
        ));
        return;
    }
    if let Err(e) = si_gpu::gguf::Gguf::open(&path) {
        problems.push(format!(
            "backend `{}`: model file {} is not a usable GGUF file ({e}); download it again",
            backend.name,
            path.display()
        ));
    }
}

fn check_port(address: &str, what: &str, problems: &mut Vec<String>) {
    if let Err(e) = TcpListener::bind(address) {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            "something already listens there: a server left from an earlier run? \
             (`si-cli status`, `ss -ltnp`)"
        } else {
            "the supervisor starts only servers on this host: the backend's url must \
             name an address of this machine"
        };
        problems.push(format!("{what}: cannot listen on {address} ({e}); {hint}"));
    }
}

/// Checks the configured placement against the GPUs the driver reports (or the
/// `[[gpus]]` tables, when `gpu.source = "declared"` says to trust them), and with
/// `apply` takes the plan's changes. Skipped when `auto` finds no driver: without
/// it, llama-server cannot use a GPU either.
fn check_gpus(config: &mut Config, apply: bool, root: &Path, problems: &mut Vec<String>) {
    if config
        .backends
        .iter()
        .all(|b| b.launch.gpu_layers == Some(0))
    {
        return;
    }
    let Ok((inventory, _)) = si_gpu::inventory::open(&config.gpu) else {
        return;
    };
    let trusted = inventory.source() == "nvml" || config.gpu.source == GpuSource::Declared;
    let readings = match inventory.read() {
        Ok(readings) if trusted && !readings.is_empty() => readings,
        _ => return,
    };
    let servers = match si_gpu::deployment::servers(config, root) {
        Ok(servers) => servers,
        Err(e) => return problems.push(e.to_string()),
    };
    let gpus = si_gpu::deployment::gpu_specs(&readings);
    let overhead = config.gpu.process_overhead_bytes;
    let plan = si_gpu::plan::plan(&servers, &gpus, config.gpu.margin_bytes, overhead);
    match plan.verdict {
        si_gpu::plan::Verdict::Fits => {}
        si_gpu::plan::Verdict::FitsWithChanges if apply => apply_plan(config, &plan),
        si_gpu::plan::Verdict::FitsWithChanges => problems.push(format!(
            "as configured, the model servers do not fit the GPUs; {} change(s) make them fit: \
             see `si-cli gpu plan`, and start with them with `si-cli up --apply-plan`",
            plan.remedies.len()
        )),
        si_gpu::plan::Verdict::DoesNotFit => problems.push(format!(
            "the model servers do not fit the GPUs even after every change the planner knows \
             ({} fit nowhere); see `si-cli gpu plan`",
            plan.unplaced.join(", ")
        )),
    }
}

/// Takes the plan's placement and settings into `config`, saying what changed.
fn apply_plan(config: &mut Config, plan: &si_gpu::plan::Plan) {
    for remedy in &plan.remedies {
        say(&format!("GPU plan: {}: {}", remedy.server(), remedy.cost()));
    }
    for placement in &plan.placements {
        let Some(backend) = config
            .backends
            .iter_mut()
            .find(|b| b.name == placement.server)
        else {
            continue;
        };
        backend.gpu = placement.gpu;
        let launch = &mut backend.launch;
        launch.context = Some(placement.context);
        launch.cache_type_k = Some(placement.cache_type_k.as_str().to_owned());
        launch.cache_type_v = Some(placement.cache_type_v.as_str().to_owned());
        launch.gpu_layers = placement.gpu_layers;
    }
}

/// Each model server, then the gateway (unless it runs elsewhere).
fn specs(
    config: &Config,
    options: &UpOptions,
    host: &Host,
    llama_server: &Path,
) -> Vec<ProcessSpec> {
    // A model server inherits only what it needs to run and find its GPU: no
    // secret of the gateway's (JWT_SECRET, SI_*), no other backend's key, and no
    // LLAMA_* variable that would change its flags behind the configuration's back.
    let env_pass: Vec<(OsString, OsString)> = host
        .env
        .iter()
        .filter(|(name, _)| passed_to_model_servers(&name.to_string_lossy()))
        .cloned()
        .collect();
    let mut specs: Vec<ProcessSpec> = config
        .backends
        .iter()
        .map(|backend| {
            // A URL may name the host rather than an address: llama-server
            // listens where the name resolves, and answers its health there.
            let health = (backend.url.host.as_str(), backend.url.port)
                .to_socket_addrs()
                .ok()
                .and_then(|mut addresses| addresses.next())
                .unwrap_or_else(|| loopback(backend.url.port));
            let launch = launch::llama_server(backend, &host.root);
            ProcessSpec {
                name: backend.name.clone(),
                kind: Kind::LlamaServer,
                program: llama_server.to_owned(),
                args: launch.args.into_iter().map(OsString::from).collect(),
                env: launch
                    .env
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect(),
                env_pass: Some(env_pass.clone()),
                key: backend.api_key.clone(),
                health,
                gpu: backend.gpu,
                log_stem: format!("llama-{}", backend.url.port),
                stop_timeout: config.supervisor.stop_timeout,
            }
        })
        .collect();
    if !options.without_gateway {
        specs.push(gateway(config, options, host));
    }
    specs
}

/// The gateway: `PROGRAM serve`, with the configuration `up` was given.
fn gateway(config: &Config, options: &UpOptions, host: &Host) -> ProcessSpec {
    let listen = config.gateway.listen;
    let health = if listen.ip().is_unspecified() {
        loopback(listen.port())
    } else {
        listen
    };
    let mut args = vec![OsString::from("serve")];
    if let Some(path) = &options.config_path {
        let path = host.root.join(path).into_os_string();
        args.extend([OsString::from("--config"), path]);
    }
    ProcessSpec {
        name: "gateway".into(),
        kind: Kind::Gateway,
        program: host.program.clone(),
        args,
        env: Vec::new(),
        env_pass: None,
        key: None,
        health,
        gpu: None,
        log_stem: "gateway".into(),
        stop_timeout: config.gateway.stop_timeout(),
    }
}

/// Whether a variable of the supervisor's environment reaches the model servers.
fn passed_to_model_servers(name: &str) -> bool {
    const NAMES: [&str; 8] = [
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "TZ",
        "TMPDIR",
        "LD_LIBRARY_PATH",
    ];
    const PREFIXES: [&str; 9] = [
        "LC_", "CUDA_", "NVIDIA_", "GGML_", "HIP_", "ROCR_", "HSA_", "OMP_", "VK_",
    ];
    NAMES.contains(&name) || PREFIXES.iter().any(|p| name.starts_with(p))
}
