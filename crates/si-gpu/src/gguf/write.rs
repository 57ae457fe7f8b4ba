//! Writing GGUF headers: the test fixtures of real model shapes (a few KB that
//! describe a 13B model exactly) and, with tensor data, small real models.

mod tiny;

pub mod shapes;

pub use tiny::tiny_llama;

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
