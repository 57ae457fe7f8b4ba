//! Which GPU host runs each backend, for a configuration shared by several: a
//! backend's `host`, or else the host its URL names. The gateway does not care (it
//! reaches every backend by URL); `si-cli up` and `si-cli deploy --host` do, since
//! each GPU host starts only its own model servers.

use std::net::IpAddr;

use super::{BackendConfig, Config};

impl BackendConfig {
    /// The GPU host that runs it: its `host`, or else the host in its URL.
    pub fn host_name(&self) -> &str {
        self.host.as_deref().unwrap_or(&self.url.host)
    }

    /// Whether the GPU host `host` runs it: its `host` is `host`; or, with no
    /// `host` set, its URL names `host`, a loopback address or `localhost` (a server
    /// only its own machine reaches, so wherever the configuration is run), or an
    /// address that `names_this_machine` says is this machine's. Names ignore ASCII
    /// case, as DNS does.
    pub fn runs_on(&self, host: &str, names_this_machine: impl Fn(&str) -> bool) -> bool {
        match &self.host {
            Some(own) => own.eq_ignore_ascii_case(host),
            None => {
                let url_host = self.url.host.as_str();
                url_host.eq_ignore_ascii_case(host)
                    || is_loopback(url_host)
                    || names_this_machine(url_host)
            }
        }
    }
}

/// Whether `text` can name a GPU host (a backend's `host`, `si-cli up --host`): 1
/// to 253 letters, digits, `-`, `.`, `_` or `:` (an IPv6 address), so that it
/// can go into a command line or a unit file as it is.
pub fn is_host_name(text: &str) -> bool {
    (1..=253).contains(&text.len())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':'))
}

/// `localhost`, a name under `.localhost`, or a loopback address: this machine,
/// whichever it is, without asking the network.
fn is_loopback(host: &str) -> bool {
    let lower = host.to_ascii_lowercase();
    lower == "localhost"
        || lower.ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The backends one GPU host runs, and those it leaves to the others.
#[derive(Clone, Debug)]
pub struct HostPlacement {
    /// The backends the host runs, in configuration order.
    pub here: Vec<BackendConfig>,
    /// The others, in configuration order; [`BackendConfig::host_name`] says where.
    pub elsewhere: Vec<BackendConfig>,
}

/// No backend of the configuration is placed on the host asked for.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "no backend is placed on host `{host}`; this configuration places them on {}: give \
     `--host` one of those, or set `host = \"{host}\"` on the backends this host runs",
    .hosts.join(", ")
)]
pub struct NoBackendOnHost {
    /// The host asked for.
    pub host: String,
    /// The hosts the configuration does place backends on, each once.
    pub hosts: Vec<String>,
}

impl Config {
    /// Splits the backends into those the GPU host `host` runs and the others (see
    /// [`BackendConfig::runs_on`]); fails if it runs none, which is most likely a
    /// misspelt host name.
    pub fn place_on_host(
        &self,
        host: &str,
        names_this_machine: impl Fn(&str) -> bool,
    ) -> Result<HostPlacement, NoBackendOnHost> {
        let (here, elsewhere): (Vec<_>, Vec<_>) = self
            .backends
            .iter()
            .cloned()
            .partition(|backend| backend.runs_on(host, &names_this_machine));
        if here.is_empty() {
            let mut hosts: Vec<String> = Vec::new();
            for backend in &self.backends {
                let name = backend.host_name();
                if !hosts.iter().any(|h| h.eq_ignore_ascii_case(name)) {
                    hosts.push(name.to_owned());
                }
            }
            return Err(NoBackendOnHost {
                host: host.to_owned(),
                hosts,
            });
        }
        Ok(HostPlacement { here, elsewhere })
    }
}
