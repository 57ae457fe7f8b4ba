//! Workflows end to end: parallel steps against simulated llama-servers that take
//! 200 ms to answer, templates, failure policy, authorisation, audit, streaming.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Harness, Options};

/// Two workflows for failure handling: a required step that fails, and an optional
/// one. A simulated server fails a prompt that starts with `fail:`.
const TEST_WORKFLOWS: &str = r#"
[[workflows]]
name = "fragile"
inputs = ["note"]

[[workflows.steps]]
id = "first"
agent = "Clinical"
prompt = "{{input.note}}"

[[workflows.steps]]
id = "second"
agent = "Documentation"
prompt = "Summarise: {{steps.first}}"

[[workflows]]
name = "tolerant"
inputs = ["good", "bad"]

[[workflows.steps]]
id = "codes"
agent = "MedicalQA"
required = false
prompt = "{{input.bad}}"

[[workflows.steps]]
id = "assessment"
agent = "Clinical"
prompt = "{{input.good}}"

[[workflows.steps]]
id = "summary"
agent = "Documentation"
prompt = "Assessment: {{steps.assessment}} Codes: {{steps.codes}}"

[roles]"#;

async fn harness() -> Harness {
    Harness::start(Options {
        toml_edits: vec![("\n[roles]", TEST_WORKFLOWS.to_owned())],
        ..Options::default()
    })
    .await
}

fn discharge_inputs() -> Value {
    json!({"inputs": {
        "admission_note": "72-year-old admitted with community-acquired pneumonia.",
        "hospital_course": "Treated with IV antibiotics, switched to oral on day 3."
    }})
}

fn step<'a>(run: &'a Value, id: &str) -> &'a Value {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap()
}

#[tokio::test]
async fn the_discharge_summary_runs_its_three_views_in_parallel() {
    let h = harness().await;
    for sim in &h.sims {
        sim.set_delay(Duration::from_millis(200));
    }
    let token = h.login("admin1").await;
    let (status, run) = h
        .post_json(
            "/v1/workflows/discharge_summary/runs",
            Some(&token),
            discharge_inputs(),
        )
        .await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["run_id"].as_str().unwrap().len(), 16, "{run}");
    // Three 200 ms steps at once, then the summary: about 400 ms, where one after
    // another would take 800 ms.
    let wall = run["wall_ms"].as_f64().unwrap();
    assert!((400.0..750.0).contains(&wall), "{wall}");
    assert!(run["efficiency"].as_f64().unwrap() > 1.5, "{run}");
    for id in [
        "clinical_assessment",
        "medication_reconciliation",
        "billing_codes",
    ] {
        assert_eq!(step(&run, id)["status"], "succeeded", "{run}");
        assert!(
            step(&run, id)["started_ms"].as_f64().unwrap() < 100.0,
            "{run}"
        );
    }
    let summary = step(&run, "discharge_summary");
    assert!(summary["started_ms"].as_f64().unwrap() >= 200.0, "{run}");
    assert_eq!(summary["backend"], "medicine-llm-13b-8082");
    assert_eq!(run["output"], "answer from 8082");
    // The summary's prompt carried the three earlier answers and the inputs.
    let asked = h.sim(8082).chat_texts().await.join("\n");
    for earlier in [
        "answer from 8085",
        "answer from 8081",
        "Treated with IV antibiotics",
    ] {
        assert!(asked.contains(earlier), "{asked}");
    }
    assert!(asked.contains("answer from 8080") || asked.contains("answer from 8083"));

    // Each step is audited like a chat request, under the run's id (the run
    // request's own id), without text; the run request has its own record.
    let records = crate::audit::records(&h).await;
    let (steps, run_records): (Vec<_>, Vec<_>) = records
        .iter()
        .filter(|r| r.request_id == run["run_id"].as_str().unwrap())
        .partition(|r| r.step.is_some());
    assert_eq!((steps.len(), run_records.len()), (4, 1), "{records:?}");
    assert!(steps.iter().all(|r| r.status == 200 && r.step.is_some()));
    assert!(steps.iter().all(|r| r.user.as_deref() == Some("admin1")));
    h.shutdown().await;
}

#[tokio::test]
async fn a_role_without_every_agent_is_refused_before_anything_runs() {
    let h = harness().await;
    let token = h.login("doctor1").await;
    let (status, body) = h
        .post_json(
            "/v1/workflows/discharge_summary/runs",
            Some(&token),
            discharge_inputs(),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`Billing`"),
        "{body}"
    );
    for sim in &h.sims {
        assert!(
            sim.chat_texts().await.is_empty(),
            "{} was asked",
            sim.port_tag
        );
    }
    // The list says which workflows the caller may run.
    let (_, list) = h.get_json("/v1/workflows", Some(&token)).await;
    let allowed = |name: &str| {
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == name)
            .unwrap()["allowed"]
            .clone()
    };
    assert_eq!(allowed("discharge_summary"), false);
    assert_eq!(allowed("patient_education"), true);
    h.shutdown().await;
}

#[tokio::test]
async fn a_failed_required_step_skips_its_dependents() {
    let h = harness().await;
    let token = h.login("admin1").await;
    let (status, run) = h
        .post_json(
            "/v1/workflows/fragile/runs",
            Some(&token),
            json!({"inputs": {"note": "fail: this one"}}),
        )
        .await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "failed");
    assert_eq!(step(&run, "first")["status"], "failed");
    assert_eq!(step(&run, "second")["status"], "skipped");
    assert!(
        step(&run, "second")["error"]
            .as_str()
            .unwrap()
            .contains("`first`")
    );
    assert!(h.sim(8082).chat_texts().await.is_empty());
    h.shutdown().await;
}

#[tokio::test]
async fn an_optional_step_may_fail_without_stopping_the_run() {
    let h = harness().await;
    let token = h.login("admin1").await;
    let (status, run) = h
        .post_json(
            "/v1/workflows/tolerant/runs",
            Some(&token),
            json!({"inputs": {"good": "assess", "bad": "fail: no codes"}}),
        )
        .await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(step(&run, "codes")["status"], "failed");
    assert_eq!(step(&run, "summary")["status"], "succeeded");
    let asked = h.sim(8082).chat_texts().await.join("\n");
    assert!(asked.contains("Codes: (not available)"), "{asked}");
    h.shutdown().await;
}

#[tokio::test]
async fn bad_run_requests_get_clear_errors() {
    let h = harness().await;
    let token = h.login("admin1").await;
    let (status, body) = h
        .post_json(
            "/v1/workflows/nope/runs",
            Some(&token),
            json!({"inputs": {}}),
        )
        .await;
    assert_eq!(status, 404);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("discharge_summary")
    );
    let (status, body) = h
        .post_json(
            "/v1/workflows/discharge_summary/runs",
            Some(&token),
            json!({"inputs": {"admission_note": "x"}}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("missing: hospital_course")
    );
    let (status, _) = h
        .post_json(
            "/v1/workflows/patient_education/runs",
            Some(&token),
            json!({"inputs": {"diagnosis": "x", "patient_context": "y", "extra": "z"}}),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = h
        .get_json("/v1/workflows/patient_education/runs", Some(&token))
        .await;
    assert_eq!(status, 405);
    let (status, _) = h
        .post_json(
            "/v1/workflows/patient_education/runs",
            None,
            json!({"inputs": {}}),
        )
        .await;
    assert_eq!(status, 401);
    h.shutdown().await;
}

#[tokio::test]
async fn a_streamed_run_reports_each_step_then_the_result() {
    let h = harness().await;
    let token = h.login("admin1").await;
    let body = json!({"inputs": {"diagnosis": "type 2 diabetes", "patient_context": "newly diagnosed"},
                      "stream": true});
    let response = h
        .request(
            "POST",
            "/v1/workflows/patient_education/runs",
            Some(&token),
            bytes::Bytes::from(body.to_string()),
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let text = String::from_utf8(
        http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    let events: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(
        events,
        [
            "step_started",
            "step_finished",
            "step_started",
            "step_finished",
            "result"
        ],
        "{text}"
    );
    let last = text.lines().rev().find_map(|l| l.strip_prefix("data: "));
    let result: Value = serde_json::from_str(last.unwrap()).unwrap();
    assert_eq!(result["status"], "succeeded");
    assert_eq!(result["output"], "answer from 8082");
    h.shutdown().await;
}

#[tokio::test]
async fn a_client_that_leaves_a_streamed_run_stops_its_steps() {
    use http_body_util::BodyExt;
    use std::sync::atomic::Ordering;

    use crate::raw_backend::Behaviour;
    // The Clinical step's server never answers until the gateway lets go of it.
    let (h, gated) =
        crate::reliability::with_gated(8085, Behaviour::HangBeforeHeaders, Vec::new()).await;
    let token = h.login("admin1").await;
    let body = json!({"inputs": {"patient_summary": "s", "requested_service": "MRI", "payer": "p"},
                      "stream": true});
    let response = h
        .request(
            "POST",
            "/v1/workflows/prior_authorization/runs",
            Some(&token),
            bytes::Bytes::from(body.to_string()),
        )
        .await;
    let mut events = response.into_body();
    let first = events.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("step_started"));
    assert!(
        crate::reliability::eventually(|| async {
            gated.signals.chats.load(Ordering::SeqCst) == 1
        })
        .await
    );
    drop(events);
    assert!(
        crate::reliability::eventually(|| async { gated.signals.closed.load(Ordering::SeqCst) })
            .await,
        "the step kept its backend"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn a_step_dropped_mid_way_is_still_audited() {
    use std::sync::atomic::Ordering;

    use crate::raw_backend::Behaviour;
    let (h, gated) =
        crate::reliability::with_gated(8085, Behaviour::HangBeforeHeaders, Vec::new()).await;
    let token = h.login("admin1").await;
    let body =
        json!({"inputs": {"patient_summary": "s", "requested_service": "MRI", "payer": "p"}});
    // The client gives up while the Clinical step waits for its backend.
    let gave_up = tokio::time::timeout(
        Duration::from_millis(500),
        h.post_json("/v1/workflows/prior_authorization/runs", Some(&token), body),
    )
    .await;
    assert!(gave_up.is_err());
    assert_eq!(gated.signals.chats.load(Ordering::SeqCst), 1);
    assert!(
        crate::reliability::eventually(|| async {
            crate::audit::records(&h)
                .await
                .iter()
                .any(|r| r.step.as_deref() == Some("clinical_justification") && r.status == 499)
        })
        .await,
        "{:?}",
        crate::audit::records(&h).await
    );
    // The step's record and the run's request share the run's id.
    let records = crate::audit::records(&h).await;
    let step = records
        .iter()
        .find(|r| r.step.as_deref() == Some("clinical_justification"))
        .unwrap();
    assert!(
        records.iter().any(|r| r.step.is_none()
            && r.request_id == step.request_id
            && r.path.ends_with("/runs"))
    );
    h.shutdown().await;
}
