//! GPUs and what runs on them: live readings through NVML or the GPUs the
//! configuration declares ([`inventory`]), and the backends each GPU hosts. It knows
//! nothing about HTTP or users.

use std::collections::BTreeMap;

pub mod inventory;

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
