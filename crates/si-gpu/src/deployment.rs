//! The planner's inputs from a configuration: each backend's model profile and
//! start-up settings, and the GPUs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use si_core::{Config, FlashAttn};

use crate::estimate::{CacheType, DEFAULT_UBATCH, ServerSettings};
use crate::gguf::{Gguf, GgufError};
use crate::inventory::GpuReading;
use crate::plan::{GpuSpec, ServerSpec};
use crate::profile::{ModelProfile, ProfileError};

/// llama-server's `-c` when none is given.
pub const DEFAULT_CONTEXT: u64 = 4096;

/// Why a backend cannot be planned.
#[derive(Debug, thiserror::Error)]
pub enum DeploymentError {
    /// No `model_file`.
    #[error("backend `{backend}` has no model_file: set it to the GGUF file llama-server loads")]
    NoModelFile {
        /// The backend.
        backend: String,
    },
    /// The model file cannot be read as GGUF.
    #[error("backend `{backend}`: {source}")]
    ModelFile {
        /// The backend.
        backend: String,
        /// What failed.
        source: GgufError,
    },
    /// The header does not describe a model that can be sized.
    #[error("backend `{backend}`: {path}: {source}")]
    Profile {
        /// The backend.
        backend: String,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: ProfileError,
    },
}

/// Every backend of `config` as a server to place, model files read relative to
/// `base` (the directory llama-server would be started in).
pub fn servers(config: &Config, base: &Path) -> Result<Vec<ServerSpec>, DeploymentError> {
    let mut profiles: HashMap<PathBuf, ModelProfile> = HashMap::new();
    config
        .backends
        .iter()
        .map(|backend| {
            let launch = &backend.launch;
            let file = launch
                .model_file
                .as_ref()
                .ok_or_else(|| DeploymentError::NoModelFile {
                    backend: backend.name.clone(),
                })?;
            let path = base.join(file);
            let profile = match profiles.get(&path) {
                Some(profile) => profile.clone(),
                None => {
                    let gguf = Gguf::open(&path).map_err(|source| DeploymentError::ModelFile {
                        backend: backend.name.clone(),
                        source,
                    })?;
                    let profile = ModelProfile::from_gguf(&gguf).map_err(|source| {
                        DeploymentError::Profile {
                            backend: backend.name.clone(),
                            path: path.clone(),
                            source,
                        }
                    })?;
                    profiles.insert(path.clone(), profile.clone());
                    profile
                }
            };
            let cache = |t: &Option<String>| {
                t.as_deref()
                    .and_then(|t| t.parse::<CacheType>().ok())
                    .unwrap_or_default()
            };
            Ok(ServerSpec {
                name: backend.name.clone(),
                profile,
                settings: ServerSettings {
                    context: launch.context.unwrap_or(DEFAULT_CONTEXT),
                    cache_type_k: cache(&launch.cache_type_k),
                    cache_type_v: cache(&launch.cache_type_v),
                    flash_attn: launch.flash_attn != FlashAttn::Off,
                    gpu_layers: launch.gpu_layers,
                    ubatch: DEFAULT_UBATCH,
                },
                gpu: backend.gpu,
                pinned: launch.gpu_pinned,
            })
        })
        .collect()
}

/// The GPUs to plan for, from readings: their whole capacity, since the plan says
/// how to start the servers (memory in use now, these servers' own included if
/// they run, is what `gpu status` shows).
pub fn gpu_specs(readings: &[GpuReading]) -> Vec<GpuSpec> {
    readings
        .iter()
        .map(|r| GpuSpec {
            index: r.index,
            name: r.name.clone(),
            capacity: r.memory_total_bytes,
            reserved: 0,
        })
        .collect()
}
