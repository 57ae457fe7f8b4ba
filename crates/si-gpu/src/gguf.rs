//! Reading a GGUF file's header: metadata and tensor infos, never tensor data.
//!
//! The layout (ggml's `docs/gguf.md`): little-endian; magic `GGUF`; version (1-3);
//! tensor count and metadata count (u32 in version 1, u64 after); the metadata
//! entries (key string, value type, value); the tensor infos (name, dimensions,
//! ggml type, offset into the data section).
//!
//! Every length and count in the file is checked against the bytes that remain
//! before anything is allocated or read, so a truncated or hostile file gives a
//! [`GgufError`], never a panic or a huge allocation. Large arrays (a tokenizer's
//! vocabulary) are walked and checked but not kept.

mod types;
pub mod write;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

pub use types::{block_layout, file_type_name, type_name};

/// The most header bytes read from a file. Real headers are a few MB (a large
/// vocabulary and its merges); anything past this is refused rather than read.
pub const MAX_HEADER_BYTES: u64 = 128 << 20;
/// Arrays longer than this (and nested ones) are checked but not kept.
const KEEP_ARRAY_ITEMS: u64 = 4096;
/// Arrays of arrays deeper than this are refused.
const MAX_NESTING: u32 = 4;
/// ggml tensors have at most 4 dimensions.
const MAX_DIMS: u32 = 4;

/// Why a GGUF header could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// Not a GGUF file.
    #[error("not a GGUF file (it does not start with `GGUF`)")]
    NotGguf,
    /// A version this reader does not know.
    #[error("GGUF version {0} is not supported (1 to 3 are)")]
    Version(u32),
    /// The header ends before what it declares.
    #[error("the header is truncated: {0} runs past the end of the file")]
    Truncated(&'static str),
    /// A value that cannot be right.
    #[error("the header is malformed: {0}")]
    Malformed(String),
    /// The header is larger than this reader accepts.
    #[error("the header is larger than {} MiB", MAX_HEADER_BYTES >> 20)]
    TooLarge,
}

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Any unsigned integer type.
    Uint(u64),
    /// Any signed integer type.
    Int(i64),
    /// f32 or f64.
    Float(f64),
    /// bool.
    Bool(bool),
    /// string.
    String(String),
    /// An array: its element type, its length, and its items when short enough to keep.
    Array {
        /// GGUF value type of the elements.
        element_type: u32,
        /// Number of elements.
        len: u64,
        /// The elements, when at most a few thousand.
        items: Option<Vec<Value>>,
    },
}

impl Value {
    /// As an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Uint(v) => Some(*v),
            Value::Int(v) => u64::try_from(*v).ok(),
            _ => None,
        }
    }

    /// As a string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
}

/// One tensor's description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// Its name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Its dimensions, innermost first.
    pub dims: Vec<u64>,
    /// Its ggml type id.
    pub ggml_type: u32,
    /// Where its data starts, from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Number of elements (the product of the dimensions).
    pub fn elements(&self) -> u64 {
        // Checked when read: the product fits.
        self.dims.iter().product()
    }

    /// Bytes of its data, or `None` for a type this reader does not know.
    pub fn bytes(&self) -> Option<u64> {
        let (block, bytes) = block_layout(self.ggml_type)?;
        Some(self.elements().div_ceil(block) * bytes)
    }
}

/// A parsed header.
#[derive(Clone, Debug, PartialEq)]
pub struct Gguf {
    /// Format version.
    pub version: u32,
    /// Metadata by key.
    pub metadata: BTreeMap<String, Value>,
    /// Tensor infos, in file order.
    pub tensors: Vec<TensorInfo>,
}

impl Gguf {
    /// Reads the header of the file at `path` (at most [`MAX_HEADER_BYTES`]).
    pub fn open(path: &Path) -> Result<Gguf, GgufError> {
        let io = |source| GgufError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let mut bytes = Vec::new();
        file.take(MAX_HEADER_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        match Gguf::parse(&bytes) {
            Err(GgufError::Truncated(_)) if bytes.len() as u64 > MAX_HEADER_BYTES => {
                Err(GgufError::TooLarge)
            }
            parsed => parsed,
        }
    }

    /// Parses a header from the start of `bytes` (tensor data, if present, is not
    /// looked at).
    pub fn parse(bytes: &[u8]) -> Result<Gguf, GgufError> {
        let mut cursor = Cursor {
            bytes,
            pos: 0,
            wide: false,
        };
        if cursor
            .take(4, "the magic")
            .map_err(|_| GgufError::NotGguf)?
            != b"GGUF"
        {
            return Err(GgufError::NotGguf);
        }
        let version = cursor.u32("the version")?;
        if !(1..=3).contains(&version) {
            return Err(GgufError::Version(version));
        }
        cursor.wide = version >= 2;
        let tensor_count = cursor.count("the tensor count")?;
        let metadata_count = cursor.count("the metadata count")?;
        let mut metadata = BTreeMap::new();
        for _ in 0..metadata_count {
            let key = cursor.string("a metadata key")?;
            let value_type = cursor.u32("a value type")?;
            let value = cursor.value(value_type, 0)?;
            metadata.insert(key, value);
        }
        let mut tensors = Vec::new();
        for _ in 0..tensor_count {
            tensors.push(cursor.tensor_info()?);
        }
        Ok(Gguf {
            version,
            metadata,
            tensors,
        })
    }

    /// The metadata value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }
}

/// Reads little-endian values from a byte slice, checking every length first.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Version 2 and later: counts and lengths are u64.
    wide: bool,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(GgufError::Truncated(what));
        }
        let taken = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], GgufError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count or length: u32 in version 1, u64 after.
    fn count(&mut self, what: &'static str) -> Result<u64, GgufError> {
        if self.wide {
            self.u64(what)
        } else {
            self.u32(what).map(u64::from)
        }
    }

    /// A length that must fit in what remains, `unit` bytes per item at least.
    fn bounded(&mut self, what: &'static str, unit: u64) -> Result<u64, GgufError> {
        let n = self.count(what)?;
        if n.saturating_mul(unit.max(1)) > self.remaining() as u64 {
            return Err(GgufError::Truncated(what));
        }
        Ok(n)
    }

    fn string(&mut self, what: &'static str) -> Result<String, GgufError> {
        let len = self.bounded(what, 1)?;
        let bytes = self.take(len as usize, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| GgufError::Malformed(format!("{what} is not UTF-8")))
    }

    /// Skips a string, checking its bounds only.
    fn skip_string(&mut self, what: &'static str) -> Result<(), GgufError> {
        let len = self.bounded(what, 1)?;
        self.take(len as usize, what).map(|_| ())
    }

    fn value(&mut self, value_type: u32, depth: u32) -> Result<Value, GgufError> {
        const WHAT: &str = "a metadata value";
        Ok(match value_type {
            0 => Value::Uint(u64::from(self.array::<1>(WHAT)?[0])),
            1 => Value::Int(i64::from(i8::from_le_bytes(self.array(WHAT)?))),
            2 => Value::Uint(u64::from(u16::from_le_bytes(self.array(WHAT)?))),
            3 => Value::Int(i64::from(i16::from_le_bytes(self.array(WHAT)?))),
            4 => Value::Uint(u64::from(self.u32(WHAT)?)),
            5 => Value::Int(i64::from(i32::from_le_bytes(self.array(WHAT)?))),
            6 => Value::Float(f64::from(f32::from_le_bytes(self.array(WHAT)?))),
            7 => match self.array::<1>(WHAT)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                other => return Err(GgufError::Malformed(format!("bool value {other}"))),
            },
            8 => Value::String(self.string(WHAT)?),
            9 => self.array_value(depth)?,
            10 => Value::Uint(self.u64(WHAT)?),
            11 => Value::Int(i64::from_le_bytes(self.array(WHAT)?)),
            12 => Value::Float(f64::from_le_bytes(self.array(WHAT)?)),
            other => return Err(GgufError::Malformed(format!("value type {other}"))),
        })
    }

    fn array_value(&mut self, depth: u32) -> Result<Value, GgufError> {
        if depth >= MAX_NESTING {
            return Err(GgufError::Malformed("arrays nested too deeply".into()));
        }
        let element_type = self.u32("an array's element type")?;
        let unit = match element_type {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            10..=12 => 8,
            // A string or an array is at least its length field.
            8 | 9 if self.wide => 8,
            8 | 9 => 4,
            other => return Err(GgufError::Malformed(format!("array of value type {other}"))),
        };
        let len = self.bounded("an array", unit)?;
        // Only short top-level arrays of scalars or strings are kept, so that what
        // is kept stays small whatever the nesting.
        if len > KEEP_ARRAY_ITEMS || depth > 0 || element_type == 9 {
            for _ in 0..len {
                match element_type {
                    8 => self.skip_string("an array's string")?,
                    _ => {
                        self.value(element_type, depth + 1)?;
                    }
                }
            }
            return Ok(Value::Array {
                element_type,
                len,
                items: None,
            });
        }
        let mut items = Vec::new();
        for _ in 0..len {
            items.push(self.value(element_type, depth + 1)?);
        }
        Ok(Value::Array {
            element_type,
            len,
            items: Some(items),
        })
    }

    fn tensor_info(&mut self) -> Result<TensorInfo, GgufError> {
        let name = self.string("a tensor name")?;
        let n_dims = self.u32("a tensor's dimension count")?;
        if n_dims > MAX_DIMS {
            return Err(GgufError::Malformed(format!(
                "tensor `{name}` has {n_dims} dimensions (at most {MAX_DIMS})"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        let mut elements: u64 = 1;
        for _ in 0..n_dims {
            let dim = self.count("a tensor dimension")?;
            elements = elements.checked_mul(dim).ok_or_else(|| {
                GgufError::Malformed(format!("tensor `{name}` has too many elements"))
            })?;
            dims.push(dim);
        }
        let ggml_type = self.u32("a tensor type")?;
        if let Some((block, bytes)) = block_layout(ggml_type)
            && elements.div_ceil(block).checked_mul(bytes).is_none()
        {
            return Err(GgufError::Malformed(format!(
                "tensor `{name}` is too large"
            )));
        }
        let offset = self.u64("a tensor offset")?;
        Ok(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
        })
    }
}

#[cfg(test)]
mod tests;
