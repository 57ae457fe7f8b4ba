use std::time::Duration;

use si_core::Environment;
use tokio_util::sync::CancellationToken;

use crate::support::{Harness, Options, chat_body, error_parts};

#[tokio::test]
async fn a_key_rotation_fails_no_request() {
    let h = Harness::start(Options::default()).await;
    let token = h.login("admin1").await;
    let sim = h.sim(8085);
    let (old, new) = (
        sim.key.clone(),
        "the-new-key-for-8085-0123456789abcdef".to_owned(),
    );
    let new_env = Environment::from_pairs([("API_KEY_BIOMISTRAL_8085", new.as_str())]);

    let chat = || h.post_json("/v1/chat/completions", Some(&token), chat_body("Clinical"));
    let mut statuses = Vec::new();
    for step in 0..40 {
        match step {
            10 => sim.set_keys(&[&old, &new]), // model server restarted with both keys
            20 => {
                let changed = h.gateway.reload_backend_keys(&new_env).unwrap();
                assert!(
                    changed.contains(&"biomistral-7b-8085".to_owned()),
                    "{changed:?}"
                );
            }
            30 => sim.set_keys(&[&new]), // old key retired
            _ => {}
        }
        statuses.push(chat().await.0);
    }
    assert_eq!(statuses, vec![200; 40]);
    let (auth, _) = sim.chats().await.pop().unwrap();
    assert_eq!(auth.unwrap(), format!("Bearer {new}"));
    h.shutdown().await;
}

#[tokio::test]
async fn switching_before_the_server_knows_the_key_is_what_rotation_avoids() {
    let h = Harness::start(Options::default()).await;
    let token = h.login("admin1").await;
    let new_env = Environment::from_pairs([(
        "API_KEY_BIOMISTRAL_8085",
        "not-yet-known-to-the-server-0123",
    )]);
    h.gateway.reload_backend_keys(&new_env).unwrap();
    let (status, body) = h
        .post_json("/v1/chat/completions", Some(&token), chat_body("Clinical"))
        .await;
    assert_eq!(
        (status, error_parts(&body).1.as_str()),
        (502, "backend_key_rejected")
    );
    h.shutdown().await;
}

#[tokio::test]
async fn the_gateway_follows_changes_to_the_key_file() {
    let h = Harness::start(Options {
        no_key_ports: vec![8081],
        ..Options::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(".api_keys.env");
    let sim = h.sim(8081);
    sim.set_keys(&[&sim.key, "rotated-key-8081-0123456789abcdef"]);
    let write = |key: &str| {
        si_auth::secret::write_private(
            &file.with_extension("tmp"),
            &format!("API_KEY_BIMEDIX2_8081={key}"),
        )
        .unwrap();
        std::fs::rename(file.with_extension("tmp"), &file).unwrap();
    };
    let stop = CancellationToken::new();
    let watcher = si_server::watch_key_file(
        h.gateway.clone(),
        file.clone(),
        Environment::default(),
        Duration::from_millis(20),
        stop.clone(),
    );
    // The gateway started without this key; the file appears while it runs.
    write(&sim.key);
    let token = h.login("admin1").await;
    let backend = || h.gateway.router().pool().all()[1].clone();
    let mut ok = false;
    for _ in 0..100 {
        if backend().has_key()
            && h.post_json("/v1/chat/completions", Some(&token), chat_body("MedicalQA"))
                .await
                .0
                == 200
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "the key from the file was never picked up");
    write("rotated-key-8081-0123456789abcdef");
    let mut last = String::new();
    for _ in 0..100 {
        h.post_json("/v1/chat/completions", Some(&token), chat_body("MedicalQA"))
            .await;
        last = sim
            .chats()
            .await
            .pop()
            .and_then(|c| c.0)
            .unwrap_or_default();
        if last.ends_with("rotated-key-8081-0123456789abcdef") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(last, "Bearer rotated-key-8081-0123456789abcdef");
    stop.cancel();
    watcher.await.unwrap();
    h.shutdown().await;
}
