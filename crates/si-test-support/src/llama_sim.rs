//! wiremock playing llama-server faithfully: the loading check before the key check,
//! keys from `Authorization` (with or without `Bearer `) or `X-Api-Key`, `/health`
//! exempt, both streaming shapes, keep-alive comments, mid-stream errors, and
//! llama-server's error bodies.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate, matchers::any};

/// How a simulated server streams (llama.cpp changed this between builds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamShape {
    /// `usage` only with `stream_options.include_usage`, in an extra `"choices":[]` chunk.
    Newer,
    /// `usage` and `timings` on the finish chunk itself, and `:` keep-alive comments.
    Older,
    /// Fails after two content deltas: an error event, and no `[DONE]`.
    MidStreamError,
}

/// What one simulated llama-server does.
struct LlamaBehaviour {
    alias: String,
    port_tag: u16,
    /// Every key it accepts (llama-server takes several, for rotation).
    keys: Arc<Mutex<Vec<String>>>,
    shape: StreamShape,
    loading: Arc<AtomicBool>,
    failing: Arc<AtomicBool>,
    /// Answers to non-streamed chats wait this long (ms), as a model generating.
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
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
            ("GET", "/props") => ResponseTemplate::new(200).set_body_json(json!({
                "total_slots": 2,
                "default_generation_settings": {"n_ctx": 4096},
                "model_path": format!("/models/{}.gguf", self.alias),
            })),
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
        self.keys.lock().unwrap().contains(&presented)
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
        // No vision projector here: llama-server refuses image parts with a 500 that
        // the request, not the server, caused.
        let has_image = body["messages"].as_array().is_some_and(|messages| {
            messages.iter().any(|m| {
                m["content"]
                    .as_array()
                    .is_some_and(|parts| parts.iter().any(|p| p["type"] == "image_url"))
            })
        });
        if has_image {
            return llama_error(
                500,
                "image input is not supported - hint: if this is unexpected, you may need to provide the mmproj",
                "server_error",
            );
        }
        let content = body["messages"][0]["content"].as_str().unwrap_or("");
        if content == "think slowly" {
            return self.completion().set_delay(Duration::from_secs(60));
        }
        // Some llama-server 500s quote the conversation: parser failures (the
        // request's fault) and failures while decoding it (the server's).
        if content.starts_with("fail:") {
            let message = format!("failed to parse input: {content}");
            return llama_error(500, &message, "server_error");
        }
        if content.starts_with("crash:") {
            let message = format!("decode failed at: {content}");
            return llama_error(500, &message, "server_error");
        }
        if self.failing.load(Ordering::SeqCst) {
            return llama_error(500, "slot crashed", "server_error");
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
        let delay = Duration::from_millis(self.delay_ms.load(Ordering::SeqCst));
        ResponseTemplate::new(200).set_delay(delay).set_body_json(json!({
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
    let port = port.to_string();
    let words: &[&str] = match shape {
        StreamShape::MidStreamError => &["answer ", "from "],
        StreamShape::Newer | StreamShape::Older => &["answer ", "from ", &port],
    };
    for word in words {
        out += &chunk(json!({"content": word}), Value::Null, None);
    }
    match shape {
        StreamShape::Older => {
            out += ":\n\n";
            out += &chunk(json!({}), json!("stop"), Some(("usage", usage)));
        }
        StreamShape::MidStreamError => {
            let error =
                json!({"error": {"code": 500, "message": "slot crashed", "type": "server_error"}});
            return out + &format!("data: {error}\n\n");
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
    keys: Arc<Mutex<Vec<String>>>,
    failing: Arc<AtomicBool>,
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
}

impl LlamaSim {
    pub async fn start(
        port_tag: u16,
        key_var: &'static str,
        alias: &str,
        shape: StreamShape,
    ) -> Self {
        let server = MockServer::builder().start().await;
        let key = format!("key-{port_tag}-{}", si_auth::secret::random_hex(8));
        let loading = Arc::new(AtomicBool::new(false));
        let keys = Arc::new(Mutex::new(vec![key.clone()]));
        let failing = Arc::new(AtomicBool::new(false));
        let delay_ms = Arc::new(std::sync::atomic::AtomicU64::new(0));
        Mock::given(any())
            .respond_with(LlamaBehaviour {
                alias: alias.to_owned(),
                port_tag,
                keys: keys.clone(),
                shape,
                loading: loading.clone(),
                failing: failing.clone(),
                delay_ms: delay_ms.clone(),
            })
            .mount(&server)
            .await;
        LlamaSim {
            server,
            key,
            key_var,
            port_tag,
            loading,
            keys,
            failing,
            delay_ms,
        }
    }

    /// Non-streamed answers take `delay` from now on.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// The message texts of every chat request it received, one string per request.
    pub async fn chat_texts(&self) -> Vec<String> {
        let requests = self.server.received_requests().await.unwrap_or_default();
        requests
            .iter()
            .filter(|r| r.url.path() == "/v1/chat/completions")
            .map(|r| {
                let body: Value = serde_json::from_slice(&r.body).unwrap_or_default();
                body["messages"]
                    .as_array()
                    .map(|m| {
                        m.iter()
                            .filter_map(|m| m["content"].as_str())
                            .collect::<Vec<_>>()
                            .join("\n")
                    })
                    .unwrap_or_default()
            })
            .collect()
    }

    /// The keys it accepts from now on, as after a restart with `--api-key A,B`.
    pub fn set_keys(&self, keys: &[&str]) {
        *self.keys.lock().unwrap() = keys.iter().map(|k| (*k).to_owned()).collect();
    }

    /// Answers chats with 500 from now on (or no more).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    pub fn set_loading(&self, loading: bool) {
        self.loading.store(loading, Ordering::SeqCst);
    }

    /// Requests it received, health polls aside.
    pub async fn non_health_requests(&self) -> usize {
        let requests = self.server.received_requests().await.unwrap_or_default();
        requests
            .iter()
            .filter(|r| r.url.path() != "/health")
            .count()
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
