//! The built-in configuration: its values, and the example file that copies it.

use std::time::Duration;

use super::*;

#[test]
fn builtin_is_the_original_deployment() {
    let config = builtin();
    assert_eq!(config.gateway.listen.to_string(), "127.0.0.1:8000");
    let ports: Vec<u16> = config.backends.iter().map(|b| b.url.port).collect();
    assert_eq!(ports, [8080, 8081, 8082, 8083, 8084, 8085]);
    let route = |agent: &str| {
        let agent = config
            .agent(agent)
            .map(|a| a.model.clone())
            .unwrap_or_default();
        config
            .backends
            .iter()
            .filter(|b| b.model == agent)
            .map(|b| b.url.port)
            .collect::<Vec<_>>()
    };
    assert_eq!(route("Chat"), [8080, 8083]);
    assert_eq!(route("MedicalQA"), [8081]);
    assert_eq!(route("Documentation"), [8082]);
    assert_eq!(route("Billing"), [8080, 8083]);
    assert_eq!(route("Claims"), [8084]);
    assert_eq!(route("Clinical"), [8085]);
    assert_eq!(
        config.agent("clinical").map(|a| a.tier),
        Some(SpeedTier::Slow)
    );
    assert_eq!(config.agent("chat").map(|a| a.tier), Some(SpeedTier::Fast));
    let keys: Vec<String> = config
        .backends
        .iter()
        .map(|b| b.api_key_ref.to_string())
        .collect();
    assert_eq!(
        keys,
        [
            "env::API_KEY_TINY_LLAMA_1B_8080",
            "env::API_KEY_BIMEDIX2_8081",
            "env::API_KEY_MEDICINE_LLM_8082",
            "env::API_KEY_TINY_LLAMA_1B_8083",
            "env::API_KEY_OPENINSURANCE_8084",
            "env::API_KEY_BIOMISTRAL_8085",
        ]
    );
    assert_eq!(config.auth.algorithm, JwtAlgorithm::Hs256);
    assert_eq!(config.roles, crate::RolePolicy::default());
    assert_eq!(config.rate_limits.per_ip_per_minute, 100);
    assert_eq!(config.rate_limits.per_user_per_minute, 0);
    assert_eq!(config.rate_limits.per_location_per_minute, 0);
    assert_eq!(config.auth.expiry, Duration::from_secs(24 * 3600));
}

#[test]
fn builtin_places_four_servers_on_gpu_0_and_two_on_gpu_1() {
    let config = builtin();
    let on = |gpu: Option<u32>| -> Vec<&str> {
        config
            .backends
            .iter()
            .filter(|b| b.gpu == gpu)
            .map(|b| b.name.as_str())
            .collect()
    };
    assert_eq!(on(Some(0)).len(), 4);
    assert_eq!(on(Some(1)), ["tiny-llama-1b-8083", "openinsurance-8b-8084"]);
    assert!(on(None).is_empty());
}

#[test]
fn backends_say_how_their_server_starts() {
    let config = builtin();
    let launch = &config.backends[2].launch;
    assert_eq!(
        launch.model_file.as_deref(),
        Some(std::path::Path::new("models/medicine-llm-13b.Q6_K.gguf"))
    );
    assert_eq!(launch.context, Some(8192));
    assert_eq!((launch.gpu_layers, launch.gpu_pinned), (None, false));
    assert_eq!(launch.flash_attn, FlashAttn::Auto);
    assert_eq!(config.gpu.margin_bytes, 1 << 30);
    assert_eq!(config.gpu.process_overhead_bytes, 590 << 20);
    let text = BUILTIN_TOML.replacen(
        "ctx_size = 2048",
        "ctx_size = 2048\ngpu_layers = 10\ncache_type_k = \"q8_0\"\ncache_type_v = \"q4_0\"\nflash_attn = \"on\"\ngpu_pinned = true",
        1,
    );
    let launch = Config::parse(&text, "si.toml").map(|c| c.backends[0].launch.clone());
    let launch = launch.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(launch.gpu_layers, Some(10));
    assert_eq!(launch.cache_type_k.as_deref(), Some("q8_0"));
    assert_eq!(launch.cache_type_v.as_deref(), Some("q4_0"));
    assert_eq!(
        (launch.flash_attn, launch.gpu_pinned),
        (FlashAttn::On, true)
    );
    let text = BUILTIN_TOML.replacen(
        "ctx_size = 2048",
        "ctx_size = 2048\nthreads = 4\nparallel = 2\nextra_args = [\"--mlock\", \"-b\", \"512\"]",
        1,
    );
    let launch = Config::parse(&text, "si.toml").map(|c| c.backends[0].launch.clone());
    let launch = launch.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((launch.threads, launch.parallel), (Some(4), Some(2)));
    assert_eq!(launch.extra_args, ["--mlock", "-b", "512"]);
}

#[test]
fn the_supervisor_has_working_defaults() {
    let supervisor = builtin().supervisor;
    assert_eq!(
        supervisor.llama_server,
        std::path::Path::new("llama-server")
    );
    assert_eq!(supervisor.logs_dir, std::path::Path::new("logs"));
    assert_eq!(supervisor.log_max_bytes, 10 << 20);
    assert_eq!(supervisor.restart_delay, Duration::from_secs(1));
    assert_eq!(supervisor.restart_max_delay, Duration::from_secs(30));
    assert_eq!(supervisor.max_fast_failures, 5);
    assert_eq!(supervisor.unhealthy_restart, Some(Duration::from_secs(60)));
    let off = BUILTIN_TOML.replacen(
        "unhealthy_restart_ms = 60000",
        "unhealthy_restart_ms = 0",
        1,
    );
    let off = Config::parse(&off, "si.toml").map(|c| c.supervisor.unhealthy_restart);
    assert_eq!(off.ok(), Some(None));
    // The table is optional: a configuration without it gets the same.
    let from = BUILTIN_TOML.find("[supervisor]").unwrap_or(0);
    let to = from + BUILTIN_TOML[from..].find("\n[[gpus]]").unwrap_or(0);
    let bare = format!("{}{}", &BUILTIN_TOML[..from], &BUILTIN_TOML[to..]);
    let config = Config::parse(&bare, "si.toml").map(|c| c.supervisor);
    assert_eq!(config.ok(), Some(supervisor));
}

#[test]
fn gpus_are_declared_with_their_capacity() {
    let gpu = builtin().gpu;
    assert_eq!(gpu.source, GpuSource::Auto);
    assert_eq!(gpu.sample_interval, Duration::from_secs(5));
    let declared: Vec<(u32, u64)> = gpu
        .devices
        .iter()
        .map(|g| (g.index, g.memory_bytes))
        .collect();
    assert_eq!(declared, [(0, 24 << 30), (1, 12 << 30)]);
    // Without [[gpus]], backends may name any GPU (NVML will say what exists).
    let (from, to) = (
        BUILTIN_TOML.find("[[gpus]]").unwrap_or(0),
        BUILTIN_TOML
            .find("# One table per llama-server")
            .unwrap_or(0),
    );
    let bare = format!("{}{}", &BUILTIN_TOML[..from], &BUILTIN_TOML[to..]);
    let config = Config::parse(&bare, "si.toml").map_err(|e| e.to_string());
    assert_eq!(config.map(|c| c.gpu.devices.len()), Ok(0));
}

#[test]
fn backend_limits_come_from_defaults_unless_overridden() {
    let config = builtin();
    let tiny = &config.backends[0].limits;
    assert_eq!(tiny.connect_timeout, config.gateway.connect_timeout);
    assert_eq!(tiny.headers_timeout, Duration::from_secs(120));
    assert!(
        tiny.slots_from_server,
        "max_in_flight unset: ask the server"
    );
    assert_eq!(
        config.backends[5].limits.headers_timeout,
        Duration::from_secs(300),
        "slow tier"
    );
    let text = BUILTIN_TOML.replace(
        "api_key = \"env::API_KEY_BIOMISTRAL_8085\"",
        "api_key = \"env::API_KEY_BIOMISTRAL_8085\"\nconnect_timeout_ms = 500\nmax_in_flight = 2",
    );
    let config = Config::parse(&text, "si.toml").unwrap();
    let clinical = &config.backends[5].limits;
    assert_eq!(clinical.connect_timeout, Duration::from_millis(500));
    assert_eq!(
        (clinical.max_in_flight, clinical.slots_from_server),
        (2, false)
    );
    let bad = BUILTIN_TOML.replace("queue_timeout_ms = 10000", "queue_timeout_ms = 0");
    assert_eq!(parse_err(&bad).key, "backend_defaults.queue_timeout_ms");
}

#[test]
fn the_example_file_is_the_builtin_configuration() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/si.toml");
    let example = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let differs_at = example
        .lines()
        .zip(BUILTIN_TOML.lines())
        .position(|(a, b)| a != b)
        .map_or_else(|| "in length".to_owned(), |i| format!("at line {}", i + 1));
    assert!(
        example == BUILTIN_TOML,
        "examples/si.toml and crates/si-core/src/config/builtin.toml differ ({differs_at}); \
         copy the one you edited over the other"
    );
}
