use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::json;

use si_gpu::{GpuError, GpuInventory, GpuReading};

use crate::support::{Harness, Options, chat_body};

fn value(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .next()
}

#[tokio::test]
async fn metrics_use_the_original_names_and_bounded_labels() {
    let edit = (
        "metrics_on_main = false",
        "metrics_on_main = true".to_owned(),
    );
    let h = Harness::start(Options {
        toml_edits: vec![edit],
        ..Options::default()
    })
    .await;
    let token = h.login("admin1").await;
    h.post_json("/v1/chat/completions", Some(&token), chat_body("Clinical"))
        .await;
    let stream = json!({"agent_type": "Chat", "stream": true, "stream_options": {"include_usage": true},
                        "messages": [{"role": "user", "content": "hi"}]});
    let response = h.chat(&token, &stream).await;
    response.into_body().collect().await.unwrap();
    h.get_json("/v1/no-such-path/for-user-12345", None).await;

    let response = h.request("GET", "/metrics", None, Bytes::new()).await;
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    let clinical = [
        "endpoint=\"/v1/chat/completions\"",
        "agent_type=\"Clinical\"",
    ];
    assert!(
        value(&text, "http_requests_total", &clinical).unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert!(
        value(
            &text,
            "http_request_duration_seconds_bucket",
            &["le=\"30\"", "agent_type=\"Clinical\""]
        )
        .is_some()
    );
    assert!(
        value(
            &text,
            "http_request_duration_seconds_bucket",
            &["le=\"0.005\""]
        )
        .is_some(),
        "sub-second buckets"
    );
    assert!(value(&text, "tokens_generated_total", &[]).unwrap_or(0.0) >= 6.0);
    assert!(
        value(
            &text,
            "si_tokens_total",
            &["agent_type=\"Chat\"", "kind=\"prompt\""]
        )
        .unwrap_or(0.0)
            >= 14.0
    );
    assert!(
        value(
            &text,
            "si_time_to_first_token_seconds_count",
            &["agent_type=\"Chat\""]
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    assert!(value(&text, "http_requests_inprogress", &[]).is_some());
    assert_eq!(
        value(&text, "si_backend_up", &["backend=\"biomistral-7b-8085\""]),
        Some(1.0)
    );
    assert!(
        value(
            &text,
            "si_backend_slots",
            &["backend=\"tiny-llama-1b-8080\""]
        )
        .is_some()
    );
    let came_up = ["backend=\"biomistral-7b-8085\"", "to=\"ok\""];
    assert!(value(&text, "si_backend_state_changes_total", &came_up).unwrap_or(0.0) >= 1.0);
    assert!(value(&text, "si_speed_tier_requests_total", &["tier=\"slow\""]).unwrap_or(0.0) >= 1.0);
    // Scrapes are neither audited nor counted as requests.
    let again = crate::metrics_text(&h).await;
    assert!(value(&again, "http_requests_total", &["endpoint=\"/metrics\""]).is_none());
    let audited = crate::audit::export(&h).await;
    assert!(!audited.contains("/metrics"), "{audited}");
    // Unknown paths are one label value, not one per path; no user or token anywhere.
    assert!(text.contains("endpoint=\"other\"") && !text.contains("user-12345"));
    assert!(!text.contains("admin1") && !text.contains(&token));
    h.shutdown().await;
}

#[tokio::test]
async fn metrics_are_not_on_the_public_port_by_default_but_on_their_own_listener() {
    let h = Harness::start(Options::default()).await;
    let (status, _) = h.get_json("/metrics", None).await;
    assert_eq!(status, 404);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(si_server::serve_metrics(
        listener,
        h.gateway.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    let request = http::Request::get(format!("http://{address}/metrics"))
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let response = crate::support::client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&text).contains("si_backend_up"));
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    h.shutdown().await;
}

/// GPUs with live figures, as NVML reports them on a machine with a driver.
#[derive(Debug)]
struct LiveGpus {
    first_index: u32,
}

impl GpuInventory for LiveGpus {
    fn source(&self) -> &'static str {
        "test"
    }

    fn read(&self) -> Result<Vec<GpuReading>, GpuError> {
        Ok((0..2)
            .map(|i| GpuReading {
                index: self.first_index + i,
                name: format!("Test GPU {i}"),
                memory_total_bytes: 24 << 30,
                memory_used_bytes: Some((3 + u64::from(i)) << 30),
                utilization: Some(0.25 * f64::from(i + 1)),
                temperature_celsius: Some(60 + i),
                processes: Vec::new(),
            })
            .collect())
    }
}

/// Readings that always fail, as when the driver goes away under a running gateway.
#[derive(Debug)]
struct BrokenGpus;

impl GpuInventory for BrokenGpus {
    fn source(&self) -> &'static str {
        "test"
    }

    fn read(&self) -> Result<Vec<GpuReading>, GpuError> {
        Err(GpuError::Unavailable(
            "the GPU has fallen off the bus".into(),
        ))
    }
}

#[tokio::test]
async fn gpu_readings_become_gauges_per_gpu() {
    let toml_edits = vec![(
        "metrics_on_main = false",
        "metrics_on_main = true".to_owned(),
    )];
    // Indices no other test uses: the metrics recorder is shared by the process.
    let h = Harness::start(Options {
        toml_edits,
        gpus: Some(Arc::new(LiveGpus { first_index: 40 })),
        ..Options::default()
    })
    .await;
    let mut text = String::new();
    for _ in 0..100 {
        text = crate::metrics_text(&h).await;
        if text.contains("gpu=\"41\"") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let gpu = |i: u32| format!("gpu=\"{i}\"");
    assert_eq!(
        value(&text, "si_gpu_memory_used_bytes", &[&gpu(41)]),
        Some((4u64 << 30) as f64),
        "{text}"
    );
    assert_eq!(
        value(&text, "si_gpu_memory_total_bytes", &[&gpu(40)]),
        Some((24u64 << 30) as f64)
    );
    assert_eq!(
        value(&text, "si_gpu_utilization_ratio", &[&gpu(41)]),
        Some(0.5)
    );
    assert_eq!(
        value(&text, "si_gpu_temperature_celsius", &[&gpu(40)]),
        Some(60.0)
    );
    assert_eq!(
        value(
            &text,
            "si_gpu_info",
            &[&gpu(40), "name=\"Test GPU 0\"", "source=\"test\""]
        ),
        Some(1.0)
    );
    h.shutdown().await;
}

#[tokio::test]
async fn failing_gpu_readings_leave_the_gateway_serving() {
    let toml_edits = vec![(
        "sample_interval_ms = 5000",
        "sample_interval_ms = 100".to_owned(),
    )];
    let h = Harness::start(Options {
        toml_edits,
        gpus: Some(Arc::new(BrokenGpus)),
        ..Options::default()
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let token = h.login("admin1").await;
    let (status, _) = h
        .post_json("/v1/chat/completions", Some(&token), chat_body("Chat"))
        .await;
    assert_eq!(status, 200);
    h.shutdown().await;
}

/// Every PromQL expression in the dashboard and the alert rules.
fn deploy_expressions() -> Vec<String> {
    // The monitoring files live at the workspace root.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut expressions: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect();
    let rules = std::fs::read_to_string(root.join("alerts.yml")).unwrap();
    let mut lines = rules.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(rest) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let indent = line.len() - line.trim_start().len();
        if rest.trim() == "|" {
            let mut block = String::new();
            while let Some(next) = lines
                .peek()
                .filter(|l| l.len() - l.trim_start().len() > indent)
            {
                block.push_str(next.trim());
                block.push(' ');
                lines.next();
            }
            expressions.push(block);
        } else {
            expressions.push(rest.trim().to_owned());
        }
    }
    expressions
}

/// The metric names an expression selects: identifiers outside label matchers and
/// grouping clauses that are not functions, keywords or variables.
fn metric_names(expression: &str) -> Vec<String> {
    const KEYWORDS: [&str; 9] = [
        "by", "without", "on", "ignoring", "and", "or", "unless", "bool", "offset",
    ];
    // Aggregations may put `by (...)` between their name and their parenthesis.
    const AGGREGATIONS: [&str; 8] = [
        "sum", "avg", "min", "max", "count", "topk", "bottomk", "quantile",
    ];
    let mut names = Vec::new();
    let chars: Vec<char> = expression.chars().collect();
    let (mut i, mut braces, mut grouping) = (0, 0, false);
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += 1;
            }
        } else if c == '{' {
            braces += 1;
        } else if c == '}' {
            braces -= 1;
        } else if c == ')' && grouping {
            grouping = false;
        } else if c == '[' {
            // A range such as [5m]: no names inside.
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
        } else if c == '$' {
            while i + 1 < chars.len() && (chars[i + 1].is_alphanumeric() || chars[i + 1] == '_') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i + 1 < chars.len()
                && (chars[i + 1].is_ascii_alphanumeric()
                    || chars[i + 1] == '_'
                    || chars[i + 1] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..=i].iter().collect();
            let next = chars[i + 1..].iter().find(|c| !c.is_whitespace());
            if KEYWORDS.contains(&word.as_str()) {
                grouping = matches!(word.as_str(), "by" | "without" | "on" | "ignoring");
            } else if braces == 0
                && !grouping
                && next != Some(&'(')
                && !AGGREGATIONS.contains(&word.as_str())
            {
                names.push(word);
            }
        }
        i += 1;
    }
    names
}

#[tokio::test]
async fn every_metric_the_dashboard_and_alerts_use_is_exported() {
    let toml_edits = vec![
        (
            "metrics_on_main = false",
            "metrics_on_main = true".to_owned(),
        ),
        (
            "per_ip_per_minute = 100",
            "per_ip_per_minute = 8".to_owned(),
        ),
    ];
    let h = Harness::start(Options {
        toml_edits,
        gpus: Some(Arc::new(LiveGpus { first_index: 0 })),
        ..Options::default()
    })
    .await;
    let token = h.login("admin1").await;
    for agent in ["Chat", "Clinical"] {
        h.post_json("/v1/chat/completions", Some(&token), chat_body(agent))
            .await;
    }
    let education = json!({"inputs": {"diagnosis": "asthma", "patient_context": "adult"}});
    let (status, _) = h
        .post_json(
            "/v1/workflows/patient_education/runs",
            Some(&token),
            education,
        )
        .await;
    assert_eq!(status, 200);
    h.post_json("/v1/chat/completions", Some(&token), chat_body("Nope"))
        .await; // an error
    for _ in 0..6 {
        h.get_json("/v1/models", Some(&token)).await; // and then a rate limit
    }
    let mut expressions = deploy_expressions();
    assert!(expressions.len() >= 16, "{expressions:?}");
    let mut names: Vec<String> = expressions
        .drain(..)
        .flat_map(|e| metric_names(&e))
        .collect();
    names.sort();
    names.dedup();
    assert!(
        names.contains(&"http_request_duration_seconds_bucket".to_owned()),
        "{names:?}"
    );

    let text = crate::metrics_text(&h).await;
    let exported = |name: &str| {
        text.lines()
            .any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
    };
    let missing: Vec<&String> = names.iter().filter(|n| !exported(n)).collect();
    assert!(missing.is_empty(), "not exported: {missing:?}");
    h.shutdown().await;
}
