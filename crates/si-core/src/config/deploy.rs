//! `[deploy]`: what `si-cli deploy` needs to know of the whole installation that
//! no other table says, so that the files it renders on every host agree: the
//! gateways the load balancer spreads requests over.

use std::fmt;
use std::net::SocketAddr;

use serde::Deserialize;

use super::ConfigError;

/// Settings of the rendered deployment files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeployConfig {
    /// The gateways nginx sends requests to, in order. Empty: the one gateway of
    /// this configuration, at `gateway.listen`.
    pub gateways: Vec<GatewayAddress>,
}

/// Where a gateway listens, as nginx names an upstream server: `HOST:PORT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayAddress {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl fmt::Display for GatewayAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawDeploy {
    gateways: Vec<String>,
}

impl RawDeploy {
    pub(super) fn validate(self, source: &str) -> Result<DeployConfig, ConfigError> {
        let mut gateways: Vec<GatewayAddress> = Vec::new();
        for (i, text) in self.gateways.iter().enumerate() {
            let key = format!("deploy.gateways[{i}]");
            let address = parse_gateway(text).ok_or_else(|| {
                ConfigError::new(
                    source,
                    &key,
                    format!(
                        "expected HOST:PORT, e.g. \"10.0.0.5:8000\" or \
                         \"gw-a.hospital.local:8000\", not \"{text}\""
                    ),
                )
            })?;
            if gateways.contains(&address) {
                let problem = format!("{address} is listed twice");
                return Err(ConfigError::new(source, key, problem));
            }
            gateways.push(address);
        }
        Ok(DeployConfig { gateways })
    }
}

/// `IP:PORT`, `[IPv6]:PORT` or `NAME:PORT`, with a port other than 0.
fn parse_gateway(text: &str) -> Option<GatewayAddress> {
    if let Ok(address) = text.parse::<SocketAddr>() {
        return (address.port() != 0).then(|| GatewayAddress {
            host: address.ip().to_string(),
            port: address.port(),
        });
    }
    let (host, port) = text.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let usable = (1..=253).contains(&host.len())
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    usable.then(|| GatewayAddress {
        host: host.to_owned(),
        port,
    })
}
