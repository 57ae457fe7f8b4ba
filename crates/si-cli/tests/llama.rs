//! The whole platform for real: `si-cli up` runs three llama-server processes (two
//! replicas of the project's tiny model and a second model) and the gateway; a
//! user logs in and chats, streaming and not, through it; the model servers
//! refuse requests without their key; a replica killed with SIGKILL is restarted
//! while requests keep succeeding on the other, and a hung one (SIGSTOP) is
//! replaced; `si-cli stop` stops the gateway first. It needs a llama-server binary, which `.ci/run` builds
//! (`.ci/llama-server`) and passes in `SI_LLAMA_SERVER`; run it with
//! `cargo test -p si-cli --test llama -- --ignored`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use si_test_support::ports::free_ports;

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Stops the platform when the test ends, however it ends.
struct Platform<'a>(&'a Path);

impl Drop for Platform<'_> {
    fn drop(&mut self) {
        let _ = si_cli_with_stdin(self.0, &["--config", "si.toml", "stop"], None);
    }
}

async fn request(
    method: &str,
    url: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> (u16, Bytes) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut builder = http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json");
    if let Some(token) = bearer {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
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

fn status(dir: &Path) -> Value {
    let out = si_cli_with_stdin(dir, &["--config", "si.toml", "status", "--json"], None);
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn process<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["processes"]
        .as_array()
        .and_then(|all| all.iter().find(|p| p["name"] == name))
        .unwrap_or(&Value::Null)
}

fn letters_only(text: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| c.is_ascii_alphabetic() || c == ' ')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real llama-server: .ci/run builds one and runs this with --ignored"]
async fn si_cli_up_runs_real_llama_servers_behind_the_gateway() {
    let binary = std::env::var("SI_LLAMA_SERVER")
        .expect("SI_LLAMA_SERVER: the llama-server to run (.ci/llama-server builds one)");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("models")).unwrap();
    ok(si_cli_with_stdin(
        root,
        &["tiny-model", "models/tiny.gguf"],
        None,
    ));
    ok(si_cli_with_stdin(
        root,
        &["tiny-model", "models/other.gguf", "--seed", "2"],
        None,
    ));
    let [a, b, c, gateway, metrics] = free_ports();
    let backend = |name: &str, port: u16, model: &str, file: &str, key: &str| {
        format!(
            "[[backends]]\nname = \"{name}\"\nurl = \"http://127.0.0.1:{port}\"\n\
             model = \"{model}\"\napi_key = \"env::{key}\"\nmodel_file = \"models/{file}\"\n\
             ctx_size = 256\nthreads = 1\nparallel = 2\nheaders_timeout_ms = 3000\n\n"
        )
    };
    let toml = format!(
        "[gateway]\nlisten = \"127.0.0.1:{gateway}\"\nmetrics_listen = \"127.0.0.1:{metrics}\"\n\
         data_dir = \"data\"\nhealth_interval_ms = 200\n\n\
         [supervisor]\nllama_server = \"{binary}\"\nrestart_delay_ms = 200\n\
         unhealthy_restart_ms = 2000\nstop_timeout_ms = 1000\n\n\
         {}{}{}\
         [[agents]]\nname = \"Chat\"\nmodel = \"tiny\"\ntier = \"fast\"\n\n\
         [[agents]]\nname = \"MedicalQA\"\nmodel = \"other\"\ntier = \"fast\"\n\n\
         [roles]\nadmin = [\"*\"]\n",
        backend("tiny-a", a, "tiny", "tiny.gguf", "KEY_TINY_A"),
        backend("tiny-b", b, "tiny", "tiny.gguf", "KEY_TINY_B"),
        backend("other", c, "other", "other.gguf", "KEY_OTHER"),
    );
    std::fs::write(root.join("si.toml"), toml).unwrap();
    let config = ["--config", "si.toml"];
    ok(si_cli_with_stdin(
        root,
        &[&config[..], &["keys", "generate"]].concat(),
        None,
    ));
    ok(si_cli_with_stdin(
        root,
        &[
            &config[..],
            &["users", "add", "admin1", "--role", "admin"],
            &["--location", "*", "--password-stdin"],
        ]
        .concat(),
        Some("a long enough password\n"),
    ));

    let started = Instant::now();
    let _platform = Platform(root);
    let up = ok(si_cli_with_stdin(
        root,
        &[&config[..], &["up", "--detach"]].concat(),
        None,
    ));
    let up_seconds = started.elapsed().as_secs_f64();
    for name in ["tiny-a", "tiny-b", "other", "gateway"] {
        let line = up.lines().find(|l| l.starts_with(name)).unwrap();
        assert!(line.contains(" ready "), "{up}");
    }
    eprintln!("si-cli up --detach returned with everything ready in {up_seconds:.2} s");

    // Each model server holds its own key, never on its command line.
    let keys = std::fs::read_to_string(root.join(".api_keys.env")).unwrap();
    let key_of = |var: &str| {
        keys.lines()
            .find_map(|l| l.strip_prefix(&format!("{var}=")))
            .unwrap()
            .to_owned()
    };
    let status_now = status(root);
    for name in ["tiny-a", "tiny-b", "other"] {
        let pid = process(&status_now, name)["pid"].as_u64().unwrap();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let cmdline = String::from_utf8_lossy(&cmdline);
        for var in ["KEY_TINY_A", "KEY_TINY_B", "KEY_OTHER"] {
            assert!(!cmdline.contains(&key_of(var)), "{name}: {cmdline}");
        }
    }
    let direct = format!("http://127.0.0.1:{a}/v1/chat/completions");
    let chat = json!({"max_tokens": 4, "messages": [{"role": "user", "content": "Hello"}]});
    let (code, _) = request("POST", &direct, None, Some(chat.clone())).await;
    assert_eq!(code, 401, "tiny-a answered without a key");
    let (code, _) = request(
        "POST",
        &direct,
        Some(&key_of("KEY_TINY_B")),
        Some(chat.clone()),
    )
    .await;
    assert_eq!(code, 401, "tiny-a answered to tiny-b's key");
    let (code, body) = request(
        "POST",
        &direct,
        Some(&key_of("KEY_TINY_A")),
        Some(chat.clone()),
    )
    .await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));

    // Through the gateway: log in, chat with each model, whole and streamed.
    let base = format!("http://127.0.0.1:{gateway}");
    let login = json!({"username": "admin1", "password": "a long enough password",
                       "location_id": "ward-1"});
    let (code, body) = request("POST", &format!("{base}/v1/auth/login"), None, Some(login)).await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let token: Value = serde_json::from_slice(&body).unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();
    let url = format!("{base}/v1/chat/completions");
    let ask = |agent: &str| {
        json!({"agent_type": agent, "max_tokens": 8,
               "messages": [{"role": "user", "content": "Say something."}]})
    };
    for agent in ["Chat", "MedicalQA"] {
        let (code, body) = request("POST", &url, Some(&token), Some(ask(agent))).await;
        assert_eq!(code, 200, "{agent}: {}", String::from_utf8_lossy(&body));
        let answer: Value = serde_json::from_slice(&body).unwrap();
        let text = answer["choices"][0]["message"]["content"].as_str().unwrap();
        assert!(letters_only(text), "{agent}: {text:?}");
        assert_eq!(answer["usage"]["completion_tokens"], 8);
    }
    let mut streamed = ask("Chat");
    streamed["stream"] = json!(true);
    let (code, body) = request("POST", &url, Some(&token), Some(streamed.clone())).await;
    assert_eq!(code, 200);
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
    assert!(events.trim_end().ends_with("data: [DONE]"), "{events}");

    // A replica dies: requests keep succeeding on the other while it comes back.
    let old_pid = process(&status_now, "tiny-a")["pid"].as_u64().unwrap();
    let pid = rustix::process::Pid::from_raw(i32::try_from(old_pid).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    let killed = Instant::now();
    for i in 0..10 {
        let body = if i % 2 == 0 {
            ask("Chat")
        } else {
            streamed.clone()
        };
        let (code, body) = request("POST", &url, Some(&token), Some(body)).await;
        assert_eq!(code, 200, "request {i}: {}", String::from_utf8_lossy(&body));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let back = loop {
        let now = status(root);
        let tiny_a = process(&now, "tiny-a");
        if tiny_a["state"] == "ready" && tiny_a["pid"].as_u64().is_some_and(|p| p != old_pid) {
            break now;
        }
        assert!(Instant::now() < deadline, "tiny-a never came back: {now:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "tiny-a was back {:.2} s after SIGKILL",
        killed.elapsed().as_secs_f64()
    );
    let tiny_a = process(&back, "tiny-a");
    assert_eq!(tiny_a["restarts"], 1, "{back:#}");
    assert_eq!(tiny_a["last_exit"], "was killed (SIGKILL)");
    assert_eq!(tiny_a["health"], "ok");
    assert_eq!(process(&back, "tiny-b")["restarts"], 0);
    let (code, _) = request("POST", &direct, Some(&key_of("KEY_TINY_A")), Some(chat)).await;
    assert_eq!(code, 200);

    // A replica hangs (SIGSTOP: it neither answers nor exits). Once the gateway's
    // health check has taken it out, requests succeed on the other; the
    // supervisor replaces it once its health check has failed for
    // supervisor.unhealthy_restart_ms.
    let hung_pid = process(&back, "tiny-b")["pid"].as_u64().unwrap();
    let pid = rustix::process::Pid::from_raw(i32::try_from(hung_pid).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
    let hung = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = request(
            "GET",
            &format!("http://127.0.0.1:{metrics}/backends"),
            None,
            None,
        )
        .await;
        let health: Value = serde_json::from_slice(&body).unwrap();
        let tiny_b = health["backends"]
            .as_array()
            .and_then(|all| all.iter().find(|b| b["name"] == "tiny-b"))
            .cloned()
            .unwrap_or(Value::Null);
        if tiny_b["state"] != "ok" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway never took tiny-b out"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 0..6 {
        let (code, body) = request("POST", &url, Some(&token), Some(ask("Chat"))).await;
        assert_eq!(code, 200, "request {i}: {}", String::from_utf8_lossy(&body));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let back = loop {
        let now = status(root);
        let tiny_b = process(&now, "tiny-b");
        if tiny_b["state"] == "ready" && tiny_b["pid"].as_u64().is_some_and(|p| p != hung_pid) {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "tiny-b was never replaced: {now:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "hung tiny-b was replaced {:.2} s after SIGSTOP",
        hung.elapsed().as_secs_f64()
    );
    let tiny_b = process(&back, "tiny-b");
    assert_eq!(tiny_b["restarts"], 1, "{back:#}");
    assert!(
        tiny_b["last_exit"]
            .as_str()
            .is_some_and(|e| e.starts_with("was unhealthy for 2 s")),
        "{back:#}"
    );
    assert!(!Path::new(&format!("/proc/{hung_pid}")).exists());

    // Stop: the gateway first, then the model servers; nothing is left running.
    let pids: Vec<u64> = back["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["pid"].as_u64())
        .collect();
    assert_eq!(pids.len(), 4);
    let out = ok(si_cli_with_stdin(
        root,
        &[&config[..], &["stop"]].concat(),
        None,
    ));
    assert!(out.contains("stopped"), "{out}");
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} still runs"
        );
    }
    let log = std::fs::read_to_string(root.join("logs/supervisor.log")).unwrap();
    let gateway_stopped = log.find("gateway: stopped").unwrap();
    let model_stopping = log.find("tiny-b: stopping").unwrap();
    assert!(gateway_stopped < model_stopping, "{log}");
    for var in ["KEY_TINY_A", "KEY_TINY_B", "KEY_OTHER"] {
        assert!(!log.contains(&key_of(var)));
    }
    for file in ["gateway-out.log", &format!("llama-{a}-error.log")] {
        let text = std::fs::read_to_string(root.join("logs").join(file)).unwrap();
        assert!(!text.is_empty(), "{file} is empty");
        assert!(!text.contains("Say something"), "{file} holds a prompt");
    }
}

/// `si-cli ARGS` in `dir`, with `stdin` on its standard input.
fn si_cli_with_stdin(
    dir: &std::path::Path,
    args: &[&str],
    stdin: Option<&str>,
) -> std::process::Output {
    si_test_support::cli::run(env!("CARGO_BIN_EXE_si-cli"), dir, args, stdin)
}
