//! Test doubles and harness: wiremock playing llama-server faithfully (keys enforced,
//! `Loading model`, both streaming shapes, error bodies), a raw TCP backend for
//! timing-sensitive streams, and the real gateway on 127.0.0.1:0.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use si::si_core::config::BUILTIN_TOML;
use si::{Config, Environment, Gateway};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate, matchers::any};

/// The six backends of the default deployment: (port, key variable, alias).
pub const BACKENDS: [(u16, &str, &str); 6] = [
    (8080, "API_KEY_TINY_LLAMA_1B_8080", "tiny-llama-1b"),
    (8081, "API_KEY_BIMEDIX2_8081", "bimedix2-8b"),
    (8082, "API_KEY_MEDICINE_LLM_8082", "medicine-llm-13b"),
    (8083, "API_KEY_TINY_LLAMA_1B_8083", "tiny-llama-1b"),
    (8084, "API_KEY_OPENINSURANCE_8084", "openinsurance-8b"),
    (8085, "API_KEY_BIOMISTRAL_8085", "biomistral-7b"),
];

/// How a simulated server streams (llama.cpp changed this between builds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamShape {
    /// `usage` only with `stream_options.include_usage`, in an extra `"choices":[]` chunk.
    Newer,
    /// `usage` and `timings` on the finish chunk itself.
    Older,
}

/// What one simulated llama-server does.
struct LlamaBehaviour {
    alias: String,
    port_tag: u16,
    key: String,
    shape: StreamShape,
    loading: Arc<AtomicBool>,
}

impl Respond for LlamaBehaviour {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let path = request.url.path();
        // llama-server checks loading before the key, on every endpoint.
        if self.loading.load(Ordering::SeqCst) {
            return llama_error(503, "Loading model", "unavailable_error");
        }
        if path == "/health" || path == "/v1/health" {
            return ResponseTemplate::new(200).set_body_json(json!({"status": "ok"}));
        }
        if !self.key_ok(request) {
            return llama_error(401, "Invalid API Key", "authentication_error");
        }
        match (request.method.as_str(), path) {
            ("POST", "/v1/chat/completions" | "/chat/completions") => self.chat(request),
            _ => llama_error(404, "File Not Found", "not_found_error"),
        }
    }
}

impl LlamaBehaviour {
    fn key_ok(&self, request: &Request) -> bool {
        let header = |name: &str| {
            request
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let authorization = header("authorization");
        let presented = if authorization.is_empty() {
            header("x-api-key")
        } else {
            authorization
                .strip_prefix("Bearer ")
                .unwrap_or(&authorization)
                .to_owned()
        };
        presented == self.key
    }

    fn chat(&self, request: &Request) -> ResponseTemplate {
        let Ok(body) = serde_json::from_slice::<Value>(&request.body) else {
            return llama_error(
                400,
                "[json.exception.parse_error.101] parse error",
                "invalid_request_error",
            );
        };
        let prompt_chars: usize = body["messages"]
            .as_array()
            .map(|m| {
                m.iter()
                    .map(|m| m["content"].as_str().map_or(0, str::len))
                    .sum()
            })
            .unwrap_or(0);
        if prompt_chars > 1000 {
            return ResponseTemplate::new(400).set_body_json(json!({"error": {
                "code": 400, "type": "exceed_context_size_error", "n_prompt_tokens": 417, "n_ctx": 256,
                "message": "request (417 tokens) exceeds the available context size (256 tokens), try increasing it"}}));
        }
        let slow = body["messages"][0]["content"].as_str() == Some("think slowly");
        if slow {
            return self.completion().set_delay(Duration::from_secs(5));
        }
        if body["stream"].as_bool() == Some(true) {
            let include_usage = body["stream_options"]["include_usage"].as_bool() == Some(true);
            return ResponseTemplate::new(200)
                .insert_header("content-type", "text/event-stream")
                .insert_header("x-accel-buffering", "no")
                .set_body_raw(
                    sse_body(&self.alias, self.port_tag, self.shape, include_usage),
                    "text/event-stream",
                );
        }
        self.completion()
    }

    fn completion(&self) -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_json(json!({
            "id": "chatcmpl-test", "object": "chat.completion", "created": 1757141666,
            "model": self.alias, "system_fingerprint": "b6210-a094f381",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": format!("answer from {}", self.port_tag)}}],
            "usage": {"prompt_tokens": 14, "completion_tokens": 3, "total_tokens": 17},
            "timings": {"prompt_n": 14, "prompt_ms": 53.7, "predicted_n": 3, "predicted_ms": 40.1,
                        "predicted_per_second": 74.8, "cache_n": 0}
        }))
    }
}

/// llama-server's error shape.
pub fn llama_error(code: u16, message: &str, kind: &str) -> ResponseTemplate {
    ResponseTemplate::new(code).set_body_raw(
        json!({"error": {"code": code, "message": message, "type": kind}}).to_string(),
        "application/json; charset=utf-8",
    )
}

/// The SSE events a llama-server of `shape` sends for a three-token answer.
pub fn sse_body(alias: &str, port: u16, shape: StreamShape, include_usage: bool) -> String {
    let chunk = |delta: Value, finish: Value, extra: Option<(&str, Value)>| {
        let mut event = json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1,
            "model": alias, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        if let Some((k, v)) = extra {
            event[k] = v;
        }
        format!("data: {event}\n\n")
    };
    let usage = json!({"prompt_tokens": 14, "completion_tokens": 3, "total_tokens": 17});
    let mut out = chunk(
        json!({"role": "assistant", "content": null}),
        Value::Null,
        None,
    );
    for word in ["answer ", "from ", &port.to_string()] {
        out += &chunk(json!({"content": word}), Value::Null, None);
    }
    match shape {
        StreamShape::Older => {
            out += &chunk(json!({}), json!("stop"), Some(("usage", usage)));
        }
        StreamShape::Newer => {
            out += &chunk(json!({}), json!("stop"), None);
            if include_usage {
                let event = json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1,
                    "model": alias, "choices": [], "usage": usage});
                out += &format!("data: {event}\n\n");
            }
        }
    }
    out + "data: [DONE]\n\n"
}

/// One simulated llama-server.
pub struct LlamaSim {
    pub server: MockServer,
    pub key: String,
    pub key_var: &'static str,
    pub port_tag: u16,
    loading: Arc<AtomicBool>,
}

impl LlamaSim {
    pub async fn start(
        port_tag: u16,
        key_var: &'static str,
        alias: &str,
        shape: StreamShape,
    ) -> Self {
        let server = MockServer::builder().start().await;
        let key = format!("key-{port_tag}-{}", si::si_auth::secret::random_hex(8));
        let loading = Arc::new(AtomicBool::new(false));
        Mock::given(any())
            .respond_with(LlamaBehaviour {
                alias: alias.to_owned(),
                port_tag,
                key: key.clone(),
                shape,
                loading: loading.clone(),
            })
            .mount(&server)
            .await;
        LlamaSim {
            server,
            key,
            key_var,
            port_tag,
            loading,
        }
    }

    pub fn set_loading(&self, loading: bool) {
        self.loading.store(loading, Ordering::SeqCst);
    }

    /// Bodies and Authorization headers of the chat requests it received.
    pub async fn chats(&self) -> Vec<(Option<String>, Bytes)> {
        self.server
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.url.path() == "/v1/chat/completions")
            .map(|r| {
                let auth = r
                    .headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                (auth, Bytes::from(r.body))
            })
            .collect()
    }
}

/// The gateway under test plus its six backends.
pub struct Harness {
    pub base: String,
    pub sims: Vec<LlamaSim>,
    pub gateway: Gateway,
    _data: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// Options for [`Harness::start`].
#[derive(Default)]
pub struct Options {
    /// Streaming shape per backend (Newer unless listed).
    pub older_shape_ports: Vec<u16>,
    /// Extra environment (e.g. ALLOW_INSECURE_DEV).
    pub env: Vec<(&'static str, String)>,
    /// Replace a backend's URL (by its default port) with another.
    pub url_overrides: Vec<(u16, String)>,
    /// Replace text in the TOML before parsing.
    pub toml_edits: Vec<(&'static str, String)>,
    /// Give the gateway a wrong key for these ports.
    pub wrong_key_ports: Vec<u16>,
}

pub const TEST_PASSWORD: &str = "correct horse battery staple";

impl Harness {
    pub async fn start(options: Options) -> Harness {
        let mut sims = Vec::new();
        for (port, key_var, alias) in BACKENDS {
            let shape = if options.older_shape_ports.contains(&port) {
                StreamShape::Older
            } else {
                StreamShape::Newer
            };
            sims.push(LlamaSim::start(port, key_var, alias, shape).await);
        }
        let mut toml =
            BUILTIN_TOML.replace("health_interval_ms = 5000", "health_interval_ms = 3600000");
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
        let mut env = Environment::from_pairs(options.env.clone());
        env.set("SI_DATA_DIR", data.path().to_string_lossy().into_owned());
        for sim in &sims {
            let key = if options.wrong_key_ports.contains(&sim.port_tag) {
                "wrong-key".to_owned()
            } else {
                sim.key.clone()
            };
            env.set(sim.key_var, key);
        }
        let mut config = Config::parse(&toml, "test.toml").expect("test config");
        config.apply_env(&env).expect("test env");
        let gateway = Gateway::open(config).expect("gateway");
        let users = gateway.users();
        for (name, role, location) in [
            ("doctor1", "clinician", "hospital-01"),
            ("biller", "billing", "*"),
        ] {
            users
                .add(&si::si_auth::NewUser {
                    username: name,
                    password: &TEST_PASSWORD.to_owned().into(),
                    role: role.parse().expect("role"),
                    location,
                })
                .expect("add user");
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(si::run(listener, gateway.clone(), async move {
            let _ = stopped.await;
        }));
        let harness = Harness {
            base,
            sims,
            gateway,
            _data: data,
            stop: Some(stop),
            server: Some(server),
        };
        harness.wait_for_first_poll().await;
        harness
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

    pub async fn post_json(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let response = self
            .request("POST", path, token, Bytes::from(body.to_string()))
            .await;
        read_json(response).await
    }

    pub async fn get_json(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        read_json(self.request("GET", path, token, Bytes::new()).await).await
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
