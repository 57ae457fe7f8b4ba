//! The llama-server command line for a backend, in one place: the supervisor
//! runs it, and `si-cli deploy` writes it into PM2 and systemd files, so that
//! every way of running the platform starts the same servers.

use std::path::Path;

use si_core::{BackendConfig, FlashAttn};

/// How one backend's llama-server is started, apart from its key (which goes in
/// `LLAMA_API_KEY`, never here).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    /// Its arguments.
    pub args: Vec<String>,
    /// The variables set for it.
    pub env: Vec<(&'static str, String)>,
}

/// The arguments and environment of `backend`'s llama-server, model files
/// relative to `root`.
pub fn llama_server(backend: &BackendConfig, root: &Path) -> Launch {
    Launch {
        args: args(backend, root),
        env: gpu_env(backend),
    }
}

fn args(backend: &BackendConfig, root: &Path) -> Vec<String> {
    let launch = &backend.launch;
    let model = launch.model_file.as_ref().map_or_else(
        || root.join("models").join(format!("{}.gguf", backend.model)),
        |m| root.join(m),
    );
    let mut args = vec![
        "-m".to_owned(),
        model.display().to_string(),
        "--host".into(),
        backend.url.host.clone(),
        "--port".into(),
        backend.url.port.to_string(),
        "--alias".into(),
        backend.model.clone(),
        "--metrics".into(),
        "-ngl".into(),
        launch.gpu_layers.map_or("999".into(), |n| n.to_string()),
    ];
    if let Some(context) = launch.context {
        args.extend(["-c".into(), context.to_string()]);
    }
    for (flag, value) in [
        ("--cache-type-k", &launch.cache_type_k),
        ("--cache-type-v", &launch.cache_type_v),
    ] {
        if let Some(value) = value {
            args.extend([flag.to_owned(), value.clone()]);
        }
    }
    if launch.flash_attn != FlashAttn::Auto {
        args.extend(["--flash-attn".into(), launch.flash_attn.as_str().into()]);
    }
    if let Some(threads) = launch.threads {
        args.extend(["-t".into(), threads.to_string()]);
        args.extend(["-tb".into(), threads.to_string()]);
    }
    if let Some(parallel) = launch.parallel {
        args.extend(["-np".into(), parallel.to_string()]);
    }
    args.extend(launch.extra_args.iter().cloned());
    args
}

/// `CUDA_DEVICE_ORDER`, so that GPU indexes mean what `nvidia-smi` shows, and
/// `CUDA_VISIBLE_DEVICES` when the backend names a GPU.
fn gpu_env(backend: &BackendConfig) -> Vec<(&'static str, String)> {
    let mut env = vec![("CUDA_DEVICE_ORDER", "PCI_BUS_ID".to_owned())];
    if let Some(gpu) = backend.gpu {
        env.push(("CUDA_VISIBLE_DEVICES", gpu.to_string()));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_backends_get_their_model_port_and_gpu_and_never_a_key() {
        let env = si_core::Environment::from_pairs([(
            "API_KEY_BIOMISTRAL_8085".to_owned(),
            "the-key-0123456789abcdef".to_owned(),
        )]);
        let config = si_core::Config::load(None, &env).unwrap();
        let backend = config
            .backends
            .iter()
            .find(|b| b.name == "biomistral-7b-8085")
            .unwrap();
        let launch = llama_server(backend, Path::new("/srv/si"));
        let args = launch.args.join(" ");
        assert!(
            args.starts_with("-m /srv/si/models/biomistral-7b.Q4_K_M.gguf --host 127.0.0.1 --port 8085 --alias biomistral-7b --metrics -ngl 999 -c 8192"),
            "{args}"
        );
        assert!(!args.contains("the-key"), "{args}");
        assert_eq!(
            launch.env,
            [
                ("CUDA_DEVICE_ORDER", "PCI_BUS_ID".to_owned()),
                ("CUDA_VISIBLE_DEVICES", "0".to_owned())
            ]
        );
    }
}
