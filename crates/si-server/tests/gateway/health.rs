use crate::support::{Harness, Options, closed_port_url};

#[tokio::test]
async fn healthz_reports_each_backend_state() {
    let h = Harness::start(Options {
        url_overrides: vec![(8082, closed_port_url())],
        ..Options::default()
    })
    .await;
    let (status, body) = h.get_json("/healthz", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["ready"], false, "Documentation has no healthy backend");
    let states: Vec<(&str, &str)> = body["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["name"].as_str().unwrap(), b["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states[2], ("medicine-llm-13b-8082", "down"));
    assert!(
        states.iter().filter(|(_, s)| *s == "ok").count() == 5,
        "{states:?}"
    );
    assert!(body["backends"][0]["has_key"].as_bool().unwrap());
    h.shutdown().await;
}

#[tokio::test]
async fn healthz_sees_a_loading_model_after_the_next_poll() {
    let h = Harness::start(Options {
        toml_edits: vec![(
            "health_interval_ms = 3600000",
            "health_interval_ms = 100".into(),
        )],
        ..Options::default()
    })
    .await;
    h.sim(8081).set_loading(true);
    let mut state = String::new();
    for _ in 0..100 {
        let (_, body) = h.get_json("/healthz", None).await;
        state = body["backends"][1]["state"].as_str().unwrap().to_owned();
        if state == "loading" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(state, "loading");
    h.shutdown().await;
}
