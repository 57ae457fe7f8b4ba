//! Before anything starts: what would make a start fail (llama-server missing,
//! a model file missing or not GGUF, a backend without a key, a port taken, models
//! that do not fit the GPUs), then each process's program, arguments and
//! environment.

use std::collections::HashSet;
use std::ffi::OsString;
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use si_core::{BackendConfig, Config, GpuSource};

use super::{Kind, ProcessSpec, UpOptions, loopback, say};
use crate::CliError;

/// Checks everything a start needs and describes each process, or lists every
/// problem found (nothing has been started then). `config` may be changed by the
/// GPU plan (`--apply-plan`).
pub fn prepare(
    config: &mut Config,
    options: &UpOptions,
    root: &Path,
    gateway_program: &Path,
) -> Result<Vec<ProcessSpec>, CliError> {
    let mut problems = Vec::new();
    let supervisor = &config.supervisor;
    let llama_server = find_program(&supervisor.llama_server, root).map_err(|problem| {
        problems.push(problem);
    });
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
        check_port(
            &address,
            &format!("backend `{}`", backend.name),
            &mut problems,
        );
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
            &mut problems,
        );
    }
    if problems.is_empty() {
        check_gpus(config, options.apply_plan, root, &mut problems);
    }
    let llama_server = match llama_server {
        Ok(path) if problems.is_empty() => path,
        _ => {
            let list: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
            return Err(CliError::Message(format!(
                "nothing was started:\n{}",
                list.join("\n")
            )));
        }
    };
    Ok(specs(config, options, root, &llama_server, gateway_program))
}

/// `name` as a path, or found on `PATH`.
fn find_program(name: &Path, root: &Path) -> Result<PathBuf, String> {
    let how = "build it from llama.cpp (see the README, \"Running it for real\") and put it \
               on PATH, or set supervisor.llama_server to its path";
    if name.components().count() > 1 || name.is_absolute() {
        let path = root.join(name);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(format!(
                "llama-server not found: supervisor.llama_server is {}, which is not an \
                 executable file; {how}",
                path.display()
            ))
        };
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| is_executable(path))
    });
    found.ok_or_else(|| {
        format!(
            "llama-server not found: no `{}` on PATH; {how}",
            name.display()
        )
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
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
            "the supervisor starts only servers on this host"
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
        si_gpu::plan::Verdict::FitsWithChanges if apply => {
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

fn specs(
    config: &Config,
    options: &UpOptions,
    root: &Path,
    llama_server: &Path,
    gateway_program: &Path,
) -> Vec<ProcessSpec> {
    // A model server inherits only what it needs to run and find its GPU: no
    // secret of the gateway's (JWT_SECRET, SI_*), no other backend's key, and no
    // LLAMA_* variable that would change its flags behind the configuration's back.
    let env_pass: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(name, _)| passed_to_model_servers(&name.to_string_lossy()))
        .collect();
    let mut specs: Vec<ProcessSpec> = config
        .backends
        .iter()
        .map(|backend| {
            let health = format!("{}:{}", backend.url.host, backend.url.port)
                .parse()
                .unwrap_or_else(|_| loopback(backend.url.port));
            ProcessSpec {
                name: backend.name.clone(),
                kind: Kind::LlamaServer,
                program: llama_server.to_owned(),
                args: crate::commands::deploy::llama_args(backend, root)
                    .into_iter()
                    .map(OsString::from)
                    .collect(),
                env: crate::commands::deploy::gpu_env(backend)
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
    let listen = config.gateway.listen;
    let health = if listen.ip().is_unspecified() {
        loopback(listen.port())
    } else {
        listen
    };
    let mut args = vec![OsString::from("serve")];
    if let Some(path) = &options.config_path {
        args.extend([OsString::from("--config"), root.join(path).into_os_string()]);
    }
    specs.push(ProcessSpec {
        name: "gateway".into(),
        kind: Kind::Gateway,
        program: gateway_program.to_owned(),
        args,
        env: Vec::new(),
        env_pass: None,
        key: None,
        health,
        gpu: None,
        log_stem: "gateway".into(),
        stop_timeout: config.gateway.stop_timeout(),
    });
    specs
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
