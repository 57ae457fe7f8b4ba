use std::time::Duration;

use proptest::prelude::*;
use secrecy::ExposeSecret;

use super::*;

fn builtin() -> Config {
    match Config::builtin() {
        Ok(config) => config,
        Err(e) => panic!("built-in config is invalid: {e}"),
    }
}

fn parse_err(text: &str) -> ConfigError {
    match Config::parse(text, "si.toml") {
        Ok(_) => panic!("accepted: {text}"),
        Err(e) => e,
    }
}

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
fn unknown_key_names_file_key_and_line() {
    let text = BUILTIN_TOML.replace("listen = ", "listn = ");
    let err = parse_err(&text);
    assert_eq!(err.source_name, "si.toml");
    assert!(err.problem.contains("unknown field `listn`"), "{err}");
    assert!(err.problem.contains("line 10"), "{err}");
}

#[test]
fn wrong_type_names_the_dotted_key() {
    let text = BUILTIN_TOML.replace("expiry_hours = 24", "expiry_hours = \"a day\"");
    let err = parse_err(&text);
    assert_eq!(err.key, "auth.expiry_hours");
}

#[test]
fn bad_values_name_their_key() {
    let cases = [
        (
            "listen = \"127.0.0.1:8000\"",
            "listen = \"localhost\"",
            "gateway.listen",
        ),
        (
            "\"http://127.0.0.1:8081\"",
            "\"https://127.0.0.1:8081\"",
            "backends[1].url",
        ),
        (
            "\"http://127.0.0.1:8082\"",
            "\"http://127.0.0.1:8080\"",
            "backends[2].url",
        ),
        (
            "\"env::API_KEY_BIMEDIX2_8081\"",
            "\"sk-inline\"",
            "backends[1].api_key",
        ),
        (
            "model = \"openinsurance-8b\"\ntier",
            "model = \"gpt-4\"\ntier",
            "agents[4].model",
        ),
        ("name = \"Claims\"", "name = \"chat\"", "agents[4].name"),
        (
            "algorithm = \"HS256\"",
            "algorithm = \"none\"",
            "auth.algorithm",
        ),
        ("expiry_hours = 24", "expiry_hours = 0", "auth.expiry_hours"),
        (
            "max_body_bytes = 4194304",
            "max_body_bytes = 0",
            "gateway.max_body_bytes",
        ),
        (
            "billing = [\"Chat\", ",
            "billing = [\"Radiology\", ",
            "roles.billing",
        ),
        ("admin = [\"*\"]", "root = [\"*\"]", "roles.root"),
        (
            "admin = [\"*\"]",
            "admin = [\"*\", \"Chat\"]",
            "roles.admin",
        ),
        (
            "trusted_proxies = []",
            "trusted_proxies = [\"nginx.local\"]",
            "rate_limits.trusted_proxies[0]",
        ),
        ("source = \"auto\"", "source = \"cuda\"", "gpu.source"),
        (
            "sample_interval_ms = 5000",
            "sample_interval_ms = 5",
            "gpu.sample_interval_ms",
        ),
        ("memory_mib = 12288", "memory_mib = 0", "gpus[1].memory_mib"),
        ("margin_mib = 1024", "margin_mib = 100000", "gpu.margin_mib"),
        (
            "tiny-llama-1b-8080\"\nurl = \"http://127.0.0.1:8080\"\nmodel = \"tiny-llama-1b\"\napi_key = \"env::API_KEY_TINY_LLAMA_1B_8080\"\ngpu = 0",
            "tiny-llama-1b-8080\"\nurl = \"http://127.0.0.1:8080\"\nmodel = \"tiny-llama-1b\"\napi_key = \"env::API_KEY_TINY_LLAMA_1B_8080\"\ngpu_pinned = true",
            "backends[0].gpu_pinned",
        ),
        ("ctx_size = 2048", "ctx_size = 10", "backends[0].ctx_size"),
        (
            "ctx_size = 2048",
            "ctx_size = 2048\ncache_type_k = \"q3\"",
            "backends[0].cache_type_k",
        ),
        (
            "ctx_size = 2048",
            "ctx_size = 2048\nflash_attn = \"yes\"",
            "backends[0].flash_attn",
        ),
        (
            "ctx_size = 2048",
            "ctx_size = 2048\ncache_type_v = \"q8_0\"\nflash_attn = \"off\"",
            "backends[0].cache_type_v",
        ),
        ("index = 1", "index = 0", "gpus[1].index"),
        (
            "log_max_mib = 10",
            "log_max_mib = 0",
            "supervisor.log_max_mib",
        ),
        (
            "unhealthy_restart_ms = 60000",
            "unhealthy_restart_ms = 10",
            "supervisor.unhealthy_restart_ms",
        ),
        ("log_files = 5", "log_files = 1000", "supervisor.log_files"),
        (
            "restart_max_delay_ms = 30000",
            "restart_max_delay_ms = 10",
            "supervisor.restart_max_delay_ms",
        ),
        (
            "max_fast_failures = 5",
            "max_fast_failures = 0",
            "supervisor.max_fast_failures",
        ),
        (
            "ready_timeout_ms = 300000",
            "ready_timeout_ms = 0",
            "supervisor.ready_timeout_ms",
        ),
        (
            "llama_server = \"llama-server\"",
            "llama_server = \"\"",
            "supervisor.llama_server",
        ),
        (
            "ctx_size = 2048",
            "ctx_size = 2048\nthreads = 0",
            "backends[0].threads",
        ),
        (
            "ctx_size = 2048",
            "ctx_size = 2048\nextra_args = [\"--api-key=sk-1\"]",
            "backends[0].extra_args",
        ),
        (
            "ctx_size = 2048",
            "ctx_size = 2048\nextra_args = [\"--port\", \"9000\"]",
            "backends[0].extra_args",
        ),
        (
            "ctx_size = 2048",
            "ctx_size = 2048\nextra_args = [\"--verbose\"]",
            "backends[0].extra_args",
        ),
        (
            "model = \"openinsurance-8b\"\napi_key = \"env::API_KEY_OPENINSURANCE_8084\"\ngpu = 1",
            "model = \"openinsurance-8b\"\napi_key = \"env::API_KEY_OPENINSURANCE_8084\"\ngpu = 2",
            "backends[4].gpu",
        ),
    ];
    for (from, to, key) in cases {
        let text = BUILTIN_TOML.replacen(from, to, 1);
        assert_ne!(text, BUILTIN_TOML, "case {key} did not apply");
        assert_eq!(parse_err(&text).key, key, "{to}");
    }
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
fn configurations_built_in_code_are_checked_too() {
    let mut config = builtin();
    assert_eq!(config.check("code"), Ok(()));
    config.agents[0].model = "unserved".into();
    assert_eq!(
        config.check("code").map_err(|e| e.key),
        Err("agents[0].model".into())
    );
    let mut config = builtin();
    config.backends[1].name = config.backends[0].name.clone();
    assert_eq!(
        config.check("code").map_err(|e| e.key),
        Err("backends[1].name".into())
    );
    let mut config = builtin();
    config.backends.clear();
    assert_eq!(
        config.check("code").map_err(|e| e.key),
        Err("backends".into())
    );
}

#[test]
fn missing_tables_are_errors() {
    assert_eq!(parse_err("").key, "backends");
    let only_backend =
        "[[backends]]\nname='a'\nurl='http://127.0.0.1:1'\nmodel='m'\napi_key='env::K'\n";
    assert_eq!(parse_err(only_backend).key, "agents");
}

#[test]
fn environment_overrides_and_resolves_keys() -> Result<(), ConfigError> {
    let env = Environment::from_pairs([
        ("SI_DATA_DIR", "/var/lib/si"),
        ("ALLOW_INSECURE_DEV", "true"),
        ("JWT_ALGORITHM", "HS512"),
        ("JWT_EXPIRY_HOURS", "8"),
        ("JWT_SECRET", "0123456789abcdef0123456789abcdef"),
        ("SI_RATE_LIMIT_PER_IP", "0"),
        ("API_KEY_BIOMISTRAL_8085", "key-8085"),
    ]);
    let config = Config::load(None, &env)?;
    assert_eq!(config.gateway.data_dir, std::path::Path::new("/var/lib/si"));
    assert!(config.gateway.allow_insecure_dev);
    assert_eq!(config.auth.algorithm, JwtAlgorithm::Hs512);
    assert_eq!(config.auth.expiry, Duration::from_secs(8 * 3600));
    assert!(config.auth.secret.is_some());
    let biomistral = config.backends.iter().find(|b| b.url.port == 8085);
    let key = biomistral
        .and_then(|b| b.api_key.as_ref())
        .map(|k| k.expose_secret());
    assert_eq!(key, Some("key-8085"));
    assert_eq!(config.backends_without_key().count(), 5);
    assert_eq!(config.rate_limits.per_ip_per_minute, 0);
    Ok(())
}

#[test]
fn bad_environment_values_name_the_variable() {
    for (name, value) in [
        ("JWT_SECRET", "too-short"),
        ("JWT_ALGORITHM", "RS999"),
        ("JWT_EXPIRY_HOURS", "-1"),
        ("ALLOW_INSECURE_DEV", "maybe"),
        ("SI_RATE_LIMIT_PER_IP", "lots"),
    ] {
        let env = Environment::from_pairs([(name, value)]);
        match Config::load(None, &env) {
            Ok(_) => panic!("{name}={value} accepted"),
            Err(e) => {
                assert_eq!(e.key, name);
                assert!(!e.to_string().contains("too-short"), "secret echoed: {e}");
            }
        }
    }
}

#[test]
fn a_missing_file_is_a_config_error() {
    let err = Config::load(
        Some(std::path::Path::new("/nonexistent/si.toml")),
        &Environment::default(),
    );
    assert!(matches!(err, Err(e) if e.source_name == "/nonexistent/si.toml"));
}

#[test]
fn backend_urls() {
    let ok = |s: &str| parse_backend_url_for_test(s);
    assert_eq!(ok("http://127.0.0.1:8080/").map(|u| u.port), Some(8080));
    assert_eq!(
        ok("http://[::1]:9000").map(|u| u.to_string()),
        Some("http://[::1]:9000".into())
    );
    for bad in [
        "127.0.0.1:8080",
        "http://host",
        "http://host:0",
        "http://:80",
        "http://a b:1",
    ] {
        assert_eq!(ok(bad), None, "{bad}");
    }
}

fn parse_backend_url_for_test(text: &str) -> Option<BackendUrl> {
    raw::parse_backend_url(text).ok()
}

proptest! {
    #[test]
    fn parsing_never_panics(text in "\\PC{0,400}") {
        let _ = Config::parse(&text, "fuzz.toml");
    }

    #[test]
    fn mutated_builtin_never_panics(at in 0usize..4000, byte in any::<u8>()) {
        let mut bytes = BUILTIN_TOML.as_bytes().to_vec();
        let at = at % bytes.len();
        bytes[at] = byte;
        let text = String::from_utf8_lossy(&bytes);
        let _ = Config::parse(&text, "fuzz.toml");
    }
}

#[test]
fn insecure_dev_mode_is_refused_off_loopback() {
    let env = Environment::from_pairs([("ALLOW_INSECURE_DEV", "true")]);
    assert!(Config::load(None, &env).is_ok(), "loopback is fine");
    let mut config = builtin();
    config.gateway.listen = "0.0.0.0:8000".parse().unwrap();
    let err = config.apply_env(&env).unwrap_err();
    assert_eq!(err.key, "gateway.allow_insecure_dev");
    assert!(err.problem.contains("0.0.0.0:8000"), "{err}");
    config.gateway.allow_insecure_dev = false;
    assert!(config.check("code").is_ok());
}

#[test]
fn refresh_tokens_must_outlive_access_tokens() {
    let text = BUILTIN_TOML.replace("refresh_expiry_hours = 168", "refresh_expiry_hours = 1");
    assert_eq!(parse_err(&text).key, "auth.refresh_expiry_hours");
    let env = Environment::from_pairs([("JWT_EXPIRY_HOURS", "200")]);
    assert_eq!(
        Config::load(None, &env).map_err(|e| e.key).err().as_deref(),
        Some("auth.refresh_expiry_hours")
    );
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
fn builtin_workflows_run_three_views_then_the_summary() {
    let config = builtin();
    let names: Vec<&str> = config.workflows.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "discharge_summary",
            "prior_authorization",
            "patient_education"
        ]
    );
    let discharge = config
        .workflow("discharge_summary")
        .map(|w| w.steps.clone());
    let discharge = discharge.unwrap_or_default();
    let deps: Vec<(&str, Vec<String>, bool)> = discharge
        .iter()
        .map(|s| (s.id.as_str(), s.depends_on.clone(), s.required))
        .collect();
    assert_eq!(deps[0], ("clinical_assessment", vec![], true));
    assert_eq!(deps[2], ("billing_codes", vec![], false));
    assert_eq!(
        deps[3].1,
        [
            "billing_codes",
            "clinical_assessment",
            "medication_reconciliation"
        ]
    );
}

#[test]
fn bad_workflows_name_the_workflow_and_step() {
    let workflow = |steps: &str| {
        BUILTIN_TOML.to_owned()
            + &format!("\n[[workflows]]\nname = \"w\"\ninputs = [\"note\"]\n{steps}")
    };
    let step = |id: &str, agent: &str, prompt: &str| {
        format!(
            "\n[[workflows.steps]]\nid = \"{id}\"\nagent = \"{agent}\"\nprompt = \"{prompt}\"\n"
        )
    };
    let cases = [
        (
            step("a", "Chat", "{{steps.b}}") + &step("b", "Chat", "{{steps.a}}"),
            "depends on itself",
        ),
        (step("a", "Chat", "{{steps.zzz}}"), "waits for `zzz`"),
        (step("a", "Chat", "{{steps.a}}"), "waits for `a`"),
        (step("a", "Chat", "{{input.mrn}}"), "{{input.mrn}}"),
        (step("a", "Radiology", "x"), "no agent is named `Radiology`"),
        (step("a", "Chat", "{{patient}}"), "not a placeholder"),
        (step("a", "Chat", "x") + &step("a", "Chat", "y"), "unique"),
        (String::new(), "at least one step"),
    ];
    for (steps, wanted) in cases {
        let error = parse_err(&workflow(&steps));
        assert!(error.key.starts_with("workflows[3]"), "{error}");
        assert!(error.to_string().contains(wanted), "{wanted}: {error}");
    }
    let twice = BUILTIN_TOML.to_owned()
        + "\n[[workflows]]\nname = \"patient_education\"\n[[workflows.steps]]\nid = \"a\"\nagent = \"Chat\"\nprompt = \"x\"\n";
    assert!(
        parse_err(&twice)
            .to_string()
            .contains("used by another workflow")
    );
}
