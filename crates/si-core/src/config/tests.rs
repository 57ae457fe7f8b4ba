//! The configuration's tests, by topic, and the helpers they share.

mod defaults;
mod environment;
mod hosts;
mod oidc;
mod parsing;
mod store;
mod workflows;

use super::*;

fn builtin() -> Config {
    match Config::builtin() {
        Ok(config) => config,
        Err(e) => panic!("built-in config is invalid: {e}"),
    }
}

fn parse_err(text: &str) -> ConfigError {
    match Config::parse(text, "si.toml") {
        Ok(_) => panic!("accepted: {text}"),
        Err(e) => e,
    }
}
