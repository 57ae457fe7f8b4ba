//! `si-cli gpu` against header-only GGUF files with the original models' shapes,
//! and GPUs from the configuration (as on a machine without an NVIDIA driver).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::process::Output;

use serde_json::Value;
use si_gpu::gguf::write::{llama_header, shapes};

/// A directory holding the original's model headers under `models/` and the
/// built-in configuration with declared GPUs only.
fn original_deployment() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("models")).unwrap();
    for (file, shape) in shapes::original_deployment() {
        std::fs::write(dir.path().join("models").join(file), llama_header(&shape)).unwrap();
    }
    let config =
        si_core::config::BUILTIN_TOML.replace("source = \"auto\"", "source = \"declared\"");
    std::fs::write(dir.path().join("si.toml"), config).unwrap();
    dir
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_original_deployment_is_over_capacity_and_a_plan_fits() {
    let dir = original_deployment();
    let out = si_cli(dir.path(), &["--config", "si.toml", "gpu", "plan"]);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    let (configured, planned) = shown.split_once("Planned:").unwrap();
    assert!(configured.contains("OVER CAPACITY"), "{shown}");
    assert!(
        configured.contains("fits with the changes below"),
        "{shown}"
    );
    assert!(!planned.contains("OVER CAPACITY"), "{shown}");
    assert!(planned.contains("CUDA_VISIBLE_DEVICES="), "{shown}");

    let out = si_cli(
        dir.path(),
        &["--config", "si.toml", "gpu", "plan", "--json"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["verdict"], "fits_with_changes");
    assert!(plan["declared"][0]["free"].as_i64().unwrap() < 0);
    for gpu in plan["gpus"].as_array().unwrap() {
        assert!(
            gpu["free"].as_i64().unwrap() >= gpu["margin"].as_i64().unwrap(),
            "{gpu}"
        );
    }
    assert_eq!(plan["launch"].as_array().unwrap().len(), 6);
    assert_eq!(plan["unplaced"].as_array().unwrap().len(), 0);
}

#[test]
fn a_plan_for_one_gpu_host_places_only_its_servers() {
    let dir = original_deployment();
    let path = dir.path().join("si.toml");
    let mut config = std::fs::read_to_string(&path).unwrap();
    for port in 8080..=8085 {
        let host = if port < 8083 { "gpu-a" } else { "gpu-b" };
        let url = format!("url = \"http://127.0.0.1:{port}\"\n");
        config = config.replace(&url, &format!("{url}host = \"{host}\"\n"));
    }
    std::fs::write(&path, config).unwrap();
    let args = ["--config", "si.toml", "gpu", "plan", "--json", "--host"];
    let out = si_cli(dir.path(), &[&args[..], &["gpu-b"]].concat());
    assert!(out.status.success(), "{}", text(&out));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut servers: Vec<&str> = plan["placements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["server"].as_str().unwrap())
        .collect();
    servers.sort_unstable();
    assert_eq!(
        servers,
        [
            "biomistral-7b-8085",
            "openinsurance-8b-8084",
            "tiny-llama-1b-8083"
        ]
    );
    let out = si_cli(dir.path(), &[&args[..], &["gpu-c"]].concat());
    assert!(!out.status.success());
    assert!(text(&out).contains("no backend is placed on host `gpu-c`"));
}

#[test]
fn estimate_breaks_one_server_down_in_bytes() {
    let dir = original_deployment();
    let model = "models/medicine-llm-13b.Q6_K.gguf";
    let out = si_cli(
        dir.path(),
        &["gpu", "estimate", model, "--ctx", "8192", "--json"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let e: Value = serde_json::from_slice(&out.stdout).unwrap();
    let n = |k: &str| e[k].as_u64().unwrap();
    assert_eq!(n("kv_cache"), 6400 << 20);
    assert_eq!(n("overhead"), 590 << 20);
    assert_eq!(
        n("weights") + n("kv_cache") + n("compute") + n("overhead"),
        n("total")
    );
    let quantized = si_cli(
        dir.path(),
        &[
            "gpu",
            "estimate",
            model,
            "--ctx",
            "8192",
            "--cache-type-k",
            "q8_0",
            "--cache-type-v",
            "q8_0",
            "--json",
        ],
    );
    let q: Value = serde_json::from_slice(&quantized.stdout).unwrap();
    assert_eq!(q["kv_cache"].as_u64(), Some(3400 << 20));

    let table = si_cli(
        dir.path(),
        &["gpu", "estimate", model, "--ctx", "4096", "--ngl", "21"],
    );
    let shown = text(&table);
    assert!(shown.contains("20 of 40 layers and the output"), "{shown}");

    let bad = si_cli(
        dir.path(),
        &[
            "gpu",
            "estimate",
            model,
            "--cache-type-v",
            "q8_0",
            "--flash-attn",
            "off",
        ],
    );
    assert!(!bad.status.success());
    assert!(
        text(&bad).contains("needs flash attention"),
        "{}",
        text(&bad)
    );
    std::fs::write(dir.path().join("broken.gguf"), b"GGUF\x03\x00\x00\x00\xff").unwrap();
    let broken = si_cli(dir.path(), &["gpu", "estimate", "broken.gguf"]);
    assert!(!broken.status.success());
    assert!(text(&broken).contains("truncated"), "{}", text(&broken));
}

#[test]
fn a_missing_model_file_is_named_with_its_backend() {
    let dir = original_deployment();
    std::fs::remove_file(dir.path().join("models/biomistral-7b.Q4_K_M.gguf")).unwrap();
    let out = si_cli(dir.path(), &["--config", "si.toml", "gpu", "plan"]);
    assert!(!out.status.success());
    let shown = text(&out);
    assert!(
        shown.contains("biomistral-7b-8085") && shown.contains("biomistral-7b.Q4_K_M.gguf"),
        "{shown}"
    );
}

#[test]
fn status_without_a_driver_shows_the_declared_gpus() {
    let dir = original_deployment();
    let out = si_cli(
        dir.path(),
        &["--config", "si.toml", "gpu", "status", "--json"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["source"], "declared");
    let gpus = status["gpus"].as_array().unwrap();
    assert_eq!(gpus.len(), 2);
    assert_eq!(gpus[0]["memory_total"].as_u64(), Some(24 << 30));
    assert!(gpus[0]["memory_used"].is_null());
}

/// `si-cli ARGS` in `dir`, with nothing on standard input.
fn si_cli(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    si_test_support::cli::run(env!("CARGO_BIN_EXE_si-cli"), dir, args, None)
}
