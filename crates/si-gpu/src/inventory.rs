//! What the GPUs hold now: live readings through NVML (the NVIDIA driver's
//! management library, loaded at run time) or, without a driver, the GPUs the
//! configuration declares. Behind [`GpuInventory`] so that callers, and tests, can
//! supply their own.

use std::fmt;
use std::sync::Arc;

use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::enums::device::UsedGpuMemory;
use si_core::{DeclaredGpu, GpuConfig, GpuSource};

/// One GPU at one moment. Figures a source cannot give are `None`.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuReading {
    /// Its index, as `CUDA_VISIBLE_DEVICES` numbers it.
    pub index: u32,
    /// What it is.
    pub name: String,
    /// Its memory, in bytes.
    pub memory_total_bytes: u64,
    /// Memory in use, in bytes (all processes, and the driver's own).
    pub memory_used_bytes: Option<u64>,
    /// Share of the last sample period a kernel was running, 0 to 1.
    pub utilization: Option<f64>,
    /// Core temperature, in degrees Celsius.
    pub temperature_celsius: Option<u32>,
    /// The compute processes on it.
    pub processes: Vec<GpuProcess>,
}

/// A compute process on a GPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuProcess {
    /// Its process id.
    pub pid: u32,
    /// GPU memory it holds, in bytes, when the driver says.
    pub memory_bytes: Option<u64>,
}

/// Why GPUs could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// NVML could not be loaded or answered with an error.
    #[error("NVML: {0}")]
    Nvml(#[from] nvml_wrapper::error::NvmlError),
    /// Another source could not be read.
    #[error("{0}")]
    Unavailable(String),
}

/// Something that can say what the GPUs hold now.
pub trait GpuInventory: Send + Sync + fmt::Debug {
    /// Where the readings come from: `"nvml"`, `"declared"`, or the implementor's own.
    fn source(&self) -> &'static str;

    /// Every GPU, by index. May block (NVML calls into the driver): call it off the
    /// async runtime's worker threads.
    fn read(&self) -> Result<Vec<GpuReading>, GpuError>;
}

/// Live readings through NVML.
pub struct NvmlInventory {
    nvml: Nvml,
}

impl fmt::Debug for NvmlInventory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NvmlInventory").finish_non_exhaustive()
    }
}

impl NvmlInventory {
    /// Loads `libnvidia-ml.so.1` and initialises it. Fails without an NVIDIA driver.
    pub fn open() -> Result<Self, GpuError> {
        Ok(NvmlInventory {
            nvml: Nvml::init()?,
        })
    }
}

impl GpuInventory for NvmlInventory {
    fn source(&self) -> &'static str {
        "nvml"
    }

    fn read(&self) -> Result<Vec<GpuReading>, GpuError> {
        let count = self.nvml.device_count()?;
        let mut gpus = Vec::with_capacity(count.min(64) as usize);
        for index in 0..count {
            let device = self.nvml.device_by_index(index)?;
            let memory = device.memory_info()?;
            // A figure one card does not report (older models, no permission) leaves
            // that figure unknown rather than losing the whole reading.
            let processes = device
                .running_compute_processes()
                .unwrap_or_default()
                .into_iter()
                .map(|p| GpuProcess {
                    pid: p.pid,
                    memory_bytes: match p.used_gpu_memory {
                        UsedGpuMemory::Used(bytes) => Some(bytes),
                        UsedGpuMemory::Unavailable => None,
                    },
                })
                .collect();
            gpus.push(GpuReading {
                index,
                name: device.name().unwrap_or_else(|_| format!("GPU {index}")),
                memory_total_bytes: memory.total,
                memory_used_bytes: Some(memory.used),
                utilization: device
                    .utilization_rates()
                    .ok()
                    .map(|u| f64::from(u.gpu.min(100)) / 100.0),
                temperature_celsius: device.temperature(TemperatureSensor::Gpu).ok(),
                processes,
            });
        }
        Ok(gpus)
    }
}

/// The GPUs the configuration declares: capacity only, nothing live.
#[derive(Clone, Debug, Default)]
pub struct DeclaredInventory {
    gpus: Vec<DeclaredGpu>,
}

impl DeclaredInventory {
    /// The GPUs in `gpus`.
    pub fn new(gpus: Vec<DeclaredGpu>) -> Self {
        DeclaredInventory { gpus }
    }
}

impl GpuInventory for DeclaredInventory {
    fn source(&self) -> &'static str {
        "declared"
    }

    fn read(&self) -> Result<Vec<GpuReading>, GpuError> {
        let mut gpus: Vec<GpuReading> = self
            .gpus
            .iter()
            .map(|gpu| GpuReading {
                index: gpu.index,
                name: gpu.name.clone(),
                memory_total_bytes: gpu.memory_bytes,
                memory_used_bytes: None,
                utilization: None,
                temperature_celsius: None,
                processes: Vec::new(),
            })
            .collect();
        gpus.sort_by_key(|g| g.index);
        Ok(gpus)
    }
}

/// The inventory `config` asks for, and a note for the operator when it is not what
/// was hoped for (NVML missing under `"auto"`).
///
/// Under [`GpuSource::Nvml`] a missing driver is an error; under
/// [`GpuSource::Auto`] it falls back to the declared GPUs.
pub fn open(config: &GpuConfig) -> Result<(Arc<dyn GpuInventory>, Option<String>), GpuError> {
    let declared = || Arc::new(DeclaredInventory::new(config.devices.clone()));
    match config.source {
        GpuSource::Declared => Ok((declared(), None)),
        GpuSource::Nvml => Ok((Arc::new(NvmlInventory::open()?), None)),
        GpuSource::Auto => match NvmlInventory::open() {
            Ok(nvml) => Ok((Arc::new(nvml), None)),
            Err(e) => {
                let note = format!(
                    "no live GPU readings ({e}); using the {} GPU(s) declared in [[gpus]]",
                    config.devices.len()
                );
                Ok((declared(), Some(note)))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(source: GpuSource) -> GpuConfig {
        GpuConfig {
            source,
            sample_interval: std::time::Duration::from_secs(5),
            margin_bytes: 1 << 30,
            process_overhead_bytes: 590 << 20,
            devices: vec![
                DeclaredGpu {
                    index: 1,
                    name: "small".into(),
                    memory_bytes: 12 << 30,
                },
                DeclaredGpu {
                    index: 0,
                    name: "big".into(),
                    memory_bytes: 24 << 30,
                },
            ],
        }
    }

    #[test]
    fn declared_gpus_are_read_by_index_with_capacity_only() {
        let (inventory, note) = open(&config(GpuSource::Declared)).unwrap();
        assert!(note.is_none());
        assert_eq!(inventory.source(), "declared");
        let gpus = inventory.read().unwrap();
        assert_eq!(
            gpus.iter()
                .map(|g| (g.index, g.memory_total_bytes))
                .collect::<Vec<_>>(),
            vec![(0, 24 << 30), (1, 12 << 30)]
        );
        assert!(gpus.iter().all(|g| g.memory_used_bytes.is_none()));
    }

    #[test]
    fn auto_never_fails_and_explains_a_fallback() {
        let (inventory, note) = open(&config(GpuSource::Auto)).unwrap();
        match inventory.source() {
            // A machine with an NVIDIA driver: live readings, no note.
            "nvml" => assert!(note.is_none()),
            _ => {
                let note = note.unwrap();
                assert!(note.contains("declared in [[gpus]]"), "{note}");
                assert_eq!(inventory.read().unwrap().len(), 2);
            }
        }
    }

    #[test]
    fn nvml_is_required_when_asked_for() {
        // Either the driver answers, or opening fails with an NVML error: never a
        // silent fallback.
        match open(&config(GpuSource::Nvml)) {
            Ok((inventory, _)) => assert_eq!(inventory.source(), "nvml"),
            Err(GpuError::Nvml(_)) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
}
