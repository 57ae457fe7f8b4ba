//! A tiny llama-architecture model with random weights, small enough to write in
//! a test and real enough for llama-server to load and answer with.

use super::GgufWriter;
use crate::gguf::Value;

const WIDTH: u64 = 64;
const HEADS: u64 = 4;
const FEED_FORWARD: u64 = 128;
const LAYERS: u64 = 2;

/// A tiny llama-architecture model with random weights that llama-server loads
/// and answers with in milliseconds: 2 layers, width 64, 4 heads, context 256, a
/// byte-level BPE vocabulary (the 256 bytes, a few merges, ChatML's special
/// tokens) and an embedded ChatML template. Only letters and spaces are ever
/// generated, so answers are plain ASCII. The same `seed` gives the same file.
pub fn tiny_llama(seed: u64) -> Vec<u8> {
    let tokens = tiny_vocabulary();
    let vocab = tokens.len() as u64;
    let mut random = Random(seed | 1);
    let width = WIDTH as usize;
    // Dimension 0 of the residual stream is a constant 10: every embedding has it,
    // and no layer writes to it (its rows of attn_output and ffn_down are zero).
    // The output rows of tokens other than letters and spaces weigh it -40, so
    // their logits are far below any letter's, whatever the random weights do.
    let mut embeddings = random.weights(WIDTH * vocab);
    let mut output = random.weights(WIDTH * vocab);
    for (i, token) in tokens.iter().enumerate() {
        set(&mut embeddings, i * width, 10.0);
        let speakable = token.chars().all(|c| c.is_ascii_alphabetic() || c == 'Ġ');
        set(&mut output, i * width, if speakable { 0.0 } else { -40.0 });
    }
    let mut w = GgufWriter::new();
    shape_metadata(&mut w, vocab);
    tokenizer_metadata(&mut w, &tokens);
    w.tensor_with_data("token_embd.weight", &[WIDTH, vocab], 0, embeddings)
        .tensor_with_data("output_norm.weight", &[WIDTH], 0, ones(WIDTH))
        .tensor_with_data("output.weight", &[WIDTH, vocab], 0, output);
    for layer in 0..LAYERS {
        layer_tensors(&mut w, layer, &mut random);
    }
    w.to_bytes()
}

/// The model's shape, as llama.cpp reads it.
fn shape_metadata(w: &mut GgufWriter, vocab: u64) {
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
        .meta("llama.vocab_size", Value::Uint(vocab));
}

/// The byte-level BPE tokenizer over `tokens`, and the chat template.
fn tokenizer_metadata(w: &mut GgufWriter, tokens: &[String]) {
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
    let merges = TINY_MERGES
        .iter()
        .map(|(a, b)| format!("{a} {b}"))
        .collect();
    w.meta("tokenizer.ggml.model", Value::String("gpt2".into()))
        .meta("tokenizer.ggml.pre", Value::String("gpt-2".into()))
        .meta("tokenizer.ggml.tokens", strings(tokens.to_vec()))
        .meta(
            "tokenizer.ggml.token_type",
            Value::Array {
                element_type: 5,
                len: token_type.len() as u64,
                items: Some(token_type),
            },
        )
        .meta("tokenizer.ggml.merges", strings(merges))
        .meta(
            "tokenizer.ggml.bos_token_id",
            Value::Uint(id_of("<|im_start|>")),
        )
        .meta(
            "tokenizer.ggml.eos_token_id",
            Value::Uint(id_of("<|im_end|>")),
        )
        .meta("tokenizer.ggml.add_bos_token", Value::Bool(false))
        .meta("tokenizer.chat_template", Value::String(CHATML.into()));
}

/// One layer's tensors. The weights are drawn in a fixed order, so that a seed
/// always gives the same file.
fn layer_tensors(w: &mut GgufWriter, layer: u64, random: &mut Random) {
    let name = |t: &str| format!("blk.{layer}.{t}.weight");
    w.tensor_with_data(&name("attn_norm"), &[WIDTH], 0, ones(WIDTH));
    for t in ["attn_q", "attn_k", "attn_v"] {
        w.tensor_with_data(&name(t), &[WIDTH, WIDTH], 0, random.weights(WIDTH * WIDTH));
    }
    let attn_output = no_dimension_0(random.weights(WIDTH * WIDTH), WIDTH as usize);
    w.tensor_with_data(&name("attn_output"), &[WIDTH, WIDTH], 0, attn_output);
    let ffn_down = random.weights(FEED_FORWARD * WIDTH);
    let ffn_down = no_dimension_0(ffn_down, FEED_FORWARD as usize);
    let ffn_gate = random.weights(WIDTH * FEED_FORWARD);
    let ffn_up = random.weights(WIDTH * FEED_FORWARD);
    w.tensor_with_data(&name("ffn_norm"), &[WIDTH], 0, ones(WIDTH))
        .tensor_with_data(&name("ffn_gate"), &[WIDTH, FEED_FORWARD], 0, ffn_gate)
        .tensor_with_data(&name("ffn_up"), &[WIDTH, FEED_FORWARD], 0, ffn_up)
        .tensor_with_data(&name("ffn_down"), &[FEED_FORWARD, WIDTH], 0, ffn_down);
}

/// xorshift64*: reproducible, no dependency, good enough for weights.
struct Random(u64);

impl Random {
    /// `n` f32 weights in [-0.1, 0.1), little-endian.
    fn weights(&mut self, n: u64) -> Vec<u8> {
        (0..n).flat_map(|_| self.next().to_le_bytes()).collect()
    }

    fn next(&mut self) -> f32 {
        let rng = &mut self.0;
        *rng ^= *rng >> 12;
        *rng ^= *rng << 25;
        *rng ^= *rng >> 27;
        let unit = (rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32;
        (unit - 0.5) * 0.2
    }
}

/// `n` f32 ones, little-endian.
fn ones(n: u64) -> Vec<u8> {
    (0..n).flat_map(|_| 1.0f32.to_le_bytes()).collect()
}

/// Sets the `at`-th f32 of `data`.
fn set(data: &mut [u8], at: usize, value: f32) {
    data[at * 4..at * 4 + 4].copy_from_slice(&value.to_le_bytes());
}

/// `weights` with the first `inputs` values zeroed: the row that writes
/// dimension 0 of the residual stream.
fn no_dimension_0(mut weights: Vec<u8>, inputs: usize) -> Vec<u8> {
    weights[..inputs * 4].fill(0);
    weights
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
