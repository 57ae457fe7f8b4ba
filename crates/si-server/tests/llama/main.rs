//! The gateway in front of real llama-server processes running the project's own
//! tiny model: login, chat, streaming with usage, and failover when one replica
//! dies. It needs a llama-server binary, which `.ci/run` builds
//! (`.ci/llama-server`) and passes in `SI_LLAMA_SERVER`; run it with
//! `cargo test -p si-server --test llama -- --ignored`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use si_core::{Config, Environment};
use si_server::Gateway;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Two different free ports: both are held until both are chosen.
fn free_ports() -> (u16, u16) {
    let a = StdListener::bind("127.0.0.1:0").unwrap();
    let b = StdListener::bind("127.0.0.1:0").unwrap();
    (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
}

/// A llama-server on `port` with `key` in its environment (never its arguments).
fn llama_server(binary: &str, model: &std::path::Path, port: u16, key: &str) -> Server {
    let child = Command::new(binary)
        .args(["-m", model.to_str().unwrap(), "--host", "127.0.0.1"])
        .args(["--port", &port.to_string(), "-c", "256", "--alias", "tiny"])
        .env("LLAMA_API_KEY", key)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Server(child)
}

async fn request(method: &str, url: &str, token: Option<&str>, body: Value) -> (u16, Bytes) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut builder = http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json");
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    let body = if body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(body.to_string())
    };
    let response = client
        .request(builder.body(Full::new(body)).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

async fn wait_healthy(port: u16) {
    for _ in 0..200 {
        let url = format!("http://127.0.0.1:{port}/health");
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        if let Ok(response) = client.get(url.parse().unwrap()).await
            && response.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("llama-server on {port} never became healthy");
}

fn letters_only(text: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| c.is_ascii_alphabetic() || c == ' ')
}

#[tokio::test]
#[ignore = "needs a real llama-server: .ci/run builds one and runs this with --ignored"]
async fn chat_streams_and_fails_over_across_real_llama_servers() {
    let binary = std::env::var("SI_LLAMA_SERVER")
        .expect("SI_LLAMA_SERVER: the llama-server to run (.ci/llama-server builds one)");
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.gguf");
    std::fs::write(&model, si_gpu::gguf::write::tiny_llama(1)).unwrap();
    let (a, b) = free_ports();
    let (key_a, key_b) = ("key-a-0123456789abcdef", "key-b-0123456789abcdef");
    let first = llama_server(&binary, &model, a, key_a);
    let _second = llama_server(&binary, &model, b, key_b);
    wait_healthy(a).await;
    wait_healthy(b).await;

    let toml = format!(
        r#"[gateway]
listen = "127.0.0.1:0"
metrics_listen = ""
health_interval_ms = 200

[backend_defaults]
queue_depth = 512
queue_timeout_ms = 120000

[rate_limits]
per_ip_per_minute = 0

# Declared as vision servers, though started without a projector: image parts
# reach them, and they answer as llama-server does.
[[backends]]
name = "tiny-a"
url = "http://127.0.0.1:{a}"
model = "tiny"
api_key = "env::KEY_A"
vision = true

[[backends]]
name = "tiny-b"
url = "http://127.0.0.1:{b}"
model = "tiny"
api_key = "env::KEY_B"
vision = true

[[agents]]
name = "Chat"
model = "tiny"
tier = "fast"

[roles]
admin = ["*"]
"#
    );
    let mut config = Config::parse(&toml, "test.toml").unwrap();
    let env = Environment::from_pairs([
        ("KEY_A".to_owned(), key_a.to_owned()),
        ("KEY_B".to_owned(), key_b.to_owned()),
        (
            "SI_DATA_DIR".to_owned(),
            dir.path().join("data").display().to_string(),
        ),
    ]);
    config.apply_env(&env).unwrap();
    let gateway = Gateway::open(config).await.unwrap();
    gateway
        .accounts()
        .add(&si_auth::NewUser {
            username: "admin1",
            password: &"a long enough password".to_owned().into(),
            role: "admin".parse().unwrap(),
            location: "*",
        })
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(si_server::run(listener, gateway.clone(), async move {
        let _ = stopped.await;
    }));

    let login = json!({"username": "admin1", "password": "a long enough password", "location_id": "ward-1"});
    let (status, body) = request("POST", &format!("{base}/v1/auth/login"), None, login).await;
    assert_eq!(status, 200, "{body:?}");
    let token: Value = serde_json::from_slice(&body).unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();
    let chat = json!({"agent_type": "Chat", "max_tokens": 12,
                      "messages": [{"role": "user", "content": "Say something."}]});

    // A whole answer: the model's letters, and llama-server's own usage counts.
    let url = format!("{base}/v1/chat/completions");
    let (status, body) = request("POST", &url, Some(&token), chat.clone()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer: Value = serde_json::from_slice(&body).unwrap();
    let text = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(letters_only(text), "{text:?}");
    assert_eq!(answer["usage"]["completion_tokens"].as_u64(), Some(12));

    // A stream: chunk by chunk, the usage chunk, then [DONE].
    let mut streamed = chat.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let (status, body) = request("POST", &url, Some(&token), streamed).await;
    assert_eq!(status, 200);
    let events = String::from_utf8(body.to_vec()).unwrap();
    let deltas: String = events
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert!(letters_only(&deltas), "{events}");
    assert!(events.contains("\"completion_tokens\":12"), "{events}");
    assert!(events.trim_end().ends_with("data: [DONE]"), "{events}");

    // A request the server cannot take (an image, no projector): llama-server
    // answers 500; it is the caller's 400, tried on one replica only, and ejects
    // nothing however often it is sent.
    let image = json!({"agent_type": "Chat", "max_tokens": 4, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]});
    for _ in 0..6 {
        let (status, body) = request("POST", &url, Some(&token), image.clone()).await;
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("image input is not supported"), "{body}");
    }
    for backend in gateway.router().pool().all() {
        assert_eq!(backend.state_label(), "ok", "{}", backend.name);
    }

    // One replica dies: 200 requests at once all get an answer from the other.
    drop(first);
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..200 {
        let (url, token) = (url.clone(), token.clone());
        let ask = json!({"agent_type": "Chat", "max_tokens": 2,
                         "messages": [{"role": "user", "content": format!("Say {i}.")}]});
        requests.spawn(async move { request("POST", &url, Some(&token), ask).await });
    }
    let mut failed = Vec::new();
    while let Some(answered) = requests.join_next().await {
        let (status, body) = answered.unwrap();
        if status != 200 {
            failed.push((status, String::from_utf8_lossy(&body).into_owned()));
        }
    }
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        failed.first()
    );
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
