//! Writing GGUF headers: the test fixtures of real model shapes (a few KB that
//! describe a 13B model exactly) and, with tensor data, small real models.

use super::{Value, block_layout};

/// Builds a GGUF version 3 file.
#[derive(Clone, Debug, Default)]
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    tensors: Vec<Tensor>,
}

#[derive(Clone, Debug)]
struct Tensor {
    name: String,
    dims: Vec<u64>,
    ggml_type: u32,
    data: Option<Vec<u8>>,
}

/// Alignment of the data section and of each tensor in it (GGUF's default).
const ALIGNMENT: u64 = 32;

impl GgufWriter {
    /// An empty file.
    pub fn new() -> Self {
        GgufWriter::default()
    }

    /// Adds a metadata entry.
    pub fn meta(&mut self, key: &str, value: Value) -> &mut Self {
        self.metadata.push((key.to_owned(), value));
        self
    }

    /// Adds a tensor described but without data (a header-only file).
    pub fn tensor(&mut self, name: &str, dims: &[u64], ggml_type: u32) -> &mut Self {
        self.tensors.push(Tensor {
            name: name.to_owned(),
            dims: dims.to_vec(),
            ggml_type,
            data: None,
        });
        self
    }

    /// Adds a tensor with its data (which must be its exact size).
    pub fn tensor_with_data(
        &mut self,
        name: &str,
        dims: &[u64],
        ggml_type: u32,
        data: Vec<u8>,
    ) -> &mut Self {
        self.tensors.push(Tensor {
            name: name.to_owned(),
            dims: dims.to_vec(),
            ggml_type,
            data: Some(data),
        });
        self
    }

    /// The file: the header, then, if any tensor has data, the data section.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            put_string(&mut out, key);
            out.extend_from_slice(&value_type(value).to_le_bytes());
            put_value(&mut out, value);
        }
        let mut offset = 0u64;
        let mut offsets = Vec::with_capacity(self.tensors.len());
        for tensor in &self.tensors {
            put_string(&mut out, &tensor.name);
            out.extend_from_slice(&(tensor.dims.len() as u32).to_le_bytes());
            for dim in &tensor.dims {
                out.extend_from_slice(&dim.to_le_bytes());
            }
            out.extend_from_slice(&tensor.ggml_type.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offsets.push(offset);
            offset = align(offset.saturating_add(tensor_bytes(tensor)));
        }
        if self.tensors.iter().any(|t| t.data.is_some()) {
            out.resize(align(out.len() as u64) as usize, 0);
            let start = out.len();
            for (tensor, at) in self.tensors.iter().zip(offsets) {
                out.resize(start + at as usize, 0);
                match &tensor.data {
                    Some(data) => out.extend_from_slice(data),
                    None => out.resize(out.len() + tensor_bytes(tensor) as usize, 0),
                }
            }
            out.resize(align(out.len() as u64) as usize, 0);
        }
        out
    }
}

fn align(offset: u64) -> u64 {
    offset.div_ceil(ALIGNMENT).saturating_mul(ALIGNMENT)
}

fn tensor_bytes(tensor: &Tensor) -> u64 {
    // Saturating: a test may describe an impossible tensor on purpose.
    let elements = tensor.dims.iter().fold(1u64, |a, d| a.saturating_mul(*d));
    let (block, bytes) = block_layout(tensor.ggml_type).unwrap_or((1, 1));
    elements.div_ceil(block).saturating_mul(bytes)
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// The GGUF type written for `value`: u32, i32, f32, bool, string, array, or u64
/// for integers too large for 32 bits.
fn value_type(value: &Value) -> u32 {
    match value {
        Value::Uint(v) if *v <= u64::from(u32::MAX) => 4,
        Value::Uint(_) => 10,
        Value::Int(v) if i32::try_from(*v).is_ok() => 5,
        Value::Int(_) => 11,
        Value::Float(_) => 6,
        Value::Bool(_) => 7,
        Value::String(_) => 8,
        Value::Array { .. } => 9,
    }
}

fn put_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Uint(v) if *v <= u64::from(u32::MAX) => {
            out.extend_from_slice(&(*v as u32).to_le_bytes());
        }
        Value::Uint(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Int(v) => match i32::try_from(*v) {
            Ok(v) => out.extend_from_slice(&v.to_le_bytes()),
            Err(_) => out.extend_from_slice(&v.to_le_bytes()),
        },
        Value::Float(v) => out.extend_from_slice(&(*v as f32).to_le_bytes()),
        Value::Bool(v) => out.push(u8::from(*v)),
        Value::String(s) => put_string(out, s),
        Value::Array {
            element_type,
            items,
            ..
        } => {
            let items = items.as_deref().unwrap_or(&[]);
            out.extend_from_slice(&element_type.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                put_value(out, item);
            }
        }
    }
}

/// The shape of a llama-architecture model, as its GGUF header states it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LlamaShape {
    /// `general.name`.
    pub name: String,
    /// Repeating layers (`block_count`).
    pub layers: u64,
    /// `embedding_length`.
    pub embedding: u64,
    /// Attention heads.
    pub heads: u64,
    /// Key/value heads (grouped-query attention when fewer than `heads`).
    pub kv_heads: u64,
    /// `feed_forward_length`.
    pub feed_forward: u64,
    /// Vocabulary size (rows of `token_embd` and `output`).
    pub vocab: u64,
    /// Training context (`context_length`).
    pub context: u64,
    /// ggml type of the layers' weight matrices.
    pub weight_type: u32,
    /// ggml type of `output.weight`.
    pub output_type: u32,
    /// ggml type of `token_embd.weight`.
    pub token_embd_type: u32,
    /// `general.file_type`.
    pub file_type: u32,
}

/// A header-only GGUF describing `shape`: the metadata llama.cpp reads and every
/// tensor of a llama model (norms in F32).
pub fn llama_header(shape: &LlamaShape) -> Vec<u8> {
    let arch = |key: &str| format!("llama.{key}");
    let head_dim = shape.embedding / shape.heads.max(1);
    let kv = head_dim * shape.kv_heads;
    let mut writer = GgufWriter::new();
    writer
        .meta("general.architecture", Value::String("llama".into()))
        .meta("general.name", Value::String(shape.name.clone()))
        .meta("general.file_type", Value::Uint(u64::from(shape.file_type)))
        .meta(&arch("block_count"), Value::Uint(shape.layers))
        .meta(&arch("context_length"), Value::Uint(shape.context))
        .meta(&arch("embedding_length"), Value::Uint(shape.embedding))
        .meta(
            &arch("feed_forward_length"),
            Value::Uint(shape.feed_forward),
        )
        .meta(&arch("attention.head_count"), Value::Uint(shape.heads))
        .meta(
            &arch("attention.head_count_kv"),
            Value::Uint(shape.kv_heads),
        )
        .meta(&arch("vocab_size"), Value::Uint(shape.vocab))
        .tensor(
            "token_embd.weight",
            &[shape.embedding, shape.vocab],
            shape.token_embd_type,
        );
    let (e, f, w) = (shape.embedding, shape.feed_forward, shape.weight_type);
    for layer in 0..shape.layers {
        let name = |t: &str| format!("blk.{layer}.{t}.weight");
        writer
            .tensor(&name("attn_norm"), &[e], 0)
            .tensor(&name("attn_q"), &[e, e], w)
            .tensor(&name("attn_k"), &[e, kv], w)
            .tensor(&name("attn_v"), &[e, kv], w)
            .tensor(&name("attn_output"), &[e, e], w)
            .tensor(&name("ffn_norm"), &[e], 0)
            .tensor(&name("ffn_gate"), &[e, f], w)
            .tensor(&name("ffn_up"), &[e, f], w)
            .tensor(&name("ffn_down"), &[f, e], w);
    }
    writer.tensor("output_norm.weight", &[e], 0).tensor(
        "output.weight",
        &[e, shape.vocab],
        shape.output_type,
    );
    writer.to_bytes()
}

/// Shapes of well-known models, with the layer weights in `weight_type` (ggml
/// id) and the output in `output_type`; `file_type` is `general.file_type`.
pub mod shapes {
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
}

/// A tiny llama-architecture model with random weights that llama-server loads
/// and answers with in milliseconds: 2 layers, width 64, 4 heads, context 256, a
/// byte-level BPE vocabulary (the 256 bytes, a few merges, ChatML's special
/// tokens) and an embedded ChatML template. Only letters and spaces are ever
/// generated, so answers are plain ASCII. The same `seed` gives the same file.
pub fn tiny_llama(seed: u64) -> Vec<u8> {
    const WIDTH: u64 = 64;
    const HEADS: u64 = 4;
    const FEED_FORWARD: u64 = 128;
    const LAYERS: u64 = 2;
    let tokens = tiny_vocabulary();
    let vocab = tokens.len() as u64;
    let specials = TINY_SPECIALS.len();
    let token_type: Vec<Value> = (0..tokens.len())
        .map(|i| Value::Int(if i >= tokens.len() - specials { 3 } else { 1 }))
        .collect();
    let id_of = |name: &str| tokens.iter().position(|t| t == name).unwrap_or(0) as u64;
    let strings = |items: Vec<String>| Value::Array {
        element_type: 8,
        len: items.len() as u64,
        items: Some(items.into_iter().map(Value::String).collect()),
    };
    let mut rng = seed | 1;
    let mut random = |n: u64| -> Vec<u8> {
        (0..n)
            .flat_map(|_| {
                // xorshift64*: reproducible, no dependency, good enough for weights.
                rng ^= rng >> 12;
                rng ^= rng << 25;
                rng ^= rng >> 27;
                let unit =
                    (rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32;
                ((unit - 0.5) * 0.2).to_le_bytes()
            })
            .collect()
    };
    let ones = |n: u64| -> Vec<u8> { (0..n).flat_map(|_| 1.0f32.to_le_bytes()).collect() };
    let set = |data: &mut [u8], at: usize, value: f32| {
        data[at * 4..at * 4 + 4].copy_from_slice(&value.to_le_bytes());
    };
    let width = WIDTH as usize;
    // Dimension 0 of the residual stream is a constant 10: every embedding has it,
    // and no layer writes to it (its rows of attn_output and ffn_down are zero).
    // The output rows of tokens other than letters and spaces weigh it -40, so
    // their logits are far below any letter's, whatever the random weights do.
    let mut embeddings = random(WIDTH * vocab);
    let mut output = random(WIDTH * vocab);
    for (i, token) in tokens.iter().enumerate() {
        set(&mut embeddings, i * width, 10.0);
        let speakable = token.chars().all(|c| c.is_ascii_alphabetic() || c == 'Ġ');
        set(&mut output, i * width, if speakable { 0.0 } else { -40.0 });
    }
    let no_dimension_0 = |mut weights: Vec<u8>, inputs: usize| {
        weights[..inputs * 4].fill(0);
        weights
    };
    let mut w = GgufWriter::new();
    w.meta("general.architecture", Value::String("llama".into()))
        .meta("general.name", Value::String("si tiny test model".into()))
        .meta("general.file_type", Value::Uint(0))
        .meta("llama.context_length", Value::Uint(256))
        .meta("llama.embedding_length", Value::Uint(WIDTH))
        .meta("llama.block_count", Value::Uint(LAYERS))
        .meta("llama.feed_forward_length", Value::Uint(FEED_FORWARD))
        .meta("llama.attention.head_count", Value::Uint(HEADS))
        .meta("llama.attention.head_count_kv", Value::Uint(HEADS))
        .meta("llama.rope.dimension_count", Value::Uint(WIDTH / HEADS))
        .meta("llama.rope.freq_base", Value::Float(10000.0))
        .meta("llama.attention.layer_norm_rms_epsilon", Value::Float(1e-5))
        .meta("llama.vocab_size", Value::Uint(vocab))
        .meta("tokenizer.ggml.model", Value::String("gpt2".into()))
        .meta("tokenizer.ggml.pre", Value::String("gpt-2".into()))
        .meta("tokenizer.ggml.tokens", strings(tokens.clone()))
        .meta(
            "tokenizer.ggml.token_type",
            Value::Array {
                element_type: 5,
                len: token_type.len() as u64,
                items: Some(token_type),
            },
        )
        .meta(
            "tokenizer.ggml.merges",
            strings(
                TINY_MERGES
                    .iter()
                    .map(|(a, b)| format!("{a} {b}"))
                    .collect(),
            ),
        )
        .meta(
            "tokenizer.ggml.bos_token_id",
            Value::Uint(id_of("<|im_start|>")),
        )
        .meta(
            "tokenizer.ggml.eos_token_id",
            Value::Uint(id_of("<|im_end|>")),
        )
        .meta("tokenizer.ggml.add_bos_token", Value::Bool(false))
        .meta("tokenizer.chat_template", Value::String(CHATML.into()))
        .tensor_with_data("token_embd.weight", &[WIDTH, vocab], 0, embeddings)
        .tensor_with_data("output_norm.weight", &[WIDTH], 0, ones(WIDTH))
        .tensor_with_data("output.weight", &[WIDTH, vocab], 0, output);
    for layer in 0..LAYERS {
        let name = |t: &str| format!("blk.{layer}.{t}.weight");
        w.tensor_with_data(&name("attn_norm"), &[WIDTH], 0, ones(WIDTH));
        for t in ["attn_q", "attn_k", "attn_v"] {
            w.tensor_with_data(&name(t), &[WIDTH, WIDTH], 0, random(WIDTH * WIDTH));
        }
        let attn_output = no_dimension_0(random(WIDTH * WIDTH), width);
        w.tensor_with_data(&name("attn_output"), &[WIDTH, WIDTH], 0, attn_output);
        let ffn_down = no_dimension_0(random(FEED_FORWARD * WIDTH), FEED_FORWARD as usize);
        w.tensor_with_data(&name("ffn_norm"), &[WIDTH], 0, ones(WIDTH))
            .tensor_with_data(
                &name("ffn_gate"),
                &[WIDTH, FEED_FORWARD],
                0,
                random(WIDTH * FEED_FORWARD),
            )
            .tensor_with_data(
                &name("ffn_up"),
                &[WIDTH, FEED_FORWARD],
                0,
                random(WIDTH * FEED_FORWARD),
            )
            .tensor_with_data(&name("ffn_down"), &[FEED_FORWARD, WIDTH], 0, ffn_down);
    }
    w.to_bytes()
}

/// ChatML, as llama.cpp's template engine reads it.
const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// A few merges of common English pairs (byte-level spellings).
const TINY_MERGES: [(&str, &str); 6] = [
    ("Ġ", "t"),
    ("h", "e"),
    ("i", "n"),
    ("e", "r"),
    ("a", "n"),
    ("Ġt", "he"),
];

/// The special tokens, last in the vocabulary.
const TINY_SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// The 256 byte tokens (GPT-2's printable stand-ins), the merged tokens, the
/// special tokens.
fn tiny_vocabulary() -> Vec<String> {
    let mut tokens: Vec<String> = (0u16..256)
        .map(|b| byte_char(b as u8).to_string())
        .collect();
    tokens.extend(TINY_MERGES.iter().map(|(a, b)| format!("{a}{b}")));
    tokens.extend(TINY_SPECIALS.iter().map(|s| (*s).to_owned()));
    tokens
}

/// GPT-2's byte-to-character map: printable bytes stand for themselves, the
/// others for characters from U+0100 on, in byte order.
fn byte_char(byte: u8) -> char {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable(byte) {
        return char::from(byte);
    }
    let offset = (0..byte).filter(|b| !printable(*b)).count() as u32;
    char::from_u32(256 + offset).unwrap_or('?')
}
