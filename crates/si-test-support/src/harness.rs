//! The harness: the real gateway on 127.0.0.1:0 in front of six simulated
//! llama-servers, and request helpers.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use si_core::config::BUILTIN_TOML;
use si_core::{Config, Environment};
use si_server::Gateway;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub use crate::llama_sim::{LlamaSim, StreamShape, sse_body};

/// The six backends of the default deployment: (port, key variable, alias).
pub const BACKENDS: [(u16, &str, &str); 6] = [
    (8080, "API_KEY_TINY_LLAMA_1B_8080", "tiny-llama-1b"),
    (8081, "API_KEY_BIMEDIX2_8081", "bimedix2-8b"),
    (8082, "API_KEY_MEDICINE_LLM_8082", "medicine-llm-13b"),
    (8083, "API_KEY_TINY_LLAMA_1B_8083", "tiny-llama-1b"),
    (8084, "API_KEY_OPENINSURANCE_8084", "openinsurance-8b"),
    (8085, "API_KEY_BIOMISTRAL_8085", "biomistral-7b"),
];

/// The gateway under test plus its six backends.
pub struct Harness {
    pub base: String,
    /// The gateway's metrics listener (`/metrics`, `/backends`).
    pub metrics_base: String,
    pub sims: Vec<LlamaSim>,
    pub gateway: Gateway,
    /// The configuration it was parsed from, and the environment on top.
    toml: String,
    env: Vec<(String, String)>,
    _data: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// Options for [`Harness::start`].
#[derive(Default)]
pub struct Options {
    /// Streaming shape per backend (Newer unless listed).
    pub stream_shapes: Vec<(u16, StreamShape)>,
    /// Extra environment (e.g. ALLOW_INSECURE_DEV).
    pub env: Vec<(&'static str, String)>,
    /// Replace a backend's URL (by its default port) with another.
    pub url_overrides: Vec<(u16, String)>,
    /// Replace text in the TOML before parsing.
    pub toml_edits: Vec<(&'static str, String)>,
    /// Give the gateway a wrong key for these ports.
    pub wrong_key_ports: Vec<u16>,
    /// Give the gateway no key for these ports.
    pub no_key_ports: Vec<u16>,
    /// Read GPUs from this instead of NVML or the declared ones.
    pub gpus: Option<std::sync::Arc<dyn si_gpu::GpuInventory>>,
    /// Listen on this port (0: any free one), for tests that must name the
    /// gateway's address before it starts (an identity provider's redirect URI).
    pub port: u16,
}

pub const TEST_PASSWORD: &str = "correct horse battery staple";

impl Harness {
    pub async fn start(options: Options) -> Harness {
        let mut sims = Vec::new();
        for (port, key_var, alias) in BACKENDS {
            let shape = options
                .stream_shapes
                .iter()
                .find(|(p, _)| *p == port)
                .map_or(StreamShape::Newer, |(_, s)| *s);
            sims.push(LlamaSim::start(port, key_var, alias, shape).await);
        }
        let mut toml = BUILTIN_TOML
            .replace("health_interval_ms = 5000", "health_interval_ms = 3600000")
            .replace("drain_notice_ms = 2000", "drain_notice_ms = 0");
        for (from, to) in &options.toml_edits {
            toml = toml.replace(from, to);
        }
        for sim in &sims {
            let url = options
                .url_overrides
                .iter()
                .find(|(p, _)| *p == sim.port_tag)
                .map(|(_, u)| u.clone())
                .unwrap_or_else(|| sim.server.uri());
            toml = toml.replace(
                &format!("\"http://127.0.0.1:{}\"", sim.port_tag),
                &format!("\"{url}\""),
            );
        }
        let data = tempfile::tempdir().expect("tempdir");
        let mut env_pairs: Vec<(String, String)> = options
            .env
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.clone()))
            .collect();
        for sim in &sims {
            if options.no_key_ports.contains(&sim.port_tag) {
                continue;
            }
            let key = if options.wrong_key_ports.contains(&sim.port_tag) {
                "wrong-key".to_owned()
            } else {
                sim.key.clone()
            };
            env_pairs.push((sim.key_var.to_owned(), key));
        }
        let mut env = Environment::from_pairs(env_pairs.clone());
        env.set("SI_DATA_DIR", data.path().to_string_lossy().into_owned());
        let mut config = Config::parse(&toml, "test.toml").expect("test config");
        config.apply_env(&env).expect("test env");
        let mut parts = Gateway::parts(&config).await.expect("gateway parts");
        if let Some(gpus) = &options.gpus {
            parts.gpus = gpus.clone();
        }
        let gateway = Gateway::new(config, parts).await.expect("gateway");
        let users = gateway.accounts();
        for (name, role, location) in [
            ("doctor1", "clinician", "hospital-01"),
            ("biller", "billing", "*"),
            ("admin1", "admin", "*"),
        ] {
            let added = users
                .add(&si_auth::NewUser {
                    username: name,
                    password: &TEST_PASSWORD.to_owned().into(),
                    role: role.parse().expect("role"),
                    location,
                })
                .await;
            // Another gateway on the same shared store added them first.
            if !matches!(added, Ok(_) | Err(si_auth::AuthError::UserExists(_))) {
                panic!("add user: {added:?}");
            }
        }
        let listener = TcpListener::bind(("127.0.0.1", options.port))
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = oneshot::channel::<()>();
        let stopped = futures_util::FutureExt::shared(stopped);
        let metrics = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let metrics_base = format!("http://{}", metrics.local_addr().expect("addr"));
        let metrics_stopped = stopped.clone();
        tokio::spawn(si_server::serve_metrics(
            metrics,
            gateway.clone(),
            async move {
                let _ = metrics_stopped.await;
            },
        ));
        let server = tokio::spawn(si_server::run(listener, gateway.clone(), async move {
            let _ = stopped.await;
        }));
        let harness = Harness {
            base,
            metrics_base,
            sims,
            gateway,
            toml,
            env: env_pairs,
            _data: data,
            stop: Some(stop),
            server: Some(server),
        };
        harness.wait_for_first_poll().await;
        harness
    }

    /// The same gateway as a process of its own (`bin`, the `si-server`
    /// executable), on free ports, in front of the same backends with the same
    /// keys and environment, plus `env`: for tests that kill a gateway. Returns it
    /// once `/healthz` answers, with its address.
    pub async fn spawn_process(
        &self,
        bin: &str,
        env: &[(&str, String)],
    ) -> (tokio::process::Child, String, tempfile::TempDir) {
        let [port, metrics] = crate::ports::free_ports();
        let dir = tempfile::tempdir().expect("tempdir");
        let toml = self
            .toml
            .replace("\"127.0.0.1:8000\"", &format!("\"127.0.0.1:{port}\""))
            .replace("\"127.0.0.1:9464\"", &format!("\"127.0.0.1:{metrics}\""));
        let config = dir.path().join("si.toml");
        std::fs::write(&config, toml).expect("config file");
        let child = tokio::process::Command::new(bin)
            .arg("--config")
            .arg(&config)
            .current_dir(dir.path())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("SI_DATA_DIR", dir.path())
            .kill_on_drop(true)
            .spawn()
            .expect("si-server");
        let base = format!("http://127.0.0.1:{port}");
        for _ in 0..300 {
            let probe = http::Request::get(format!("{base}/healthz"))
                .body(Full::new(Bytes::new()))
                .expect("request");
            if let Ok(response) = client().request(probe).await
                && response.status() == 200
            {
                return (child, base, dir);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("si-server did not answer on {base}");
    }

    /// Waits until no backend is in the `unknown` state.
    pub async fn wait_for_first_poll(&self) {
        for _ in 0..200 {
            let polled = self
                .gateway
                .router()
                .pool()
                .all()
                .iter()
                .all(|b| b.state().as_str() != "unknown");
            if polled {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("backends were never polled");
    }

    pub fn sim(&self, port: u16) -> &LlamaSim {
        self.sims.iter().find(|s| s.port_tag == port).expect("sim")
    }

    pub async fn login(&self, username: &str) -> String {
        let (status, body) = self
            .post_json("/v1/auth/login", None, json!({"username": username, "password": TEST_PASSWORD, "location_id": "hospital-01"}))
            .await;
        assert_eq!(status, 200, "login failed: {body}");
        body["access_token"].as_str().expect("token").to_owned()
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Bytes,
    ) -> http::Response<Incoming> {
        let mut builder = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json");
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        client()
            .request(builder.body(Full::new(body)).expect("request"))
            .await
            .expect("gateway reachable")
    }

    /// POSTs `body` to the chat endpoint; the response is left to the caller.
    pub async fn chat(&self, token: &str, body: &Value) -> http::Response<Incoming> {
        self.request(
            "POST",
            "/v1/chat/completions",
            Some(token),
            Bytes::from(body.to_string()),
        )
        .await
    }

    /// Starts a streamed chat with `agent`; the body is left to the caller.
    pub async fn stream(&self, token: &str, agent: &str) -> http::Response<Incoming> {
        let body = json!({"agent_type": agent, "stream": true, "messages": [{"role": "user", "content": "hi"}]});
        self.request(
            "POST",
            "/v1/chat/completions",
            Some(token),
            Bytes::from(body.to_string()),
        )
        .await
    }

    pub async fn post_json(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let response = self
            .request("POST", path, token, Bytes::from(body.to_string()))
            .await;
        read_json(response).await
    }

    pub async fn get_json(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        read_json(self.request("GET", path, token, Bytes::new()).await).await
    }

    /// Sends the shutdown signal without waiting for the drain.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Whether the server task has finished.
    pub fn server_finished(&self) -> bool {
        self.server.as_ref().is_none_or(|s| s.is_finished())
    }

    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server result");
        }
    }
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub async fn read_json(response: http::Response<Incoming>) -> (u16, Value) {
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value)
}

pub fn chat_body(agent: &str) -> Value {
    json!({"agent_type": agent, "messages": [{"role": "user", "content": "What is hypertension?"}], "temperature": 0.1})
}

/// A port with nothing listening on it.
pub fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// Asserts the OpenAI error shape and returns (type, code, message).
pub fn error_parts(body: &Value) -> (String, String, String) {
    let error = &body["error"];
    let text = |k: &str| {
        error[k]
            .as_str()
            .unwrap_or_else(|| panic!("error.{k} missing in {body}"))
            .to_owned()
    };
    (text("type"), text("code"), text("message"))
}
