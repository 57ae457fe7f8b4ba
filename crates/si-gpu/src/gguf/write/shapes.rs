//! Shapes of well-known models, with the layer weights in `weight_type` (ggml
//! id) and the output in `output_type`; `file_type` is `general.file_type`.

use super::LlamaShape;

#[allow(clippy::too_many_arguments)]
fn shape(
    name: &str,
    layers: u64,
    embedding: u64,
    heads: u64,
    kv_heads: u64,
    feed_forward: u64,
    vocab: u64,
    context: u64,
    types: (u32, u32, u32),
) -> LlamaShape {
    LlamaShape {
        name: name.to_owned(),
        layers,
        embedding,
        heads,
        kv_heads,
        feed_forward,
        vocab,
        context,
        weight_type: types.0,
        output_type: types.1,
        token_embd_type: types.0,
        file_type: types.2,
    }
}

/// TinyLlama 1.1B: 22 layers, width 2048, 32 heads / 4 KV heads.
pub fn tinyllama_1b(types: (u32, u32, u32)) -> LlamaShape {
    shape("TinyLlama 1.1B", 22, 2048, 32, 4, 5632, 32000, 2048, types)
}

/// Mistral 7B: 32 layers, width 4096, 32 heads / 8 KV heads.
pub fn mistral_7b(types: (u32, u32, u32)) -> LlamaShape {
    shape("Mistral 7B", 32, 4096, 32, 8, 14336, 32000, 32768, types)
}

/// Llama-3 8B: 32 layers, width 4096, 32 heads / 8 KV heads, 128k vocabulary.
pub fn llama3_8b(types: (u32, u32, u32)) -> LlamaShape {
    shape("Llama-3 8B", 32, 4096, 32, 8, 14336, 128256, 8192, types)
}

/// Llama-2 13B: 40 layers, width 5120, 40 heads, no grouped-query attention.
pub fn llama2_13b(types: (u32, u32, u32)) -> LlamaShape {
    shape("Llama-2 13B", 40, 5120, 40, 40, 13824, 32000, 4096, types)
}

/// The model files of the built-in configuration (the original deployment),
/// as header-only stand-ins with the real shapes: file name and shape.
pub fn original_deployment() -> Vec<(&'static str, LlamaShape)> {
    let named = |mut shape: LlamaShape, name: &str| {
        shape.name = name.to_owned();
        shape
    };
    vec![
        (
            "tiny-llama-1b.Q4_K_M.gguf",
            named(tinyllama_1b(Q4_K_M), "Tiny-LLaMA-1B"),
        ),
        (
            "bimedix2-8b.Q4_K_M.gguf",
            named(llama3_8b(Q4_K_M), "BiMediX2-8B"),
        ),
        (
            "medicine-llm-13b.Q6_K.gguf",
            named(llama2_13b(Q6_K), "Medicine-LLM-13B"),
        ),
        (
            "openinsurance-8b.Q4_K_M.gguf",
            named(llama3_8b(Q4_K_M), "OpenInsurance-8B"),
        ),
        (
            "biomistral-7b.Q4_K_M.gguf",
            named(mistral_7b(Q4_K_M), "BioMistral-7B"),
        ),
    ]
}

/// Everything in F16.
pub const F16: (u32, u32, u32) = (1, 1, 1);
/// Everything in Q4_0.
pub const Q4_0: (u32, u32, u32) = (2, 2, 2);
/// Q4_K layers, Q6_K output (what Q4_K_M mostly is).
pub const Q4_K_M: (u32, u32, u32) = (12, 14, 15);
/// Everything in Q6_K.
pub const Q6_K: (u32, u32, u32) = (14, 14, 18);
