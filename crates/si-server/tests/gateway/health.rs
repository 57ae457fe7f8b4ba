use serde_json::json;

use crate::support::{Harness, Options, closed_port_url};

#[tokio::test]
async fn healthz_says_live_and_ready_only_and_admins_see_each_backend() {
    let h = Harness::start(Options {
        url_overrides: vec![(8082, closed_port_url())],
        ..Options::default()
    })
    .await;
    let (status, body) = h.get_json("/healthz", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"status": "ok", "ready": false}),
        "Documentation has no healthy backend; nothing else is shown to anyone"
    );

    let clinician = h.login("doctor1").await;
    let (status, body) = h.get_json("/v1/admin/backends", Some(&clinician)).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "admin_only");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("clinician")
    );
    assert_eq!(h.get_json("/v1/admin/backends", None).await.0, 401);

    let admin = h.login("admin1").await;
    let (status, body) = h.get_json("/v1/admin/backends", Some(&admin)).await;
    assert_eq!(status, 200);
    assert_eq!(body["ready"], false);
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
    assert!(
        body["backends"][0]["url"]
            .as_str()
            .unwrap()
            .starts_with("http://")
    );
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
        state = crate::reliability::backend_state(&h, "bimedix2-8b-8081").await["state"]
            .as_str()
            .unwrap()
            .to_owned();
        if state == "loading" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(state, "loading");
    h.shutdown().await;
}
