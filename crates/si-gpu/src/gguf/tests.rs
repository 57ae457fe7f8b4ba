use proptest::prelude::*;

use super::write::{GgufWriter, llama_header, shapes};
use super::*;

fn small() -> Vec<u8> {
    let mut writer = GgufWriter::new();
    writer
        .meta("general.architecture", Value::String("llama".into()))
        .meta("llama.block_count", Value::Uint(2))
        .meta("big", Value::Uint(u64::MAX))
        .meta("neg", Value::Int(-5))
        .meta("wide.neg", Value::Int(i64::MIN))
        .meta("pi", Value::Float(0.5))
        .meta("yes", Value::Bool(true))
        .meta(
            "list",
            Value::Array {
                element_type: 4,
                len: 3,
                items: Some(vec![Value::Uint(1), Value::Uint(2), Value::Uint(3)]),
            },
        )
        .tensor("blk.0.attn_q.weight", &[64, 64], 12)
        .tensor("token_embd.weight", &[64, 300], 1);
    writer.to_bytes()
}

#[test]
fn a_written_header_reads_back() {
    let gguf = Gguf::parse(&small()).unwrap();
    assert_eq!(gguf.version, 3);
    assert_eq!(gguf.get("llama.block_count"), Some(&Value::Uint(2)));
    assert_eq!(gguf.get("big"), Some(&Value::Uint(u64::MAX)));
    assert_eq!(gguf.get("neg"), Some(&Value::Int(-5)));
    assert_eq!(gguf.get("wide.neg"), Some(&Value::Int(i64::MIN)));
    assert_eq!(gguf.get("pi"), Some(&Value::Float(0.5)));
    assert_eq!(gguf.get("yes"), Some(&Value::Bool(true)));
    assert!(matches!(
        gguf.get("list"),
        Some(Value::Array {
            len: 3,
            items: Some(_),
            ..
        })
    ));
    assert_eq!(gguf.tensors.len(), 2);
    // 64 × 64 in Q4_K: 16 blocks of 256 elements, 144 bytes each.
    assert_eq!(gguf.tensors[0].bytes(), Some(16 * 144));
    assert_eq!(gguf.tensors[1].bytes(), Some(64 * 300 * 2));
    // Offsets follow one another, aligned to 32.
    assert_eq!(gguf.tensors[1].offset, 16 * 144);
}

#[test]
fn every_value_type_of_version_1_reads() {
    // Version 1: u32 counts and lengths.
    let mut bytes = b"GGUF".to_vec();
    bytes.extend_from_slice(&1u32.to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes()); // tensors
    bytes.extend_from_slice(&13u32.to_le_bytes()); // metadata
    let key = |bytes: &mut Vec<u8>, k: &str, t: u32| {
        bytes.extend_from_slice(&(k.len() as u32).to_le_bytes());
        bytes.extend_from_slice(k.as_bytes());
        bytes.extend_from_slice(&t.to_le_bytes());
    };
    key(&mut bytes, "u8", 0);
    bytes.push(200);
    key(&mut bytes, "i8", 1);
    bytes.push(0xff);
    key(&mut bytes, "u16", 2);
    bytes.extend_from_slice(&60000u16.to_le_bytes());
    key(&mut bytes, "i16", 3);
    bytes.extend_from_slice(&(-2i16).to_le_bytes());
    key(&mut bytes, "u32", 4);
    bytes.extend_from_slice(&7u32.to_le_bytes());
    key(&mut bytes, "i32", 5);
    bytes.extend_from_slice(&(-7i32).to_le_bytes());
    key(&mut bytes, "f32", 6);
    bytes.extend_from_slice(&1.5f32.to_le_bytes());
    key(&mut bytes, "bool", 7);
    bytes.push(0);
    key(&mut bytes, "string", 8);
    bytes.extend_from_slice(&2u32.to_le_bytes());
    bytes.extend_from_slice(b"hi");
    key(&mut bytes, "array", 9);
    bytes.extend_from_slice(&8u32.to_le_bytes()); // of strings
    bytes.extend_from_slice(&1u32.to_le_bytes());
    bytes.extend_from_slice(&1u32.to_le_bytes());
    bytes.extend_from_slice(b"x");
    key(&mut bytes, "u64", 10);
    bytes.extend_from_slice(&9u64.to_le_bytes());
    key(&mut bytes, "i64", 11);
    bytes.extend_from_slice(&(-9i64).to_le_bytes());
    key(&mut bytes, "f64", 12);
    bytes.extend_from_slice(&2.5f64.to_le_bytes());
    let gguf = Gguf::parse(&bytes).unwrap();
    assert_eq!(gguf.version, 1);
    let get = |k: &str| gguf.get(k).cloned().unwrap();
    assert_eq!(get("u8"), Value::Uint(200));
    assert_eq!(get("i8"), Value::Int(-1));
    assert_eq!(get("u16"), Value::Uint(60000));
    assert_eq!(get("i16"), Value::Int(-2));
    assert_eq!(get("i32"), Value::Int(-7));
    assert_eq!(get("f32"), Value::Float(1.5));
    assert_eq!(get("bool"), Value::Bool(false));
    assert_eq!(get("string"), Value::String("hi".into()));
    assert_eq!(get("u64"), Value::Uint(9));
    assert_eq!(get("i64"), Value::Int(-9));
    assert_eq!(get("f64"), Value::Float(2.5));
    assert!(matches!(get("array"), Value::Array { len: 1, .. }));
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = llama_header(&shapes::tinyllama_1b(shapes::F16));
    assert!(Gguf::parse(&bytes).is_ok());
    for end in 0..bytes.len() {
        assert!(Gguf::parse(&bytes[..end]).is_err(), "accepted {end} bytes");
    }
}

#[test]
fn hostile_lengths_are_refused_without_allocating() {
    let header = |tensors: u64, kvs: u64| {
        let mut bytes = b"GGUF".to_vec();
        bytes.extend_from_slice(&3u32.to_le_bytes());
        bytes.extend_from_slice(&tensors.to_le_bytes());
        bytes.extend_from_slice(&kvs.to_le_bytes());
        bytes
    };
    assert!(matches!(
        Gguf::parse(&header(u64::MAX, 0)),
        Err(GgufError::Truncated(_))
    ));
    // A key claiming 2^63 bytes.
    let mut bytes = header(0, 1);
    bytes.extend_from_slice(&(1u64 << 63).to_le_bytes());
    assert!(matches!(Gguf::parse(&bytes), Err(GgufError::Truncated(_))));
    // An array claiming 2^60 u64 elements.
    let mut bytes = header(0, 1);
    bytes.extend_from_slice(&1u64.to_le_bytes());
    bytes.push(b'a');
    bytes.extend_from_slice(&9u32.to_le_bytes());
    bytes.extend_from_slice(&10u32.to_le_bytes());
    bytes.extend_from_slice(&(1u64 << 60).to_le_bytes());
    assert!(matches!(Gguf::parse(&bytes), Err(GgufError::Truncated(_))));
    // A tensor whose dimensions overflow.
    let mut writer = GgufWriter::new();
    writer.tensor("t", &[u64::MAX, 3], 0);
    assert!(matches!(
        Gguf::parse(&writer.to_bytes()),
        Err(GgufError::Malformed(_))
    ));
    // Not GGUF, or a future version.
    assert!(matches!(Gguf::parse(b"GGML...."), Err(GgufError::NotGguf)));
    let mut future = b"GGUF".to_vec();
    future.extend_from_slice(&4u32.to_le_bytes());
    assert!(matches!(Gguf::parse(&future), Err(GgufError::Version(4))));
}

#[test]
fn deeply_nested_arrays_are_refused() {
    let mut bytes = b"GGUF".to_vec();
    bytes.extend_from_slice(&3u32.to_le_bytes());
    bytes.extend_from_slice(&0u64.to_le_bytes());
    bytes.extend_from_slice(&1u64.to_le_bytes());
    bytes.extend_from_slice(&1u64.to_le_bytes());
    bytes.push(b'a');
    bytes.extend_from_slice(&9u32.to_le_bytes());
    for _ in 0..10 {
        bytes.extend_from_slice(&9u32.to_le_bytes());
        bytes.extend_from_slice(&1u64.to_le_bytes());
    }
    bytes.extend_from_slice(&[0u8; 64]);
    assert!(matches!(Gguf::parse(&bytes), Err(GgufError::Malformed(_))));
}

#[test]
fn a_large_vocabulary_is_walked_not_kept() {
    let tokens: Vec<Value> = (0..5000).map(|i| Value::String(format!("t{i}"))).collect();
    let mut writer = GgufWriter::new();
    writer.meta(
        "tokenizer.ggml.tokens",
        Value::Array {
            element_type: 8,
            len: 5000,
            items: Some(tokens),
        },
    );
    let gguf = Gguf::parse(&writer.to_bytes()).unwrap();
    assert_eq!(
        gguf.get("tokenizer.ggml.tokens"),
        Some(&Value::Array {
            element_type: 8,
            len: 5000,
            items: None
        })
    );
}

#[test]
fn a_file_is_read_by_its_header_only() {
    let dir = tempfile_dir();
    let path = dir.join("tiny.gguf");
    std::fs::write(&path, llama_header(&shapes::tinyllama_1b(shapes::F16))).unwrap();
    let gguf = Gguf::open(&path).unwrap();
    assert_eq!(gguf.tensors.len(), 1 + 22 * 9 + 2);
    let missing = Gguf::open(&dir.join("absent.gguf")).unwrap_err();
    assert!(missing.to_string().contains("absent.gguf"), "{missing}");
    let _ = std::fs::remove_dir_all(dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "si-gguf-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Gguf::parse(&bytes);
        let mut prefixed = b"GGUF\x03\x00\x00\x00".to_vec();
        prefixed.extend_from_slice(&bytes);
        let _ = Gguf::parse(&prefixed);
    }

    #[test]
    fn mutated_headers_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)
    ) {
        let mut bytes = small();
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        if let Ok(gguf) = Gguf::parse(&bytes) {
            for tensor in &gguf.tensors {
                let _ = tensor.bytes();
            }
            let _ = crate::profile::ModelProfile::from_gguf(&gguf);
        }
    }
}

#[test]
fn the_tiny_model_is_a_complete_small_llama() {
    let bytes = write::tiny_llama(7);
    assert_eq!(bytes, write::tiny_llama(7), "not reproducible");
    assert!(
        (100_000..1_000_000).contains(&bytes.len()),
        "{}",
        bytes.len()
    );
    let gguf = Gguf::parse(&bytes).unwrap();
    let profile = crate::profile::ModelProfile::from_gguf(&gguf).unwrap();
    assert_eq!(
        (profile.layers, profile.embedding, profile.heads),
        (2, 64, 4)
    );
    // Every tensor's data is in the file, after the aligned header.
    let data_start =
        bytes.len() as u64 - gguf.tensors.iter().map(|t| t.bytes().unwrap()).sum::<u64>();
    assert_eq!(data_start % 32, 0);
    let last = gguf.tensors.iter().max_by_key(|t| t.offset).unwrap();
    assert!(data_start + last.offset + last.bytes().unwrap() <= bytes.len() as u64);
    let Some(Value::Array { len, .. }) = gguf.get("tokenizer.ggml.tokens") else {
        panic!("no vocabulary");
    };
    assert_eq!(*len, 256 + 6 + 3);
    assert!(
        matches!(gguf.get("tokenizer.chat_template"), Some(Value::String(t)) if t.contains("<|im_start|>"))
    );
}
