//! What a model is, from its GGUF header: the shape that sizes its KV cache and
//! compute buffer, and where its weight bytes are (per layer, output, host-side
//! embeddings).

use crate::gguf::{Gguf, Value, file_type_name, type_name};

/// Why a header does not describe a model this crate can size.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// A key the estimate needs is missing or not a number.
    #[error("the header has no usable `{0}`")]
    Missing(String),
    /// A tensor of a type whose size is not known.
    #[error("tensor `{name}` has ggml type {ggml_type}, whose size is not known")]
    UnknownType {
        /// The tensor.
        name: String,
        /// Its type id.
        ggml_type: u32,
    },
    /// Values that contradict each other.
    #[error("the header is inconsistent: {0}")]
    Inconsistent(String),
}

/// A model's shape and weight bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelProfile {
    /// `general.architecture`, e.g. `llama`.
    pub architecture: String,
    /// `general.name`, if set.
    pub name: Option<String>,
    /// Repeating layers.
    pub layers: u32,
    /// Context the model was trained for.
    pub context_length: u64,
    /// Embedding width.
    pub embedding: u64,
    /// Feed-forward width.
    pub feed_forward: u64,
    /// Attention heads.
    pub heads: u64,
    /// Key/value heads of each layer.
    pub kv_heads: Vec<u64>,
    /// Width of one key head.
    pub key_length: u64,
    /// Width of one value head.
    pub value_length: u64,
    /// Quantisation: `general.file_type` by name, else the commonest tensor type.
    pub quantization: String,
    /// Elements of all tensors.
    pub parameters: u64,
    /// Bytes of all tensors.
    pub weights_bytes: u64,
    /// Bytes that stay in host memory whatever `-ngl` says (`token_embd`).
    pub host_bytes: u64,
    /// Bytes of the output layer (`output*`), offloaded first.
    pub output_bytes: u64,
    /// Bytes of each repeating layer (`blk.N.*`).
    pub layer_bytes: Vec<u64>,
    /// Bytes of any other tensor (e.g. rope factors), kept with the output layer.
    pub other_bytes: u64,
}

impl ModelProfile {
    /// The profile `gguf` describes.
    pub fn from_gguf(gguf: &Gguf) -> Result<ModelProfile, ProfileError> {
        let architecture = gguf
            .get("general.architecture")
            .and_then(Value::as_str)
            .ok_or_else(|| ProfileError::Missing("general.architecture".into()))?
            .to_owned();
        let key = |k: &str| format!("{architecture}.{k}");
        let number = |k: &str| {
            gguf.get(&key(k))
                .and_then(Value::as_u64)
                .ok_or_else(|| ProfileError::Missing(key(k)))
        };
        let layers = number("block_count")?;
        let layers = u32::try_from(layers)
            .ok()
            .filter(|l| (1..=4096).contains(l))
            .ok_or_else(|| ProfileError::Inconsistent(format!("{layers} layers")))?;
        let embedding = bounded(&key("embedding_length"), number("embedding_length")?)?;
        let heads = bounded(
            &key("attention.head_count"),
            number("attention.head_count")?,
        )?;
        let kv_heads = kv_heads(gguf.get(&key("attention.head_count_kv")), heads, layers)?;
        let head_dim = embedding / heads;
        let key_length = bounded(
            &key("attention.key_length"),
            number("attention.key_length").unwrap_or(head_dim.max(1)),
        )?;
        let value_length = bounded(
            &key("attention.value_length"),
            number("attention.value_length").unwrap_or(head_dim.max(1)),
        )?;
        let feed_forward = bounded(
            &key("feed_forward_length"),
            number("feed_forward_length").unwrap_or(4 * embedding),
        )?;
        let mut profile = ModelProfile {
            name: gguf
                .get("general.name")
                .and_then(Value::as_str)
                .map(str::to_owned),
            layers,
            context_length: number("context_length")?,
            embedding,
            feed_forward,
            heads,
            kv_heads,
            key_length,
            value_length,
            quantization: String::new(),
            parameters: 0,
            weights_bytes: 0,
            host_bytes: 0,
            output_bytes: 0,
            layer_bytes: vec![0; layers as usize],
            other_bytes: 0,
            architecture,
        };
        profile.add_tensors(gguf)?;
        if profile.weights_bytes > MAX_WEIGHT_BYTES {
            return Err(ProfileError::Inconsistent(format!(
                "{} bytes of weights",
                profile.weights_bytes
            )));
        }
        profile.quantization = match gguf.get("general.file_type").and_then(Value::as_u64) {
            Some(id) if file_type_name(id as u32) != "unknown" => {
                file_type_name(id as u32).to_owned()
            }
            _ => commonest_type(gguf),
        };
        Ok(profile)
    }

    fn add_tensors(&mut self, gguf: &Gguf) -> Result<(), ProfileError> {
        for tensor in &gguf.tensors {
            let bytes = tensor.bytes().ok_or_else(|| ProfileError::UnknownType {
                name: tensor.name.clone(),
                ggml_type: tensor.ggml_type,
            })?;
            self.parameters = self.parameters.saturating_add(tensor.elements());
            self.weights_bytes = self.weights_bytes.saturating_add(bytes);
            let slot = if tensor.name.starts_with("token_embd") {
                &mut self.host_bytes
            } else if tensor.name.starts_with("output") {
                &mut self.output_bytes
            } else if let Some(layer) = layer_of(&tensor.name)
                && let Some(slot) = self.layer_bytes.get_mut(layer)
            {
                slot
            } else {
                &mut self.other_bytes
            };
            *slot = slot.saturating_add(bytes);
        }
        Ok(())
    }

    /// Key and value elements one token takes in the KV cache of `layer`.
    pub fn kv_elements(&self, layer: usize) -> (u64, u64) {
        let kv_heads = self.kv_heads.get(layer).copied().unwrap_or(self.heads);
        (
            self.key_length.saturating_mul(kv_heads),
            self.value_length.saturating_mul(kv_heads),
        )
    }
}

/// Widths and counts above this are not a real model: refusing them keeps every
/// product in the estimate far from overflowing.
const MAX_DIMENSION: u64 = 1 << 20;
/// Nor are more than 1 PiB of weights.
const MAX_WEIGHT_BYTES: u64 = 1 << 50;

/// `value` if it is 1 to [`MAX_DIMENSION`].
fn bounded(key: &str, value: u64) -> Result<u64, ProfileError> {
    if (1..=MAX_DIMENSION).contains(&value) {
        Ok(value)
    } else {
        Err(ProfileError::Inconsistent(format!(
            "{key} is {value}, expected 1 to {MAX_DIMENSION}"
        )))
    }
}

/// `head_count_kv`: absent (no grouped-query attention), one number, or one per
/// layer.
fn kv_heads(value: Option<&Value>, heads: u64, layers: u32) -> Result<Vec<u64>, ProfileError> {
    let per_layer = match value {
        None => vec![heads; layers as usize],
        Some(Value::Array {
            items: Some(items), ..
        }) if items.len() == layers as usize => {
            items.iter().map(|v| v.as_u64().unwrap_or(heads)).collect()
        }
        Some(v) => match v.as_u64() {
            Some(n) => vec![n; layers as usize],
            None => {
                return Err(ProfileError::Inconsistent(
                    "attention.head_count_kv is neither a number nor one per layer".into(),
                ));
            }
        },
    };
    if per_layer.iter().any(|&n| n > heads) {
        return Err(ProfileError::Inconsistent(
            "more key/value heads than attention heads".into(),
        ));
    }
    Ok(per_layer)
}

/// `blk.N.…` → N.
fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// The ggml type holding the most bytes, by name.
fn commonest_type(gguf: &Gguf) -> String {
    let mut by_type: std::collections::BTreeMap<u32, u64> = Default::default();
    for tensor in &gguf.tensors {
        let bytes = by_type.entry(tensor.ggml_type).or_default();
        *bytes = bytes.saturating_add(tensor.bytes().unwrap_or(0));
    }
    by_type
        .into_iter()
        .max_by_key(|(_, bytes)| *bytes)
        .map_or_else(|| "unknown".to_owned(), |(id, _)| type_name(id).to_owned())
}
