//! One configuration shared by several hosts: which GPU host runs each backend,
//! and the gateways behind the load balancer.

use super::*;

/// Two backends of one model, on two GPU hosts; the second names its host only
/// through its URL.
fn two_hosts(extra: &str) -> String {
    format!(
        r#"
[[backends]]
name = "tiny-a"
url = "http://10.0.0.11:8080"
host = "gpu-a"
model = "tiny"
api_key = "env::KEY_A"
{extra}

[[backends]]
name = "tiny-b"
url = "http://gpu-b:8080"
model = "tiny"
api_key = "env::KEY_B"

[[agents]]
name = "Chat"
model = "tiny"
tier = "fast"
"#
    )
}

fn parse(text: &str) -> Config {
    Config::parse(text, "si.toml").unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_backends_host_is_its_own_or_else_its_urls() {
    let config = parse(&two_hosts(""));
    assert_eq!(config.backends[0].host.as_deref(), Some("gpu-a"));
    assert_eq!(config.backends[0].host_name(), "gpu-a");
    assert_eq!(config.backends[1].host, None);
    assert_eq!(config.backends[1].host_name(), "gpu-b");
    // The built-in deployment runs wherever it is started.
    assert!(builtin().backends.iter().all(|b| b.host.is_none()));
}

#[test]
fn an_empty_or_malformed_host_is_refused_naming_its_key() {
    let text = two_hosts("").replace("host = \"gpu-a\"", "host = \"\"");
    let err = parse_err(&text);
    assert_eq!(err.key, "backends[0].host");
    assert!(err.problem.contains("not an empty string"), "{err}");
    assert!(err.problem.contains("leave `host` out"), "{err}");
    let text = two_hosts("").replace("host = \"gpu-a\"", "host = \"gpu a\"");
    let err = parse_err(&text);
    assert_eq!(err.key, "backends[0].host");
    assert!(err.problem.contains("not `gpu a`"), "{err}");
}

#[test]
fn each_host_runs_its_own_backends_and_loopback_ones_run_anywhere() {
    let nowhere = |_: &str| false;
    let config = parse(&two_hosts(""));
    let (a, b) = (&config.backends[0], &config.backends[1]);
    assert!(a.runs_on("gpu-a", nowhere) && a.runs_on("GPU-A", nowhere));
    assert!(!a.runs_on("gpu-b", nowhere));
    // An explicit host wins over an address of this machine in the URL.
    assert!(!a.runs_on("gpu-b", |_| true));
    assert!(b.runs_on("gpu-b", nowhere) && !b.runs_on("gpu-a", nowhere));
    // With no `host`, a URL that names this machine is this machine's.
    assert!(b.runs_on("gpu-a", |host| host == "gpu-b"));
    for backend in &builtin().backends {
        assert!(backend.runs_on("any-host", nowhere), "{}", backend.name);
    }
}

#[test]
fn placing_on_a_host_splits_the_backends_or_names_the_hosts_there_are() {
    let config = parse(&two_hosts(""));
    let placed = config.place_on_host("gpu-b", |_| false).unwrap();
    let names = |backends: &[BackendConfig]| -> Vec<String> {
        backends.iter().map(|b| b.name.clone()).collect()
    };
    assert_eq!(names(&placed.here), ["tiny-b"]);
    assert_eq!(names(&placed.elsewhere), ["tiny-a"]);
    let err = config.place_on_host("gpu-c", |_| false).unwrap_err();
    assert_eq!(err.hosts, ["gpu-a", "gpu-b"]);
    let said = err.to_string();
    assert!(
        said.starts_with(
            "no backend is placed on host `gpu-c`; this configuration places them on gpu-a, gpu-b"
        ),
        "{said}"
    );
}

#[test]
fn the_gateways_behind_the_load_balancer_are_listed_once_each() {
    assert!(builtin().deploy.gateways.is_empty());
    let config = parse(&format!(
        "[deploy]\ngateways = [\"10.0.0.5:8000\", \"gw-b.hospital.local:8000\", \"[fd00::6]:8000\"]\n{}",
        two_hosts("")
    ));
    let shown: Vec<String> = config
        .deploy
        .gateways
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        shown,
        [
            "10.0.0.5:8000",
            "gw-b.hospital.local:8000",
            "[fd00::6]:8000"
        ]
    );
    for (list, problem) in [
        ("[\"10.0.0.5\"]", "expected HOST:PORT"),
        ("[\"http://10.0.0.5:8000\"]", "expected HOST:PORT"),
        ("[\"10.0.0.5:0\"]", "expected HOST:PORT"),
        ("[\"10.0.0.5:8000\", \"10.0.0.5:8000\"]", "listed twice"),
    ] {
        let err = parse_err(&format!("[deploy]\ngateways = {list}\n{}", two_hosts("")));
        assert!(err.key.starts_with("deploy.gateways["), "{err}");
        assert!(err.problem.contains(problem), "{list}: {err}");
    }
    let err = parse_err(&format!("[deploy]\ngateway = []\n{}", two_hosts("")));
    assert!(err.problem.contains("unknown field `gateway`"), "{err}");
}

#[test]
fn the_several_hosts_example_is_a_valid_configuration() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/several-hosts.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let config = parse(&text);
    assert_eq!(config.deploy.gateways.len(), 2);
    let hosts: Vec<&str> = config.backends.iter().map(|b| b.host_name()).collect();
    assert_eq!(hosts, ["gpu-a", "gpu-a", "gpu-b", "gpu-b"]);
}
