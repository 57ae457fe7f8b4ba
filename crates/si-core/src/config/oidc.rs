//! `[auth.oidc]`: single sign-on with the hospital's OpenID Connect provider.
//! Unset, users are the gateway's own (local login) only.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use url::Url;

use super::ConfigError;
use crate::Role;
use crate::secret::SecretRef;

/// Single sign-on settings.
#[derive(Clone, Debug)]
pub struct OidcConfig {
    /// The provider's issuer URL, exactly as its tokens' `iss` says (so kept as
    /// written); its configuration is read from
    /// `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    /// This gateway's client id at the provider.
    pub client_id: String,
    /// Where the client secret comes from (`env::NAME`, `path::FILE`); `None` for
    /// a public client (PKCE alone).
    pub client_secret_ref: Option<SecretRef>,
    /// The secret once resolved by [`crate::Config::apply_env`].
    pub client_secret: Option<SecretString>,
    /// The `aud` a provider's access token must carry to be accepted as a bearer
    /// token (default: the client id).
    pub audience: String,
    /// The gateway's callback as registered at the provider, e.g.
    /// `https://si.hospital.example/v1/auth/oidc/callback`.
    pub redirect_uri: Url,
    /// The scopes asked for at sign-in.
    pub scopes: Vec<String>,
    /// The claim that names the user.
    pub username_claim: String,
    /// The claim that lists the user's groups.
    pub groups_claim: String,
    /// Group → role. A user in several mapped groups gets the first of
    /// [`Role::ALL`] among them; one in none is refused.
    pub roles: BTreeMap<String, Role>,
    /// The claim that names the user's location, if the provider sends one.
    pub location_claim: Option<String>,
    /// Groups named with this prefix name a location (`si-site-north` → `north`).
    pub location_group_prefix: Option<String>,
    /// The location of a user for whom neither of the above says one.
    pub default_location: Option<String>,
    /// Whether `POST /v1/auth/login` with a local password stays open.
    pub local_login: bool,
    /// A PEM file of certificate authorities trusted for the provider, beside the
    /// system's (a hospital's own PKI).
    pub ca_file: Option<PathBuf>,
    /// The provider's keys are fetched again for a token with an unknown key id
    /// at most this often, so made-up key ids cannot flood the provider.
    pub jwks_refetch_interval: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOidc {
    issuer: String,
    client_id: String,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    audience: Option<String>,
    redirect_uri: String,
    #[serde(default = "default_scopes")]
    scopes: Vec<String>,
    #[serde(default = "default_username_claim")]
    username_claim: String,
    #[serde(default = "default_groups_claim")]
    groups_claim: String,
    #[serde(default)]
    roles: BTreeMap<String, String>,
    #[serde(default)]
    location_claim: Option<String>,
    #[serde(default)]
    location_group_prefix: Option<String>,
    #[serde(default)]
    default_location: Option<String>,
    #[serde(default = "yes")]
    local_login: bool,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default = "default_refetch_secs")]
    jwks_refetch_interval_secs: u64,
}

fn default_scopes() -> Vec<String> {
    ["openid", "profile", "email"].map(String::from).to_vec()
}
fn default_username_claim() -> String {
    "preferred_username".into()
}
fn default_groups_claim() -> String {
    "groups".into()
}
fn yes() -> bool {
    true
}
fn default_refetch_secs() -> u64 {
    10
}

/// Whether `url` is `https`, or `http` to a loopback address (a provider on the
/// same host, or tests): tokens and codes cross it.
pub fn is_secure_url(url: &Url) -> bool {
    let loopback = match url.host() {
        Some(url::Host::Domain(name)) => name == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    url.scheme() == "https" || (url.scheme() == "http" && loopback)
}

/// An absolute URL that [`is_secure_url`], without credentials or a fragment.
fn secure_url(source: &str, key: &str, text: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(text).map_err(|e| {
        ConfigError::new(
            source,
            key,
            format!("expected an absolute URL ({e}), got `{text}`"),
        )
    })?;
    if !is_secure_url(&url) || url.cannot_be_a_base() {
        return Err(ConfigError::new(
            source,
            key,
            "expected an https:// URL (http:// only to localhost): tokens and codes cross it",
        ));
    }
    if url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::new(
            source,
            key,
            "expected a URL without credentials or a #fragment",
        ));
    }
    Ok(url)
}

fn claim_name(source: &str, key: &str, name: &str) -> Result<(), ConfigError> {
    let ok = (1..=128).contains(&name.len()) && !name.chars().any(char::is_control);
    ok.then_some(())
        .ok_or_else(|| ConfigError::new(source, key, "expected a claim name of 1-128 characters"))
}

impl RawOidc {
    pub(super) fn validate(self, source: &str) -> Result<OidcConfig, ConfigError> {
        let key = |name: &str| format!("auth.oidc.{name}");
        let issuer = self.issuer.trim().to_owned();
        secure_url(source, &key("issuer"), &issuer)?;
        let redirect_uri = secure_url(source, &key("redirect_uri"), &self.redirect_uri)?;
        if self.client_id.trim().is_empty() {
            return Err(ConfigError::new(
                source,
                key("client_id"),
                "expected the client id the provider gave this gateway",
            ));
        }
        let client_secret_ref = self
            .client_secret
            .map(|text| {
                SecretRef::parse(&text)
                    .map_err(|e| ConfigError::new(source, key("client_secret"), e.to_string()))
            })
            .transpose()?;
        if !self.scopes.iter().any(|s| s == "openid") {
            return Err(ConfigError::new(
                source,
                key("scopes"),
                "expected a list that includes \"openid\"",
            ));
        }
        if self.scopes.iter().any(|s| s.is_empty() || s.contains(' ')) {
            return Err(ConfigError::new(
                source,
                key("scopes"),
                "expected scope names without spaces",
            ));
        }
        claim_name(source, &key("username_claim"), &self.username_claim)?;
        claim_name(source, &key("groups_claim"), &self.groups_claim)?;
        if let Some(name) = &self.location_claim {
            claim_name(source, &key("location_claim"), name)?;
        }
        if self.roles.is_empty() {
            return Err(ConfigError::new(
                source,
                "auth.oidc.roles",
                "expected at least one group = role, e.g. \"si-clinicians\" = \"clinician\": \
                 without it no one can sign in",
            ));
        }
        let mut roles = BTreeMap::new();
        for (group, role) in self.roles {
            let role: Role = role.parse().map_err(|e: crate::role::UnknownRole| {
                ConfigError::new(source, format!("auth.oidc.roles.{group}"), e.to_string())
            })?;
            roles.insert(group, role);
        }
        if self.location_group_prefix.as_deref() == Some("") {
            return Err(ConfigError::new(
                source,
                key("location_group_prefix"),
                "expected a non-empty prefix, e.g. \"si-site-\"",
            ));
        }
        if !(1..=3600).contains(&self.jwks_refetch_interval_secs) {
            return Err(ConfigError::new(
                source,
                key("jwks_refetch_interval_secs"),
                "expected 1 to 3600 seconds",
            ));
        }
        Ok(OidcConfig {
            issuer,
            audience: self.audience.unwrap_or_else(|| self.client_id.clone()),
            client_id: self.client_id,
            client_secret_ref,
            client_secret: None,
            redirect_uri,
            scopes: self.scopes,
            username_claim: self.username_claim,
            groups_claim: self.groups_claim,
            roles,
            location_claim: self.location_claim,
            location_group_prefix: self.location_group_prefix,
            default_location: self.default_location,
            local_login: self.local_login,
            ca_file: self.ca_file.filter(|path| !path.as_os_str().is_empty()),
            jwks_refetch_interval: Duration::from_secs(self.jwks_refetch_interval_secs),
        })
    }
}
