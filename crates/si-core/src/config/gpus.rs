//! The GPUs: `[gpu]` (where readings come from, how often) and `[[gpus]]` (the cards
//! the servers run on, for when the NVIDIA driver cannot be asked).

use std::collections::HashSet;
use std::time::Duration;

use serde::Deserialize;

use super::{Config, ConfigError};

/// Where GPU readings come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuSource {
    /// NVML when the NVIDIA driver answers, else the declared `[[gpus]]`.
    Auto,
    /// NVML only: starting fails without the driver.
    Nvml,
    /// The declared `[[gpus]]` only (capacity, no live readings).
    Declared,
}

/// A GPU as the configuration declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeclaredGpu {
    /// Its index, as `CUDA_VISIBLE_DEVICES` and `nvidia-smi` number it.
    pub index: u32,
    /// What it is, e.g. "NVIDIA GeForce RTX 3090".
    pub name: String,
    /// Its memory, in bytes.
    pub memory_bytes: u64,
}

/// GPU settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuConfig {
    /// Where readings come from.
    pub source: GpuSource,
    /// How often the gateway samples the GPUs into its metrics.
    pub sample_interval: Duration,
    /// The declared GPUs, by index.
    pub devices: Vec<DeclaredGpu>,
    /// Memory the planner keeps free on every GPU, bytes.
    pub margin_bytes: u64,
    /// GPU memory each llama-server process takes beyond its buffers (CUDA
    /// context, cuBLAS workspace), bytes.
    pub process_overhead_bytes: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawGpu {
    source: String,
    sample_interval_ms: u64,
    margin_mib: u64,
    process_overhead_mib: u64,
}

impl Default for RawGpu {
    fn default() -> Self {
        RawGpu {
            source: "auto".into(),
            sample_interval_ms: 5_000,
            margin_mib: 1024,
            process_overhead_mib: 590,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDeclaredGpu {
    index: u32,
    #[serde(default)]
    name: String,
    memory_mib: u64,
}

/// The largest GPU memory accepted, in MiB (a sanity bound: 16 TiB).
const MAX_MEMORY_MIB: u64 = 16 * 1024 * 1024;

impl RawGpu {
    pub(super) fn validate(
        self,
        devices: Vec<RawDeclaredGpu>,
        source: &str,
    ) -> Result<GpuConfig, ConfigError> {
        let gpu_source = match self.source.as_str() {
            "auto" => GpuSource::Auto,
            "nvml" => GpuSource::Nvml,
            "declared" => GpuSource::Declared,
            _ => {
                return Err(ConfigError::new(
                    source,
                    "gpu.source",
                    "expected \"auto\", \"nvml\" or \"declared\"",
                ));
            }
        };
        if !(100..=3_600_000).contains(&self.sample_interval_ms) {
            return Err(ConfigError::new(
                source,
                "gpu.sample_interval_ms",
                format!(
                    "expected 100 to 3600000 milliseconds, got {}",
                    self.sample_interval_ms
                ),
            ));
        }
        let devices = devices
            .into_iter()
            .enumerate()
            .map(|(i, gpu)| {
                if !(1..=MAX_MEMORY_MIB).contains(&gpu.memory_mib) {
                    return Err(ConfigError::new(
                        source,
                        format!("gpus[{i}].memory_mib"),
                        format!("expected 1 to {MAX_MEMORY_MIB} MiB, e.g. 24576 for 24 GiB"),
                    ));
                }
                let name = if gpu.name.is_empty() {
                    format!("GPU {}", gpu.index)
                } else {
                    gpu.name
                };
                Ok(DeclaredGpu {
                    index: gpu.index,
                    name,
                    memory_bytes: gpu.memory_mib * 1024 * 1024,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        for (field, value) in [
            ("margin_mib", self.margin_mib),
            ("process_overhead_mib", self.process_overhead_mib),
        ] {
            if value > 65_536 {
                return Err(ConfigError::new(
                    source,
                    format!("gpu.{field}"),
                    format!("expected 0 to 65536 MiB, got {value}"),
                ));
            }
        }
        Ok(GpuConfig {
            source: gpu_source,
            sample_interval: std::time::Duration::from_millis(self.sample_interval_ms),
            devices,
            margin_bytes: self.margin_mib << 20,
            process_overhead_bytes: self.process_overhead_mib << 20,
        })
    }
}

/// Declared GPUs are unique, and when any are declared, every backend's `gpu` is one
/// of them.
pub(super) fn check(config: &Config, source: &str) -> Result<(), ConfigError> {
    for (i, backend) in config.backends.iter().enumerate() {
        if backend.launch.gpu_pinned && backend.gpu.is_none() {
            return Err(ConfigError::new(
                source,
                format!("backends[{i}].gpu_pinned"),
                "a pinned backend needs `gpu = N` to be pinned to",
            ));
        }
    }
    let mut seen = HashSet::new();
    for (i, gpu) in config.gpu.devices.iter().enumerate() {
        if !seen.insert(gpu.index) {
            let problem = format!("GPU {} is declared twice", gpu.index);
            return Err(ConfigError::new(
                source,
                format!("gpus[{i}].index"),
                problem,
            ));
        }
        if gpu.memory_bytes == 0 {
            return Err(ConfigError::new(
                source,
                format!("gpus[{i}].memory_mib"),
                "expected more than 0",
            ));
        }
    }
    if seen.is_empty() {
        return Ok(());
    }
    for (i, backend) in config.backends.iter().enumerate() {
        if let Some(gpu) = backend.gpu
            && !seen.contains(&gpu)
        {
            let mut declared: Vec<u32> = seen.iter().copied().collect();
            declared.sort_unstable();
            let problem = format!("GPU {gpu} is not among the declared [[gpus]] ({declared:?})");
            return Err(ConfigError::new(
                source,
                format!("backends[{i}].gpu"),
                problem,
            ));
        }
    }
    Ok(())
}
