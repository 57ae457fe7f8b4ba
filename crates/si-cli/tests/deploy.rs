//! `si-cli deploy`: every rendered file is accepted by the tool that reads it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;
use std::process::{Command, Output};

const KEY: &str = "the-biomistral-key-0123456789abcdef";

fn tool(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([
            Path::new("/usr/sbin").to_owned(),
            Path::new("/sbin").to_owned(),
        ])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn run(program: &Path, args: &[&str]) -> Output {
    Command::new(program).args(args).output().unwrap()
}

fn shown(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Renders the built-in configuration into `dir/rendered`, with a self-signed
/// certificate for nginx and stand-in executables.
fn render(dir: &Path) -> std::path::PathBuf {
    let (out, rendered) = render_with(dir, &[]);
    assert!(rendered.status.success(), "{}", shown(&rendered));
    out
}

/// Renders into `dir/rendered` as [`render`] does, with `args` (a configuration,
/// a host) after the rest; returns where, and what `si-cli deploy` said.
fn render_with(dir: &Path, args: &[&str]) -> (std::path::PathBuf, Output) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for exe in ["si-server", "si-cli", "llama-server"] {
        std::fs::write(bin.join(exe), "#!/bin/sh\nexit 0\n").unwrap();
        Command::new("chmod")
            .arg("755")
            .arg(bin.join(exe))
            .status()
            .unwrap();
    }
    let openssl = tool("openssl").expect("openssl (.ci/run installs it)");
    let (cert, key) = (dir.join("test.crt"), dir.join("test.key"));
    let made = run(
        &openssl,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ],
    );
    assert!(made.status.success(), "{}", shown(&made));
    let out = dir.join("rendered");
    let rendered = Command::new(env!("CARGO_BIN_EXE_si-cli"))
        .current_dir(dir)
        .env_remove("SI_DATA_DIR")
        .env("API_KEY_BIOMISTRAL_8085", KEY)
        .env("SI_DATABASE_URL", "postgres://si@db.hospital.local/si")
        .args([
            "deploy",
            "--out",
            out.to_str().unwrap(),
            "--root",
            "/srv/si",
        ])
        .args(["--si-server", bin.join("si-server").to_str().unwrap()])
        .args(["--si-cli", bin.join("si-cli").to_str().unwrap()])
        .args(["--llama-server", bin.join("llama-server").to_str().unwrap()])
        .args([
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ])
        .args(args)
        .output()
        .unwrap();
    (out, rendered)
}

#[test]
fn every_rendered_file_passes_its_tools_check_and_holds_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = render(dir.path());
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 5 + 6, "{names:?}");
    for name in &names {
        let text = std::fs::read_to_string(out.join(name)).unwrap();
        assert!(!text.contains(KEY), "{name} holds an API key");
    }

    // PM2: valid JavaScript, seven apps, the key read from the key file at start.
    let node = tool("node").expect("node (.ci/run installs it)");
    let ecosystem = out.join("ecosystem.config.js");
    let checked = run(&node, &["--check", ecosystem.to_str().unwrap()]);
    assert!(checked.status.success(), "{}", shown(&checked));
    let script = format!(
        "const c = require({:?}); const a = c.apps; \
         if (a.length !== 7) throw new Error('apps: ' + a.length); \
         const l = a.find(x => x.name === 'llama-8085'); \
         if (!l.args[1].includes('LLAMA_API_KEY=\"$API_KEY_BIOMISTRAL_8085\"')) throw new Error(l.args[1]); \
         if (l.env.CUDA_VISIBLE_DEVICES !== '0') throw new Error('gpu'); \
         if (!l.error_file.endsWith('logs/llama-8085-error.log')) throw new Error(l.error_file);",
        ecosystem.to_str().unwrap()
    );
    let loaded = run(&node, &["-e", &script]);
    assert!(loaded.status.success(), "{}", shown(&loaded));

    // One gateway, as an upstream of one: the site as it always was otherwise.
    let site = std::fs::read_to_string(out.join("synthetic-intelligence.nginx.conf")).unwrap();
    assert!(
        site.contains(
            "upstream si_gateways {\n    server 127.0.0.1:8000 max_fails=3 fail_timeout=10s;\n"
        ),
        "{site}"
    );
    assert!(site.contains("proxy_pass http://si_gateways;\n"), "{site}");
    assert!(
        site.contains("proxy_pass http://127.0.0.1:9464/metrics;"),
        "{site}"
    );
    nginx_accepts(dir.path(), &out);
    promtool_accepts(&out);
}

/// `examples/several-hosts.toml`, copied into `dir`.
fn several_hosts(dir: &Path) {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/several-hosts.toml");
    std::fs::copy(example, dir.join("si.toml")).unwrap();
}

#[test]
fn two_gateways_share_the_load_and_each_gpu_host_gets_only_its_own_servers() {
    let dir = tempfile::tempdir().unwrap();
    several_hosts(dir.path());
    let (out, rendered) = render_with(dir.path(), &["--config", "si.toml", "--host", "gpu-b"]);
    assert!(rendered.status.success(), "{}", shown(&rendered));
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap();

    // nginx: both gateways, retried only where a request cannot have run twice,
    // streams unbuffered, and no /metrics of a gateway elsewhere.
    let site = read("synthetic-intelligence.nginx.conf");
    for line in [
        "upstream si_gateways {\n    server 10.0.0.5:8000 max_fails=3 fail_timeout=10s;\n    \
         server 10.0.0.6:8000 max_fails=3 fail_timeout=10s;\n",
        "    keepalive 64;\n",
        "proxy_pass http://si_gateways;\n",
        "proxy_next_upstream error timeout;\n",
        "proxy_buffering off;\n",
        "location = /metrics {\n        deny all;\n    }",
    ] {
        assert!(site.contains(line), "`{line}` not in {site}");
    }
    let mut retries = site
        .lines()
        .filter(|l| l.trim_start().starts_with("proxy_next_upstream "));
    assert!(retries.all(|l| !l.contains("non_idempotent")), "{site}");
    nginx_accepts(dir.path(), &out);

    // Prometheus: every backend on every host (two share each port, so each job
    // is named by its backend), and both gateways.
    let prometheus = read("prometheus.yml");
    for line in [
        "targets: [\"10.0.0.5:9464\", \"10.0.0.6:9464\"]",
        "job_name: llama-server-tiny-llama-1b-a\n",
        "targets: [\"10.0.0.11:8081\"]",
        "job_name: llama-server-biomistral-7b-b\n",
    ] {
        assert!(prometheus.contains(line), "`{line}` not in {prometheus}");
    }
    promtool_accepts(&out);

    // Only gpu-b's model servers, and `si-cli up` runs gpu-b's alone.
    let mut units: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("si-llama-"))
        .collect();
    units.sort();
    assert_eq!(
        units,
        [
            "si-llama-biomistral-7b-b.service",
            "si-llama-tiny-llama-1b-b.service"
        ]
    );
    let platform = read("si-platform.service");
    assert!(platform.contains(" up --host gpu-b\n"), "{platform}");
    assert!(
        platform.contains(
            "Conflicts=si-gateway.service si-llama-tiny-llama-1b-b.service \
             si-llama-biomistral-7b-b.service\n"
        ),
        "{platform}"
    );
    let pm2 = read("ecosystem.config.js");
    assert_eq!(pm2.matches("name: \"llama-").count(), 2, "{pm2}");
    assert!(pm2.contains("--host 10.0.0.12 --port 8081 --alias biomistral-7b"));
}

#[test]
fn a_configuration_for_several_hosts_is_rendered_one_host_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    several_hosts(dir.path());
    let (_, all) = render_with(dir.path(), &["--config", "si.toml"]);
    assert!(!all.status.success());
    let said = shown(&all);
    assert!(
        said.contains("both listen on port 8080") && said.contains("--host NAME"),
        "{said}"
    );
    let (_, unknown) = render_with(dir.path(), &["--config", "si.toml", "--host", "gpu-c"]);
    assert!(!unknown.status.success());
    let said = shown(&unknown);
    assert!(
        said.contains(
            "no backend is placed on host `gpu-c`; this configuration places them on gpu-a, gpu-b"
        ),
        "{said}"
    );
}

/// `nginx -t` accepts the rendered site inside a minimal main configuration.
fn nginx_accepts(dir: &Path, out: &Path) {
    let nginx = tool("nginx").expect("nginx (.ci/run installs it)");
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(prefix.join("logs")).unwrap();
    let p = prefix.display();
    let main = format!(
        "pid {p}/nginx.pid;\nerror_log {p}/logs/error.log;\nevents {{}}\nhttp {{\n  access_log off;\n  \
         client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n  fastcgi_temp_path {p}/fastcgi;\n  \
         uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n  include {};\n}}\n",
        out.join("synthetic-intelligence.nginx.conf").display()
    );
    std::fs::write(prefix.join("nginx.conf"), main).unwrap();
    let tested = run(
        &nginx,
        &[
            "-t",
            "-p",
            prefix.to_str().unwrap(),
            "-c",
            prefix.join("nginx.conf").to_str().unwrap(),
        ],
    );
    assert!(tested.status.success(), "{}", shown(&tested));
}

/// promtool accepts the rendered scrape configuration, with the alert rules
/// beside it.
fn promtool_accepts(out: &Path) {
    let promtool = tool("promtool").expect("promtool (.ci/run installs prometheus)");
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/alerts.yml");
    std::fs::copy(rules, out.join("alerts.yml")).unwrap();
    let checked = run(
        &promtool,
        &[
            "check",
            "config",
            "--syntax-only",
            out.join("prometheus.yml").to_str().unwrap(),
        ],
    );
    assert!(checked.status.success(), "{}", shown(&checked));
}

#[test]
fn systemd_units_verify_where_systemd_analyze_exists() {
    let dir = tempfile::tempdir().unwrap();
    let out = render(dir.path());
    let units: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .filter(|p| p.ends_with(".service"))
        .collect();
    assert_eq!(units.len(), 8);
    // The whole platform under `si-cli up`: SIGTERM to the supervisor alone, which
    // stops the gateway before the model servers, with time for both.
    let platform = std::fs::read_to_string(out.join("si-platform.service")).unwrap();
    let si_cli = dir.path().join("bin/si-cli");
    assert!(
        platform.contains(&format!("ExecStart={} --config ", si_cli.display())),
        "{platform}"
    );
    assert!(platform.ends_with("WantedBy=multi-user.target\n"));
    for line in [
        "KillMode=mixed",
        "TimeoutStopSec=57",
        "Conflicts=si-gateway.service si-llama-tiny-llama-1b-8080.service",
        "NoNewPrivileges=yes",
    ] {
        assert!(platform.contains(line), "{line}: {platform}");
    }
    let gateway = std::fs::read_to_string(out.join("si-gateway.service")).unwrap();
    for hardening in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "Restart=on-failure",
        "WantedBy=multi-user.target",
    ] {
        assert!(gateway.contains(hardening), "{hardening}");
    }
    let llama = std::fs::read_to_string(out.join("si-llama-biomistral-7b-8085.service")).unwrap();
    assert!(llama.contains("'. /srv/si/.api_keys.env; "), "{llama}");
    assert!(
        llama.contains("Environment=CUDA_VISIBLE_DEVICES=0"),
        "{llama}"
    );
    // The documented exception: verified where the tool exists (not in every
    // container); the text checks above always run.
    let Some(analyze) = tool("systemd-analyze") else {
        eprintln!("systemd-analyze not installed: unit files checked as text only");
        return;
    };
    let mut args = vec!["verify", "--man=no"];
    args.extend(units.iter().map(String::as_str));
    let verified = run(&analyze, &args);
    assert!(verified.status.success(), "{}", shown(&verified));
}
