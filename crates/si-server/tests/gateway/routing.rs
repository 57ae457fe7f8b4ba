use bytes::Bytes;
use serde_json::json;

use crate::support::{Harness, Options, chat_body, error_parts, read_json};

#[tokio::test]
async fn every_agent_reaches_its_model_with_that_servers_key() {
    let h = Harness::start(Options::default()).await;
    let token = h.login("admin1").await;
    let expected = [
        ("Chat", "tiny-llama-1b", &[8080, 8083][..]),
        ("MedicalQA", "bimedix2-8b", &[8081][..]),
        ("Documentation", "medicine-llm-13b", &[8082][..]),
        ("Billing", "tiny-llama-1b", &[8080, 8083][..]),
        ("Claims", "openinsurance-8b", &[8084][..]),
        ("Clinical", "biomistral-7b", &[8085][..]),
    ];
    for (agent, model, ports) in expected {
        let body = Bytes::from(chat_body(agent).to_string());
        let response = h
            .request("POST", "/v1/chat/completions", Some(&token), body.clone())
            .await;
        let backend = response.headers()["x-si-backend"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(response.headers()["x-si-agent"], agent);
        assert_eq!(response.headers()["x-si-model"], model);
        let (status, answer) = read_json(response).await;
        assert_eq!(status, 200, "{agent}: {answer}");
        assert_eq!(answer["model"], model, "{agent}");
        let port: u16 = answer["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .trim_start_matches("answer from ")
            .parse()
            .unwrap();
        assert!(ports.contains(&port), "{agent} answered by {port}");
        assert!(backend.ends_with(&port.to_string()), "{backend} vs {port}");

        let sim = h.sim(port);
        let (auth, forwarded) = sim.chats().await.pop().unwrap();
        assert_eq!(
            auth.as_deref(),
            Some(format!("Bearer {}", sim.key).as_str()),
            "{agent}"
        );
        assert_eq!(forwarded, body, "{agent}: body must be forwarded untouched");
    }
    h.shutdown().await;
}

#[tokio::test]
async fn the_tiny_llama_replicas_share_chat_traffic() {
    let h = Harness::start(Options::default()).await;
    let token = h.login("admin1").await;
    for _ in 0..6 {
        let (status, _) = h
            .post_json("/v1/chat/completions", Some(&token), chat_body("Chat"))
            .await;
        assert_eq!(status, 200);
    }
    assert_eq!(h.sim(8080).chats().await.len(), 3);
    assert_eq!(h.sim(8083).chats().await.len(), 3);
    h.shutdown().await;
}

#[tokio::test]
async fn openai_sdks_route_by_model_name() {
    let h = Harness::start(Options::default()).await;
    let token = h.login("admin1").await;
    let messages = json!([{"role": "user", "content": "hi"}]);
    for (model, port) in [
        ("Clinical", 8085),
        ("clinical", 8085),
        ("biomistral-7b", 8085),
        ("MedicalQA", 8081),
    ] {
        let (status, body) = h
            .post_json(
                "/v1/chat/completions",
                Some(&token),
                json!({"model": model, "messages": messages}),
            )
            .await;
        assert_eq!(status, 200, "{model}: {body}");
        assert_eq!(
            body["choices"][0]["message"]["content"],
            format!("answer from {port}"),
            "{model}"
        );
    }
    // agent_type wins over model, as in the original.
    let (_, body) = h
        .post_json(
            "/v1/chat/completions",
            Some(&token),
            json!({"agent_type": "Claims", "model": "gpt-4o", "messages": messages}),
        )
        .await;
    assert_eq!(body["choices"][0]["message"]["content"], "answer from 8084");
    h.shutdown().await;
}

#[tokio::test]
async fn insecure_dev_mode_serves_without_a_token() {
    let h = Harness::start(Options {
        env: vec![("ALLOW_INSECURE_DEV", "true".into())],
        ..Options::default()
    })
    .await;
    let (status, body) = h
        .post_json("/v1/chat/completions", None, chat_body("Chat"))
        .await;
    assert_eq!(status, 200, "{body}");
    h.shutdown().await;
}

#[tokio::test]
async fn models_lists_agents_and_models() {
    let h = Harness::start(Options::default()).await;
    let (status, _) = h.get_json("/v1/models", None).await;
    assert_eq!(status, 401);
    let token = h.login("admin1").await;
    let (status, body) = h.get_json("/v1/models", Some(&token)).await;
    assert_eq!(status, 200);
    assert_eq!(body["object"], "list");
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "Chat",
            "MedicalQA",
            "Documentation",
            "Billing",
            "Claims",
            "Clinical",
            "tiny-llama-1b",
            "bimedix2-8b",
            "medicine-llm-13b",
            "openinsurance-8b",
            "biomistral-7b"
        ]
    );
    let clinical = &body["data"][5];
    assert_eq!(clinical["model"], "biomistral-7b");
    assert_eq!(clinical["tier"], "slow");
    let tiny = &body["data"][6];
    assert_eq!(
        tiny["backends"],
        json!(["tiny-llama-1b-8080", "tiny-llama-1b-8083"])
    );
    assert_eq!(tiny["agents"], json!(["Chat", "Billing"]));
    h.shutdown().await;
}

#[tokio::test]
async fn roles_reach_only_their_agents() {
    let h = Harness::start(Options::default()).await;
    let biller = h.login("biller").await;
    let doctor = h.login("doctor1").await;
    for (token, agent, allowed) in [
        (&biller, "Claims", true),
        (&biller, "Chat", true),
        (&biller, "Clinical", false),
        (&biller, "MedicalQA", false),
        (&doctor, "Clinical", true),
        (&doctor, "Billing", false),
    ] {
        let (status, body) = h
            .post_json("/v1/chat/completions", Some(token), chat_body(agent))
            .await;
        if allowed {
            assert_eq!(status, 200, "{agent}: {body}");
        } else {
            assert_eq!(status, 403, "{agent}: {body}");
            let (kind, code, message) = error_parts(&body);
            assert_eq!(
                (kind.as_str(), code.as_str()),
                ("permission_error", "agent_forbidden")
            );
            assert!(message.contains(agent), "{message}");
        }
    }
    // Naming the model instead of the agent does not get around it.
    let by_model =
        json!({"model": "biomistral-7b", "messages": [{"role": "user", "content": "hi"}]});
    let (status, body) = h
        .post_json("/v1/chat/completions", Some(&biller), by_model)
        .await;
    assert_eq!(status, 403);
    assert!(
        error_parts(&body)
            .2
            .contains("role `billing` may not use agent `Clinical`"),
        "{body}"
    );
    // Only the doctor's Clinical request reached a clinical model.
    assert_eq!(h.sim(8085).chats().await.len(), 1);
    assert!(h.sim(8081).chats().await.is_empty());

    let (_, models) = h.get_json("/v1/models", Some(&biller)).await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "Chat",
            "Billing",
            "Claims",
            "tiny-llama-1b",
            "openinsurance-8b"
        ]
    );
    h.shutdown().await;
}

#[tokio::test]
async fn the_role_table_comes_from_configuration() {
    let edit = (
        "billing = [\"Chat\", \"Billing\", \"Claims\"]",
        "billing = [\"Clinical\"]".to_owned(),
    );
    let h = Harness::start(Options {
        toml_edits: vec![edit],
        ..Options::default()
    })
    .await;
    let biller = h.login("biller").await;
    let (status, _) = h
        .post_json("/v1/chat/completions", Some(&biller), chat_body("Clinical"))
        .await;
    assert_eq!(status, 200);
    let (status, body) = h
        .post_json("/v1/chat/completions", Some(&biller), chat_body("Claims"))
        .await;
    assert_eq!(status, 403);
    assert!(
        error_parts(&body).2.ends_with("it may use: Clinical"),
        "{body}"
    );
    h.shutdown().await;
}
