//! Runs the gateway from Rust code with its own agent table: no configuration file.
//!
//! One agent, `Triage`, served by a llama-server on 127.0.0.1:8090 whose key is read
//! from `TRIAGE_API_KEY`; the gateway listens on 127.0.0.1:8001 until Ctrl-C.
//!
//! ```sh
//! TRIAGE_API_KEY=... cargo run --example embedded_gateway
//! ```

use std::error::Error;

use si::si_core::config::{AgentConfig, BackendConfig, BackendUrl, SpeedTier};
use si::si_core::secret::SecretRef;
use si::{Config, Environment, Gateway};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    // Start from the built-in settings (timeouts, token lifetime) and replace the
    // deployment with our own.
    let mut config = Config::builtin()?;
    // Capacity and timeouts as the built-in backends have them.
    let limits = config.backends[0].limits.clone();
    config.gateway.listen = "127.0.0.1:8001".parse()?;
    config.gateway.data_dir = "./data-embedded".into();
    config.backends = vec![BackendConfig {
        name: "triage-8090".into(),
        url: BackendUrl {
            host: "127.0.0.1".into(),
            port: 8090,
        },
        host: None,
        model: "triage-3b".into(),
        api_key_ref: SecretRef::Env("TRIAGE_API_KEY".into()),
        api_key: None,
        gpu: None,
        vision: false,
        limits,
        launch: Default::default(),
    }];
    config.agents = vec![AgentConfig {
        name: "Triage".into(),
        model: "triage-3b".into(),
        tier: SpeedTier::Fast,
        description: "Emergency department triage notes".into(),
        fallback: None,
    }];
    // The embedding program decides what the gateway may read: here, one variable.
    let key = std::env::var("TRIAGE_API_KEY").unwrap_or_default();
    config.apply_env(&Environment::from_pairs([("TRIAGE_API_KEY", key)]))?;

    let listen = config.gateway.listen;
    let gateway = Gateway::open(config).await?;
    let listener = TcpListener::bind(listen).await?;
    println!("gateway on http://{listen}; agents: Triage; Ctrl-C stops it");
    si::run(listener, gateway, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
