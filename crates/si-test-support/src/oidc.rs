//! A real OpenID provider for the single sign-on tests: the `oidc-provider`
//! package under Node.js (`oidc-provider/provider.mjs` beside this crate's
//! manifest, installed by `npm ci --prefix crates/si-test-support/oidc-provider`),
//! and the two parties that sign in at it: an application that wants a user's
//! access token ([`Provider::user_access_token`]) and a browser that signs in at
//! the gateway ([`browser_sign_in`]).
//!
//! Everything returns `Result<_, String>` rather than panicking, so that a test
//! can assert that a step is refused.

mod browser;
mod process;

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub use browser::{Browser, GatewayResponse, browser_sign_in};

/// The directory of `provider.mjs` and its `package.json`.
pub fn program_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("oidc-provider")
}

/// The algorithm the provider signs ID and access tokens with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alg {
    Rs256,
    Es256,
    /// Ed25519.
    EdDsa,
}

impl Alg {
    pub const ALL: [Alg; 3] = [Alg::Rs256, Alg::Es256, Alg::EdDsa];

    /// The JWS `alg` name, as the provider's `ALG` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
            Alg::EdDsa => "EdDSA",
        }
    }
}

/// An account at the provider and the claims it releases.
#[derive(Clone, Debug)]
pub struct User {
    pub account_id: String,
    pub preferred_username: String,
    pub name: String,
    pub email: String,
    pub groups: Vec<String>,
    pub location: String,
}

impl User {
    /// `account_id` as its own username, with a name and an address made from it.
    pub fn new(account_id: &str, groups: &[&str], location: &str) -> User {
        User {
            account_id: account_id.to_owned(),
            preferred_username: account_id.to_owned(),
            name: format!("Test user {account_id}"),
            email: format!("{account_id}@hospital.example"),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            location: location.to_owned(),
        }
    }
}

/// An application registered at the provider (code flow, PKCE S256).
#[derive(Clone, Debug)]
pub struct Client {
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uris: Vec<String>,
    /// `client_secret_basic` (the default) or `client_secret_post`.
    pub token_endpoint_auth_method: Option<String>,
}

impl Client {
    pub fn new(client_id: &str, client_secret: &str, redirect_uri: &str) -> Client {
        Client {
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            redirect_uris: vec![redirect_uri.to_owned()],
            token_endpoint_auth_method: None,
        }
    }
}

/// Options for [`Provider::start`].
#[derive(Clone, Debug)]
pub struct Options {
    pub users: Vec<User>,
    pub clients: Vec<Client>,
    /// The `aud` of every access token.
    pub audience: String,
    pub alg: Alg,
    /// A private JWKS, written with fresh keys if missing; `None`: one in the
    /// provider's own temporary directory.
    pub keys_file: Option<PathBuf>,
    /// Whether `POST /test/mint` ([`Provider::mint`]) answers.
    pub mint: bool,
    /// 0 picks a free port.
    pub port: u16,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            users: Vec::new(),
            clients: Vec::new(),
            audience: "si-gateway".to_owned(),
            alg: Alg::Rs256,
            keys_file: None,
            mint: false,
            port: 0,
        }
    }
}

/// What the token endpoint answered.
#[derive(Clone, Debug)]
pub struct TokenSet {
    /// A JWT for the provider's audience.
    pub access_token: String,
    pub id_token: String,
}

/// A PKCE pair (S256).
#[derive(Clone, Debug)]
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

impl Pkce {
    pub fn new() -> Pkce {
        let verifier = random_token();
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        Pkce {
            verifier,
            challenge,
        }
    }
}

impl Default for Pkce {
    fn default() -> Pkce {
        Pkce::new()
    }
}

/// 32 random bytes, base64url: a PKCE verifier, a `state`, a `nonce`.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The header and the payload of a JWT, decoded but not verified.
pub fn decode_jwt(token: &str) -> Result<(Value, Value), String> {
    let mut parts = token.split('.');
    let mut part = |what: &str| -> Result<Value, String> {
        let text = parts
            .next()
            .ok_or_else(|| format!("a JWT has three parts; {what} is missing"))?;
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|e| format!("JWT {what} is not base64url: {e}"))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("JWT {what} is not JSON: {e}"))
    };
    Ok((part("header")?, part("payload")?))
}

/// A running `provider.mjs`; killed on drop.
pub struct Provider {
    process: process::ProviderProcess,
    options: Options,
    http: reqwest::Client,
}

impl Provider {
    /// Starts the provider and waits (up to 20 s) until it answers.
    pub async fn start(options: Options) -> Result<Provider, String> {
        let process = process::ProviderProcess::start(&options).await?;
        install_crypto();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Provider {
            process,
            options,
            http,
        })
    }

    /// `http://127.0.0.1:<port>`, also while stopped.
    pub fn issuer(&self) -> &str {
        self.process.issuer()
    }

    pub fn port(&self) -> u16 {
        self.process.port()
    }

    /// The `aud` of its access tokens.
    pub fn audience(&self) -> &str {
        &self.options.audience
    }

    /// The resource indicator that stands for [`Provider::audience`].
    pub fn resource(&self) -> &str {
        self.process.resource()
    }

    /// The private JWKS it signs with.
    pub fn keys_file(&self) -> &Path {
        self.process.keys_file()
    }

    /// Kills it: its port stops answering until [`Provider::restart`]. Sessions,
    /// codes and grants are lost (they live in its memory).
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Stops it if it runs, then starts it again on the same port, with
    /// `keys_file` if given (key rotation) or the keys it had.
    pub async fn restart(&mut self, keys_file: Option<PathBuf>) -> Result<(), String> {
        self.process.stop();
        if let Some(keys_file) = keys_file {
            self.options.keys_file = Some(keys_file);
        } else {
            self.options.keys_file = Some(self.process.keys_file().to_owned());
        }
        self.process.restart(&self.options).await
    }

    /// The authorization request an application would send for `client_id`.
    pub fn authorization_url(
        &self,
        client_id: &str,
        redirect_uri: &str,
        state: &str,
        nonce: &str,
        pkce: &Pkce,
    ) -> Result<String, String> {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/auth", self.issuer()),
            [
                ("client_id", client_id),
                ("redirect_uri", redirect_uri),
                ("response_type", "code"),
                ("scope", "openid profile email"),
                ("state", state),
                ("nonce", nonce),
                ("code_challenge", pkce.challenge.as_str()),
                ("code_challenge_method", "S256"),
            ],
        )
        .map_err(|e| format!("authorization URL: {e}"))?;
        Ok(url.into())
    }

    /// Acts as the application `client_id`: signs `account_id` in with the
    /// authorization code flow and PKCE, then exchanges the code for tokens for
    /// the provider's audience.
    pub async fn user_access_token(
        &self,
        client_id: &str,
        client_secret: &str,
        redirect_uri: &str,
        account_id: &str,
    ) -> Result<TokenSet, String> {
        let (state, nonce, pkce) = (random_token(), random_token(), Pkce::new());
        let start = self.authorization_url(client_id, redirect_uri, &state, &nonce, &pkce)?;
        let callback = Browser::new()?
            .sign_in_at_provider(&start, account_id)
            .await?;
        let query = |name: &str| {
            callback
                .query_pairs()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.into_owned())
        };
        if let Some(error) = query("error") {
            return Err(format!(
                "the provider refused the sign-in: {callback}: {error}"
            ));
        }
        if query("state").as_deref() != Some(state.as_str()) {
            return Err(format!("the redirect does not carry our state: {callback}"));
        }
        let code = query("code").ok_or_else(|| format!("no code in {callback}"))?;
        let tokens = self
            .exchange_code(
                client_id,
                client_secret,
                redirect_uri,
                &code,
                &pkce.verifier,
            )
            .await?;
        let (_, id_token) = decode_jwt(&tokens.id_token)?;
        if id_token["nonce"] != json!(nonce) {
            return Err(format!("the ID token does not carry our nonce: {id_token}"));
        }
        Ok(tokens)
    }

    /// The token request for an authorization code, naming the audience's
    /// resource indicator.
    pub async fn exchange_code(
        &self,
        client_id: &str,
        client_secret: &str,
        redirect_uri: &str,
        code: &str,
        verifier: &str,
    ) -> Result<TokenSet, String> {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
            ("resource", self.resource()),
        ];
        let mut request = self.http.post(format!("{}/token", self.issuer()));
        if self.auth_method(client_id) == "client_secret_post" {
            form.extend([("client_id", client_id), ("client_secret", client_secret)]);
        } else {
            request = request.basic_auth(client_id, Some(client_secret));
        }
        let (status, body) = read(request.form(&form).send().await).await?;
        if status != 200 {
            return Err(format!("the token endpoint answered {status}: {body}"));
        }
        let body: Value = serde_json::from_str(&body)
            .map_err(|e| format!("the token response is not JSON ({e}): {body}"))?;
        let field = |name: &str| {
            body[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("no {name} in the token response: {body}"))
        };
        Ok(TokenSet {
            access_token: field("access_token")?,
            id_token: field("id_token")?,
        })
    }

    /// A JWS of `claims` signed with the provider's current key for its
    /// algorithm (header `alg`, `kid`, `typ: at+jwt`); refused unless started
    /// with `mint`.
    pub async fn mint(&self, claims: &Value) -> Result<String, String> {
        let request = self
            .http
            .post(format!("{}/test/mint", self.issuer()))
            .header("content-type", "application/json")
            .body(claims.to_string());
        let (status, body) = read(request.send().await).await?;
        if status != 200 {
            return Err(format!("minting answered {status}: {body}"));
        }
        Ok(body)
    }

    fn auth_method(&self, client_id: &str) -> &str {
        self.options
            .clients
            .iter()
            .find(|c| c.client_id == client_id)
            .and_then(|c| c.token_endpoint_auth_method.as_deref())
            .unwrap_or("client_secret_basic")
    }
}

/// A response's status and body, or why there was none.
async fn read(
    response: Result<reqwest::Response, reqwest::Error>,
) -> Result<(u16, String), String> {
    let response = response.map_err(|e| format!("request failed: {e}"))?;
    let status = response.status().as_u16();
    let body = response
        .text()
        .await
        .map_err(|e| format!("reading the body: {e}"))?;
    Ok((status, body))
}

/// The workspace builds reqwest's TLS without a crypto provider of its own (the
/// gateway hands it a configured one): install ring for the process once, before
/// the first client. Only plain http is spoken here.
pub(crate) fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
