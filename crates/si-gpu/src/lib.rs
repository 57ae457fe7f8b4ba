//! GPUs and what runs on them. It knows nothing about HTTP or users.
//!
//! - [`gguf`]: reading (and, for fixtures, writing) GGUF model headers.
//! - [`profile`]: a model's shape and weight bytes, from its header.
//! - [`estimate`]: one llama-server's GPU memory, by part.
//! - [`plan`]: placing servers on GPUs with a margin, and the least harmful
//!   changes when they do not fit.
//! - [`deployment`]: the planner's inputs from a configuration.
//! - [`inventory`]: live readings through NVML, or the GPUs the configuration
//!   declares.

use std::collections::BTreeMap;

pub mod deployment;
pub mod estimate;
pub mod gguf;
pub mod inventory;
pub mod plan;
pub mod profile;

pub use inventory::{GpuError, GpuInventory, GpuProcess, GpuReading};

use si_core::Config;

/// The backends each GPU index is declared to host, in configuration order.
/// Backends without a `gpu` are listed under `None` (CPU, or not yet placed).
pub fn backends_by_gpu(config: &Config) -> BTreeMap<Option<u32>, Vec<String>> {
    let mut by_gpu: BTreeMap<Option<u32>, Vec<String>> = BTreeMap::new();
    for backend in &config.backends {
        by_gpu
            .entry(backend.gpu)
            .or_default()
            .push(backend.name.clone());
    }
    by_gpu
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_places_four_servers_on_gpu_0_and_two_on_gpu_1() {
        let config = Config::builtin().expect("built-in config");
        let by_gpu = backends_by_gpu(&config);
        assert_eq!(by_gpu.get(&Some(0)).map(Vec::len), Some(4));
        assert_eq!(
            by_gpu.get(&Some(1)).cloned(),
            Some(vec![
                "tiny-llama-1b-8083".into(),
                "openinsurance-8b-8084".into()
            ])
        );
        assert!(!by_gpu.contains_key(&None));
    }
}
