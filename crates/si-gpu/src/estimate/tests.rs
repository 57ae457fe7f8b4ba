use super::*;
use crate::gguf::Gguf;
use crate::gguf::write::{LlamaShape, llama_header, shapes};

fn profile(shape: &LlamaShape) -> ModelProfile {
    let gguf = Gguf::parse(&llama_header(shape)).unwrap();
    ModelProfile::from_gguf(&gguf).unwrap()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

/// llama-server b11434 on an H200, full offload (the process figure is what NVML
/// reports for the process; the buffers are llama.cpp's own log lines).
struct Measured {
    shape: LlamaShape,
    settings: ServerSettings,
    weights_mib: f64,
    kv_mib: f64,
    compute_mib: f64,
    process_mib: f64,
}

fn measured() -> Vec<Measured> {
    let q8 = |context| ServerSettings {
        cache_type_k: CacheType::Q8_0,
        cache_type_v: CacheType::Q8_0,
        ..ServerSettings::with_context(context)
    };
    let no_fa = |context| ServerSettings {
        flash_attn: false,
        ..ServerSettings::with_context(context)
    };
    let row = |shape, settings, buffers: [f64; 3], process_mib| Measured {
        shape,
        settings,
        weights_mib: buffers[0],
        kv_mib: buffers[1],
        compute_mib: buffers[2],
        process_mib,
    };
    vec![
        row(
            shapes::tinyllama_1b(shapes::F16),
            ServerSettings::with_context(2048),
            [1973.4, 44.0, 51.0],
            2656.0,
        ),
        row(
            shapes::mistral_7b(shapes::Q4_0),
            ServerSettings::with_context(8192),
            [3815.3, 1024.0, 124.0],
            5552.0,
        ),
        row(
            shapes::mistral_7b(shapes::Q4_0),
            no_fa(8192),
            [3815.3, 1024.0, 572.0],
            6000.0,
        ),
        row(
            shapes::llama2_13b(shapes::Q4_0),
            ServerSettings::with_context(4096),
            [6895.7, 3200.0, 125.0],
            10808.0,
        ),
        row(
            shapes::llama2_13b(shapes::Q4_0),
            ServerSettings::with_context(8192),
            [6895.7, 6400.0, 129.0],
            14012.0,
        ),
        row(
            shapes::llama2_13b(shapes::Q4_0),
            q8(8192),
            [6895.7, 3400.0, 218.1],
            11106.0,
        ),
    ]
}

#[test]
fn every_measured_process_is_reproduced_within_five_percent() {
    for m in measured() {
        let e = estimate(&profile(&m.shape), &m.settings, DEFAULT_PROCESS_OVERHEAD);
        let what = format!("{} {:?}", m.shape.name, m.settings);
        // The KV cache formula is exact; weights within rounding of the log.
        assert_eq!(mib(e.kv_cache), m.kv_mib, "{what}");
        assert!(
            (mib(e.weights) - m.weights_mib).abs() < 1.0,
            "{what}: {}",
            mib(e.weights)
        );
        // The compute buffer is fitted: within 12 MiB of llama.cpp's log.
        let compute_off = (mib(e.compute) - m.compute_mib).abs();
        assert!(compute_off < 12.0, "{what}: compute {}", mib(e.compute));
        let error = (mib(e.total) - m.process_mib).abs() / m.process_mib;
        assert!(
            error < 0.05,
            "{what}: {} MiB vs {} measured",
            mib(e.total),
            m.process_mib
        );
        // In fact within 1 %.
        assert!(
            error < 0.01,
            "{what}: {} MiB vs {} measured",
            mib(e.total),
            m.process_mib
        );
    }
}

#[test]
fn fewer_gpu_layers_move_weights_and_cache_off_the_gpu() {
    let p = profile(&shapes::mistral_7b(shapes::Q4_0));
    let full = estimate(
        &p,
        &ServerSettings::with_context(8192),
        DEFAULT_PROCESS_OVERHEAD,
    );
    assert_eq!((full.layers_on_gpu, full.output_on_gpu), (32, true));
    // -ngl 33 = every layer and the output; -ngl 17 = the output and 16 layers.
    let all = ServerSettings {
        gpu_layers: Some(33),
        ..ServerSettings::with_context(8192)
    };
    assert_eq!(estimate(&p, &all, 0).weights, full.weights);
    let half = ServerSettings {
        gpu_layers: Some(17),
        ..ServerSettings::with_context(8192)
    };
    let half = estimate(&p, &half, DEFAULT_PROCESS_OVERHEAD);
    assert_eq!(half.layers_on_gpu, 16);
    assert_eq!(half.kv_cache, full.kv_cache / 2);
    assert_eq!(
        half.weights,
        p.output_bytes + p.layer_bytes[16..].iter().sum::<u64>()
    );
    let none = ServerSettings {
        gpu_layers: Some(0),
        ..ServerSettings::with_context(8192)
    };
    let none = estimate(&p, &none, DEFAULT_PROCESS_OVERHEAD);
    assert_eq!((none.weights, none.kv_cache), (0, 0));
}

#[test]
fn the_originals_13b_at_8192_needs_far_more_than_the_guide_said() {
    // The guide claimed ~10-13 GB for Medicine-LLM-13B Q6_K at -c 8192.
    let p = profile(&shapes::llama2_13b(shapes::Q6_K));
    let e = estimate(
        &p,
        &ServerSettings::with_context(8192),
        DEFAULT_PROCESS_OVERHEAD,
    );
    let gib = e.total as f64 / (1u64 << 30) as f64;
    assert!((16.5..17.5).contains(&gib), "{gib} GiB");
}

#[test]
fn cache_types_parse_by_llama_server_names() {
    for name in [
        "f32", "f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "iq4_nl", "q4_0",
    ] {
        let parsed: CacheType = name.parse().unwrap();
        assert_eq!(parsed.as_str(), name);
    }
    assert!(
        "q3_k"
            .parse::<CacheType>()
            .unwrap_err()
            .contains("expected")
    );
}
