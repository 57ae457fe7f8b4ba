//! The changes the planner makes when servers do not fit, least harmful first,
//! and what each costs.

use serde::Serialize;

use super::{MIN_CONTEXT, ServerSpec};
use crate::estimate::{CacheType, MIB, ServerSettings, VramEstimate, estimate};

/// A change the planner made, and what it costs.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Remedy {
    /// Run the server on another GPU.
    Move {
        /// The server.
        server: String,
        /// Declared GPU.
        from: Option<u32>,
        /// Planned GPU.
        to: u32,
    },
    /// Quantise its KV cache.
    QuantizeKvCache {
        /// The server.
        server: String,
        /// New cache type of K and V.
        to: CacheType,
        /// Bytes saved.
        saves: u64,
    },
    /// Lower its context.
    LowerContext {
        /// The server.
        server: String,
        /// Old `-c`.
        from: u64,
        /// New `-c`.
        to: u64,
        /// Bytes saved.
        saves: u64,
    },
    /// Offload fewer layers.
    FewerLayers {
        /// The server.
        server: String,
        /// New `-ngl`.
        to: u32,
        /// Of its layers.
        layers: u32,
        /// Bytes saved.
        saves: u64,
    },
}

impl Remedy {
    /// What the change costs, in words.
    pub fn cost(&self) -> String {
        let mib = |b: &u64| b / MIB;
        match self {
            Remedy::Move { to, .. } => {
                format!("restart on GPU {to} (CUDA_VISIBLE_DEVICES={to}); answers unchanged")
            }
            Remedy::QuantizeKvCache { to, saves, .. } => format!(
                "KV cache f16 → {to} with flash attention saves {} MiB; answers nearly unchanged",
                mib(saves)
            ),
            Remedy::LowerContext {
                from, to, saves, ..
            } => format!(
                "context {from} → {to} tokens saves {} MiB; prompt and answer together limited to {to} tokens",
                mib(saves)
            ),
            Remedy::FewerLayers {
                to, layers, saves, ..
            } => format!(
                "-ngl {to} saves {} MiB; {} of {layers} layers run on the CPU, generation several times slower",
                mib(saves),
                layers.saturating_sub(to.saturating_sub(1))
            ),
        }
    }

    /// The server it changes.
    pub fn server(&self) -> &str {
        match self {
            Remedy::Move { server, .. }
            | Remedy::QuantizeKvCache { server, .. }
            | Remedy::LowerContext { server, .. }
            | Remedy::FewerLayers { server, .. } => server,
        }
    }
}

/// A move for each server placed elsewhere than declared.
pub(super) fn moves(servers: &[ServerSpec], placed: &[Option<u32>]) -> Vec<Remedy> {
    servers
        .iter()
        .zip(placed)
        .filter_map(|(server, gpu)| match (server.gpu, gpu) {
            (from, Some(to)) if from != Some(*to) => Some(Remedy::Move {
                server: server.name.clone(),
                from,
                to: *to,
            }),
            _ => None,
        })
        .collect()
}

/// The least harmful change still possible, applied to `settings`.
pub(super) fn next_change(
    servers: &[ServerSpec],
    settings: &mut [ServerSettings],
    estimates: &[VramEstimate],
    overhead: u64,
    hopeless: &[bool],
) -> Option<Remedy> {
    let by_kv = {
        let mut order: Vec<usize> = (0..servers.len()).filter(|&i| !hopeless[i]).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(estimates[i].kv_cache));
        order
    };
    let saved = |i: usize, new: &ServerSettings| {
        estimates[i]
            .total
            .saturating_sub(estimate(&servers[i].profile, new, overhead).total)
    };
    // 1. A KV cache at 16 bits or more → q8_0.
    for &i in &by_kv {
        let s = settings[i];
        if !s.cache_type_k.is_quantized() || !s.cache_type_v.is_quantized() {
            let new = ServerSettings {
                cache_type_k: CacheType::Q8_0,
                cache_type_v: CacheType::Q8_0,
                flash_attn: true,
                ..s
            };
            let saves = saved(i, &new);
            if saves > 0 {
                settings[i] = new;
                return Some(Remedy::QuantizeKvCache {
                    server: servers[i].name.clone(),
                    to: CacheType::Q8_0,
                    saves,
                });
            }
        }
    }
    // 2. Halve the largest cache's context.
    for &i in &by_kv {
        let s = settings[i];
        if s.context > MIN_CONTEXT {
            let new = ServerSettings {
                context: (s.context / 2).max(MIN_CONTEXT),
                ..s
            };
            settings[i] = new;
            return Some(Remedy::LowerContext {
                server: servers[i].name.clone(),
                from: s.context,
                to: new.context,
                saves: saved(i, &new),
            });
        }
    }
    // 3. Fewer layers on the GPU, an eighth of the model at a time, largest first.
    let mut by_weights: Vec<usize> = (0..servers.len()).filter(|&i| !hopeless[i]).collect();
    by_weights.sort_by_key(|&i| std::cmp::Reverse(estimates[i].weights));
    for i in by_weights {
        let s = settings[i];
        let layers = servers[i].profile.layers;
        let now = s.gpu_layers.unwrap_or(layers + 1).min(layers + 1);
        if now > 0 {
            let to = now.saturating_sub((layers / 8).max(1));
            let new = ServerSettings {
                gpu_layers: Some(to),
                ..s
            };
            settings[i] = new;
            return Some(Remedy::FewerLayers {
                server: servers[i].name.clone(),
                to,
                layers,
                saves: saved(i, &new),
            });
        }
    }
    None
}
