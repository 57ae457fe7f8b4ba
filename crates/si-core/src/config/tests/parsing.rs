//! Files that do not parse or validate: each error names its source, key and line.

use proptest::prelude::*;

use super::*;

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
        (
            "max_connections_per_address = 256",
            "max_connections_per_address = 20000",
            "gateway.max_connections_per_address",
        ),
        (
            "metrics_max_connections = 32",
            "metrics_max_connections = 0",
            "gateway.metrics_max_connections",
        ),
        (
            "api_key = \"env::API_KEY_TINY_LLAMA_1B_8083\"",
            "api_key = \"env::API_KEY_TINY_LLAMA_1B_8083\"\nvision = true",
            "backends[3].vision",
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
fn missing_tables_are_errors() {
    assert_eq!(parse_err("").key, "backends");
    let only_backend =
        "[[backends]]\nname='a'\nurl='http://127.0.0.1:1'\nmodel='m'\napi_key='env::K'\n";
    assert_eq!(parse_err(only_backend).key, "agents");
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
