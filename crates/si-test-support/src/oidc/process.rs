//! The `node provider.mjs` child: its environment, its start-up line, its logs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::{Options, program_dir};

/// How long the provider may take to print `listening`.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The install command, for the message when it has not been run.
const INSTALL: &str = "npm ci --prefix crates/si-test-support/oidc-provider";

pub(super) struct ProviderProcess {
    child: Option<Child>,
    port: u16,
    issuer: String,
    resource: String,
    keys_file: PathBuf,
    /// Holds the default keys file and each run's stdout and stderr.
    dir: tempfile::TempDir,
    runs: u32,
}

impl ProviderProcess {
    pub(super) async fn start(options: &Options) -> Result<ProviderProcess, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
        let mut process = ProviderProcess {
            child: None,
            port: options.port,
            issuer: String::new(),
            resource: String::new(),
            keys_file: dir.path().join("keys.json"),
            dir,
            runs: 0,
        };
        process.restart(options).await?;
        Ok(process)
    }

    pub(super) fn port(&self) -> u16 {
        self.port
    }

    pub(super) fn issuer(&self) -> &str {
        &self.issuer
    }

    pub(super) fn resource(&self) -> &str {
        &self.resource
    }

    pub(super) fn keys_file(&self) -> &Path {
        &self.keys_file
    }

    pub(super) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs `provider.mjs` with `options` (its port: the one it had, if any) and
    /// waits for its `listening` line.
    pub(super) async fn restart(&mut self, options: &Options) -> Result<(), String> {
        self.stop();
        let program = program_dir();
        if !program
            .join("node_modules/oidc-provider/package.json")
            .is_file()
        {
            return Err(format!(
                "the OpenID provider's packages are not installed in {}: run `{INSTALL}`",
                program.display()
            ));
        }
        if let Some(keys_file) = &options.keys_file {
            self.keys_file.clone_from(keys_file);
        }
        self.runs += 1;
        let stdout = self.dir.path().join(format!("stdout-{}.log", self.runs));
        let stderr = self.dir.path().join(format!("stderr-{}.log", self.runs));
        let create = |path: &Path| {
            std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))
        };
        let child = Command::new("node")
            .arg(program.join("provider.mjs"))
            .current_dir(self.dir.path())
            .env("PORT", self.port.to_string())
            .env("USERS", users_json(options).to_string())
            .env("CLIENTS", clients_json(options).to_string())
            .env("AUDIENCE", &options.audience)
            .env_remove("RESOURCE")
            .env("ALG", options.alg.as_str())
            .env("KEYS_FILE", &self.keys_file)
            .env("MINT", if options.mint { "1" } else { "0" })
            .stdin(Stdio::null())
            .stdout(create(&stdout)?)
            .stderr(create(&stderr)?)
            .spawn()
            .map_err(|e| format!("cannot run node (Node.js 20.18 or later is needed): {e}"))?;
        self.child = Some(child);
        let (issuer, resource) = self.wait_for_listening(&stdout, &stderr).await?;
        self.port = port_of(&issuer)?;
        self.issuer = issuer;
        self.resource = resource;
        Ok(())
    }

    /// Reads `stdout` until the `listening` line, as long as the child lives.
    async fn wait_for_listening(
        &mut self,
        stdout: &Path,
        stderr: &Path,
    ) -> Result<(String, String), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let text = std::fs::read_to_string(stdout).unwrap_or_default();
            let line = |prefix: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(prefix))
                    .map(str::to_owned)
            };
            if let (Some(issuer), Some(resource)) = (line("listening "), line("resource ")) {
                return Ok((issuer, resource));
            }
            let exited = match self.child.as_mut().map(Child::try_wait) {
                Some(Ok(None)) => None,
                Some(Ok(Some(status))) => Some(status.to_string()),
                Some(Err(e)) => Some(e.to_string()),
                None => Some("not running".to_owned()),
            };
            let why = match exited {
                Some(status) => format!("exited ({status})"),
                None if Instant::now() > deadline => {
                    self.stop();
                    format!("did not say `listening` within {START_TIMEOUT:?}")
                }
                None => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let log = std::fs::read_to_string(stderr).unwrap_or_default();
            return Err(format!("the OpenID provider {why}; its stderr:\n{log}"));
        }
    }
}

impl Drop for ProviderProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

fn users_json(options: &Options) -> Value {
    let users: Map<String, Value> = options
        .users
        .iter()
        .map(|u| {
            let claims = json!({
                "preferred_username": u.preferred_username,
                "name": u.name,
                "email": u.email,
                "groups": u.groups,
                "location": u.location,
            });
            (u.account_id.clone(), claims)
        })
        .collect();
    Value::Object(users)
}

fn clients_json(options: &Options) -> Value {
    options
        .clients
        .iter()
        .map(|c| {
            let mut client = json!({
                "client_id": c.client_id,
                "client_secret": c.client_secret,
                "redirect_uris": c.redirect_uris,
            });
            if let Some(method) = &c.token_endpoint_auth_method {
                client["token_endpoint_auth_method"] = json!(method);
            }
            client
        })
        .collect()
}

fn port_of(issuer: &str) -> Result<u16, String> {
    issuer
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .ok_or_else(|| format!("the provider's issuer has no port: {issuer}"))
}
