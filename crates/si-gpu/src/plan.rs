//! Placing llama-server processes on GPUs so that every GPU keeps a margin free.
//!
//! The planner first checks the placement the configuration declares. If it does
//! not fit, it tries the least harmful changes first, and only goes on to a more
//! harmful kind when the gentler ones cannot make everything fit:
//!
//! 1. move servers to another GPU (answers unchanged; a restart);
//! 2. quantise a server's KV cache to q8_0 with flash attention (half the cache,
//!    answers nearly unchanged), the largest cache first;
//! 3. halve a server's context, down to 2048 tokens (shorter prompts and answers);
//! 4. offload fewer layers (the rest run on the CPU: much slower).
//!
//! After each change everything is placed again, largest first, each server on its
//! declared GPU when it fits there, else on the GPU with the most room. A server
//! that fits nowhere even after every change is reported unplaced, never squeezed
//! in: no GPU's load ever exceeds its capacity minus what others use minus the
//! margin.

use serde::Serialize;

use crate::estimate::{CacheType, ServerSettings, VramEstimate, estimate};
use crate::profile::ModelProfile;

mod remedy;
mod search;

pub use remedy::Remedy;

use remedy::{moves, next_change};
use search::pack;

/// Contexts are not lowered below this.
pub const MIN_CONTEXT: u64 = 2048;

/// One llama-server to place.
#[derive(Clone, Debug)]
pub struct ServerSpec {
    /// Its name (the backend's).
    pub name: String,
    /// Its model.
    pub profile: ModelProfile,
    /// How it is started.
    pub settings: ServerSettings,
    /// The GPU the configuration puts it on, if any.
    pub gpu: Option<u32>,
    /// Whether it must stay on that GPU.
    pub pinned: bool,
}

/// One GPU to place servers on.
#[derive(Clone, Debug, Serialize)]
pub struct GpuSpec {
    /// Its index.
    pub index: u32,
    /// What it is.
    pub name: String,
    /// Its memory, bytes.
    pub capacity: u64,
    /// Memory already used by processes that are not being placed, bytes.
    pub reserved: u64,
}

/// Where one server goes, how it is started, and what it takes.
#[derive(Clone, Debug, Serialize)]
pub struct Placement {
    /// The server.
    pub server: String,
    /// Its GPU; `None`: unplaced.
    pub gpu: Option<u32>,
    /// `-c`.
    pub context: u64,
    /// `--cache-type-k`.
    pub cache_type_k: CacheType,
    /// `--cache-type-v`.
    pub cache_type_v: CacheType,
    /// `--flash-attn on` (else off).
    pub flash_attn: bool,
    /// `-ngl`; `None`: all.
    pub gpu_layers: Option<u32>,
    /// Its memory.
    pub estimate: VramEstimate,
}

/// One GPU's share of the plan.
#[derive(Clone, Debug, Serialize)]
pub struct GpuLoad {
    /// The GPU.
    pub gpu: GpuSpec,
    /// Kept free.
    pub margin: u64,
    /// Taken by the servers placed on it.
    pub planned: u64,
    /// Capacity - reserved - planned (negative: over capacity).
    pub free: i64,
}

/// The outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The declared placement fits as it is.
    Fits,
    /// It fits after the listed changes.
    FitsWithChanges,
    /// Some servers fit nowhere even after every change.
    DoesNotFit,
}

/// A placement of every server, or the report of those that fit nowhere.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// Fits, fits with changes, or not.
    pub verdict: Verdict,
    /// The declared placement, per GPU, before any change (what an operator has).
    pub declared: Vec<GpuLoad>,
    /// Every server as declared, before any change.
    pub declared_placements: Vec<Placement>,
    /// The planned placement, per GPU.
    pub gpus: Vec<GpuLoad>,
    /// Every server, in the order given.
    pub placements: Vec<Placement>,
    /// The changes, least harmful first.
    pub remedies: Vec<Remedy>,
    /// Servers that fit nowhere.
    pub unplaced: Vec<String>,
}

/// Places `servers` on `gpus`, keeping `margin` free on each; `overhead` is the
/// per-process constant of the estimate.
pub fn plan(servers: &[ServerSpec], gpus: &[GpuSpec], margin: u64, overhead: u64) -> Plan {
    let mut settings: Vec<ServerSettings> = servers.iter().map(|s| s.settings).collect();
    let estimates = |settings: &[ServerSettings]| -> Vec<VramEstimate> {
        servers
            .iter()
            .zip(settings)
            .map(|(s, set)| estimate(&s.profile, set, overhead))
            .collect()
    };
    let declared_gpus: Vec<Option<u32>> = servers.iter().map(|s| s.gpu).collect();
    let declared_estimates = estimates(&settings);
    let declared = (
        loads(gpus, &declared_gpus, &declared_estimates, margin),
        placements(servers, &settings, &declared_gpus, &declared_estimates),
    );
    let known = |gpu: Option<u32>| gpu.is_some_and(|g| gpus.iter().any(|x| x.index == g));
    if declared_gpus.iter().all(|g| known(*g))
        && declared.0.iter().all(|l| l.free >= l.margin as i64)
    {
        let (loads, placements) = declared.clone();
        return finish(Verdict::Fits, declared, loads, placements, Vec::new());
    }
    // Servers that fit nowhere even at their smallest are set aside at once, so
    // that nothing else is degraded in a vain attempt to make room for them.
    let hopeless: Vec<bool> = servers
        .iter()
        .map(|s| fits_nowhere(s, gpus, margin, overhead))
        .collect();
    let mut changes = Vec::new();
    loop {
        let current = estimates(&settings);
        let placed = pack(servers, gpus, &current, margin, &hopeless);
        let complete = placed
            .iter()
            .zip(&hopeless)
            .all(|(gpu, hopeless)| gpu.is_some() || *hopeless);
        let change = if complete {
            None
        } else {
            next_change(servers, &mut settings, &current, overhead, &hopeless)
        };
        match change {
            Some(change) => changes.push(change),
            None => {
                let verdict = if complete && !hopeless.contains(&true) {
                    Verdict::FitsWithChanges
                } else {
                    Verdict::DoesNotFit
                };
                let mut remedies = moves(servers, &placed);
                remedies.append(&mut changes);
                return finish(
                    verdict,
                    declared,
                    loads(gpus, &placed, &current, margin),
                    placements(servers, &settings, &placed, &current),
                    remedies,
                );
            }
        }
    }
}

/// Whether `server` fits on none of the GPUs it may use even with nothing but its
/// compute buffer and process overhead on the GPU, at the smallest context.
fn fits_nowhere(server: &ServerSpec, gpus: &[GpuSpec], margin: u64, overhead: u64) -> bool {
    let smallest = ServerSettings {
        context: server.settings.context.min(MIN_CONTEXT),
        cache_type_k: CacheType::Q8_0,
        cache_type_v: CacheType::Q8_0,
        flash_attn: true,
        gpu_layers: Some(0),
        ..server.settings
    };
    let need = estimate(&server.profile, &smallest, overhead).total;
    !gpus
        .iter()
        .filter(|g| !server.pinned || server.gpu == Some(g.index))
        .any(|g| g.capacity.saturating_sub(g.reserved).saturating_sub(margin) >= need)
}

fn placements(
    servers: &[ServerSpec],
    settings: &[ServerSettings],
    placed: &[Option<u32>],
    estimates: &[VramEstimate],
) -> Vec<Placement> {
    servers
        .iter()
        .zip(settings)
        .zip(placed)
        .zip(estimates)
        .map(|(((server, set), gpu), estimate)| Placement {
            server: server.name.clone(),
            gpu: *gpu,
            context: set.context,
            cache_type_k: set.cache_type_k,
            cache_type_v: set.cache_type_v,
            flash_attn: set.flash_attn,
            gpu_layers: set.gpu_layers,
            estimate: *estimate,
        })
        .collect()
}

fn finish(
    verdict: Verdict,
    (declared, declared_placements): (Vec<GpuLoad>, Vec<Placement>),
    gpus: Vec<GpuLoad>,
    placements: Vec<Placement>,
    remedies: Vec<Remedy>,
) -> Plan {
    let unplaced = placements
        .iter()
        .filter(|p| p.gpu.is_none())
        .map(|p| p.server.clone())
        .collect();
    Plan {
        verdict,
        declared,
        declared_placements,
        gpus,
        placements,
        remedies,
        unplaced,
    }
}

/// Each GPU's load when server `i` runs on `placed[i]`.
fn loads(
    gpus: &[GpuSpec],
    placed: &[Option<u32>],
    estimates: &[VramEstimate],
    margin: u64,
) -> Vec<GpuLoad> {
    gpus.iter()
        .map(|gpu| {
            let planned = placed
                .iter()
                .zip(estimates)
                .filter(|(g, _)| **g == Some(gpu.index))
                .fold(0u64, |sum, (_, e)| sum.saturating_add(e.total));
            let free = i128::from(gpu.capacity) - i128::from(gpu.reserved) - i128::from(planned);
            let free = i64::try_from(free).unwrap_or(if free < 0 { i64::MIN } else { i64::MAX });
            GpuLoad {
                gpu: gpu.clone(),
                margin,
                planned,
                free,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
