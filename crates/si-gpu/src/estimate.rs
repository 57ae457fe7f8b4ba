//! How much GPU memory one llama-server process takes.
//!
//! total = weights on the GPU + KV cache + compute buffer + per-process overhead:
//!
//! - **Weights on the GPU**: with `-ngl N`, the output layer first, then the last
//!   N - 1 repeating layers (llama.cpp counts the output layer within N); `-ngl`
//!   at least layers + 1 (or unset) offloads everything. `token_embd` stays in host
//!   memory whatever N is.
//! - **KV cache** (exact): for each layer on the GPU,
//!   `n_ctx × (key_length × kv_heads × s_k + value_length × kv_heads × s_v)`, with s
//!   the bytes per element of the cache type (f16: 2, q8_0: 34/32, q4_0: 18/32).
//!   It depends on `-c`, not on the number of parallel slots.
//! - **Compute buffer** (fitted to llama.cpp b11434 on a real GPU, within a few
//!   MiB of its log): with flash attention,
//!   `4.5 × n_ubatch × feed_forward × 4 B + n_ctx × 1 KiB`, plus
//!   `n_ctx × max(key, value width) × 2 B` when the cache is quantised (its
//!   dequantised copy); without flash attention, half of that plus the attention
//!   scores, `n_ctx × n_ubatch × heads × 4 B`.
//! - **Per-process overhead** (CUDA context, cuBLAS workspace): a constant,
//!   590 MiB measured with driver 580 (`gpu.process_overhead_mib`); older or
//!   consumer drivers differ, so it is configurable.
//!
//! These reproduce the measured process figures of TinyLlama 1.1B, Mistral 7B and
//! Llama-2 13B within 1 % (see the tests). The planner keeps a margin on top.

use serde::Serialize;

use crate::profile::ModelProfile;

/// One MiB.
pub const MIB: u64 = 1 << 20;
/// The measured per-process overhead (driver 580, CUDA 13).
pub const DEFAULT_PROCESS_OVERHEAD: u64 = 590 * MIB;
/// llama-server's default micro-batch (`-ub`).
pub const DEFAULT_UBATCH: u64 = 512;

/// A KV cache element type (`--cache-type-k`, `--cache-type-v`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CacheType {
    /// 32-bit floats.
    F32,
    /// 16-bit floats, llama-server's default.
    #[default]
    F16,
    /// bfloat16.
    Bf16,
    /// 8-bit blocks: half of f16, quality nearly unchanged.
    Q8_0,
    /// 5-bit blocks.
    Q5_1,
    /// 5-bit blocks.
    Q5_0,
    /// 4-bit blocks.
    Q4_1,
    /// 4-bit non-linear blocks.
    Iq4Nl,
    /// 4-bit blocks: a quarter of f16 and a visible quality loss.
    Q4_0,
}

impl CacheType {
    /// Bytes per element, as a fraction.
    fn bytes(self) -> (u64, u64) {
        match self {
            CacheType::F32 => (4, 1),
            CacheType::F16 | CacheType::Bf16 => (2, 1),
            CacheType::Q8_0 => (34, 32),
            CacheType::Q5_1 => (24, 32),
            CacheType::Q5_0 => (22, 32),
            CacheType::Q4_1 => (20, 32),
            CacheType::Iq4Nl | CacheType::Q4_0 => (18, 32),
        }
    }

    /// Whether it is a quantised (block) type, which needs flash attention for V.
    pub fn is_quantized(self) -> bool {
        !matches!(self, CacheType::F32 | CacheType::F16 | CacheType::Bf16)
    }

    /// The name llama-server's flags use.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheType::F32 => "f32",
            CacheType::F16 => "f16",
            CacheType::Bf16 => "bf16",
            CacheType::Q8_0 => "q8_0",
            CacheType::Q5_1 => "q5_1",
            CacheType::Q5_0 => "q5_0",
            CacheType::Q4_1 => "q4_1",
            CacheType::Iq4Nl => "iq4_nl",
            CacheType::Q4_0 => "q4_0",
        }
    }
}

impl std::str::FromStr for CacheType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "f32" => CacheType::F32,
            "f16" => CacheType::F16,
            "bf16" => CacheType::Bf16,
            "q8_0" => CacheType::Q8_0,
            "q5_1" => CacheType::Q5_1,
            "q5_0" => CacheType::Q5_0,
            "q4_1" => CacheType::Q4_1,
            "iq4_nl" => CacheType::Iq4Nl,
            "q4_0" => CacheType::Q4_0,
            _ => {
                return Err(format!(
                    "unknown cache type `{s}`; expected f32, f16, bf16, q8_0, q5_1, q5_0, q4_1, iq4_nl or q4_0"
                ));
            }
        })
    }
}

impl std::fmt::Display for CacheType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one llama-server is started, as far as memory goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerSettings {
    /// `-c`.
    pub context: u64,
    /// `--cache-type-k`.
    pub cache_type_k: CacheType,
    /// `--cache-type-v`.
    pub cache_type_v: CacheType,
    /// `--flash-attn` (auto counts as on, as current builds decide on a GPU).
    pub flash_attn: bool,
    /// `-ngl`; `None`: everything.
    pub gpu_layers: Option<u32>,
    /// `-ub`.
    pub ubatch: u64,
}

impl ServerSettings {
    /// llama-server's defaults with context `context`: f16 cache, flash attention,
    /// everything offloaded.
    pub fn with_context(context: u64) -> Self {
        ServerSettings {
            context,
            cache_type_k: CacheType::F16,
            cache_type_v: CacheType::F16,
            flash_attn: true,
            gpu_layers: None,
            ubatch: DEFAULT_UBATCH,
        }
    }
}

/// One process's GPU memory, in bytes, by part.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct VramEstimate {
    /// Weights on the GPU.
    pub weights: u64,
    /// KV cache.
    pub kv_cache: u64,
    /// Compute buffer.
    pub compute: u64,
    /// CUDA context and the like.
    pub overhead: u64,
    /// The sum.
    pub total: u64,
    /// Repeating layers on the GPU.
    pub layers_on_gpu: u32,
    /// Whether the output layer is on the GPU.
    pub output_on_gpu: bool,
}

/// What `profile` takes on one GPU when started with `settings`, `overhead` being
/// the per-process constant.
pub fn estimate(profile: &ModelProfile, settings: &ServerSettings, overhead: u64) -> VramEstimate {
    let layers = profile.layers;
    let ngl = settings.gpu_layers.unwrap_or(u32::MAX);
    let output_on_gpu = ngl >= 1;
    let layers_on_gpu = if ngl > layers {
        layers
    } else {
        ngl.saturating_sub(1)
    };
    let first_gpu_layer = (layers - layers_on_gpu) as usize;
    let gpu_layers = first_gpu_layer..layers as usize;

    // Saturating throughout: a profile's values are bounded when read from a
    // header, but its fields are public and a context may come from anywhere.
    let mut weights = profile
        .layer_bytes
        .get(gpu_layers.clone())
        .unwrap_or(&[])
        .iter()
        .fold(0u64, |sum, b| sum.saturating_add(*b));
    if output_on_gpu {
        weights = weights
            .saturating_add(profile.output_bytes)
            .saturating_add(profile.other_bytes);
    }

    let ctx = u128::from(settings.context);
    let (k_num, k_den) = settings.cache_type_k.bytes();
    let (v_num, v_den) = settings.cache_type_v.bytes();
    let kv_cache: u128 = gpu_layers
        .map(|layer| {
            let (k, v) = profile.kv_elements(layer);
            let part = |n: u64, num: u64, den: u64| {
                ctx.saturating_mul(u128::from(n))
                    .saturating_mul(u128::from(num))
                    / u128::from(den)
            };
            part(k, k_num, k_den).saturating_add(part(v, v_num, v_den))
        })
        .fold(0, u128::saturating_add);
    let kv_cache = saturate(kv_cache);

    let compute = compute_buffer(profile, settings);
    VramEstimate {
        weights,
        kv_cache,
        compute,
        overhead,
        total: weights
            .saturating_add(kv_cache)
            .saturating_add(compute)
            .saturating_add(overhead),
        layers_on_gpu,
        output_on_gpu,
    }
}

fn saturate(value: u128) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

/// See the module documentation.
fn compute_buffer(profile: &ModelProfile, settings: &ServerSettings) -> u64 {
    let ctx = u128::from(settings.context);
    let ubatch = u128::from(settings.ubatch).min(ctx.max(1));
    let mut with_flash = (ubatch.saturating_mul(u128::from(profile.feed_forward)) * 18)
        .saturating_add(ctx.saturating_mul(1024));
    if settings.cache_type_k.is_quantized() || settings.cache_type_v.is_quantized() {
        let widest = (0..profile.layers as usize)
            .map(|l| {
                let (k, v) = profile.kv_elements(l);
                k.max(v)
            })
            .max()
            .unwrap_or(0);
        with_flash = with_flash.saturating_add(ctx.saturating_mul(u128::from(widest)) * 2);
    }
    saturate(if settings.flash_attn {
        with_flash
    } else {
        (with_flash / 2).saturating_add(
            ctx.saturating_mul(ubatch)
                .saturating_mul(u128::from(profile.heads))
                .saturating_mul(4),
        )
    })
}

#[cfg(test)]
mod tests;
