//! Sends one chat to a llama-server through the router crate alone: no gateway, no
//! login. The built-in agent table picks the backend; its API key comes from the
//! environment or `.api_keys.env`, as for the gateway.
//!
//! ```sh
//! cargo run --example router_only -- Clinical "What is hypertension?"
//! ```

use std::error::Error;
use std::path::Path;

use bytes::Bytes;
use si::si_router::Router;
use si::{Config, Environment};

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let agent = args.next().unwrap_or_else(|| "Chat".into());
    let question = args.next().unwrap_or_else(|| "Say hello.".into());

    let vars = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    let env = Environment::from_pairs(vars).with_file_defaults(Path::new(".api_keys.env"))?;
    let router = Router::new(&Config::load(None, &env)?)?;

    let body = serde_json::json!({
        "agent_type": agent,
        "messages": [{"role": "user", "content": question}],
    });
    let body = Bytes::from(body.to_string());
    let agent = router.agent_for(&body)?;
    // No caller to authorise here: any fallback agent may answer.
    let mut answer = router.answer(agent, body.clone(), |_| true).await?;
    println!(
        "answered by {} ({})",
        answer.backend.name, answer.backend.model
    );
    let answer = answer.read_whole(16 << 20).await?;
    let answer: serde_json::Value = serde_json::from_slice(&answer)?;
    println!(
        "{}",
        answer["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or("")
    );
    Ok(())
}
