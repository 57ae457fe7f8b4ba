//! A browser that signs in: it follows every redirect by hand, keeps one cookie
//! jar for every host (all are 127.0.0.1, on different ports), and fills in the
//! provider's login form.

use std::sync::Arc;

use reqwest::cookie::Jar;
use reqwest::{Url, redirect};
use serde_json::Value;

/// The gateway's routes for browser sign-in.
const LOGIN_PATH: &str = "/v1/auth/oidc/login";

/// More hops than any sign-in takes: a loop fails instead of spinning.
const MAX_HOPS: usize = 20;

/// What the gateway answered the browser.
#[derive(Clone, Debug)]
pub struct GatewayResponse {
    pub status: u16,
    pub location: Option<String>,
    /// Every `Set-Cookie` header, as sent.
    pub set_cookies: Vec<String>,
    pub body: String,
}

impl GatewayResponse {
    /// The body as JSON.
    pub fn json(&self) -> Result<Value, String> {
        serde_json::from_str(&self.body)
            .map_err(|e| format!("the body is not JSON ({e}): {}", self.body))
    }
}

/// One browser: one cookie jar.
pub struct Browser {
    client: reqwest::Client,
    jar: Arc<Jar>,
}

impl Browser {
    pub fn new() -> Result<Browser, String> {
        let jar = Arc::new(Jar::default());
        super::install_crypto();
        let client = reqwest::Client::builder()
            .redirect(redirect::Policy::none())
            .cookie_provider(jar.clone())
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Browser { client, jar })
    }

    /// Its cookies, to read or to add to.
    pub fn jar(&self) -> &Arc<Jar> {
        &self.jar
    }

    /// From `GET {gateway}/v1/auth/oidc/login` through the provider's login form
    /// as `account_id`, up to the redirect back to the gateway: returns the
    /// callback URL (with `code` and `state`) without requesting it.
    pub async fn reach_gateway_callback(
        &self,
        gateway_base_url: &str,
        account_id: &str,
    ) -> Result<Url, String> {
        let login = format!("{}{LOGIN_PATH}", gateway_base_url.trim_end_matches('/'));
        let response = self.send(self.client.get(&login)).await?;
        let status = response.status().as_u16();
        if !matches!(status, 302 | 303) {
            let body = response.text().await.unwrap_or_default();
            return Err(format!("{login} answered {status}, not a redirect: {body}"));
        }
        let authorization = location(&response)?;
        self.sign_in_at_provider(authorization.as_str(), account_id)
            .await
    }

    /// From an authorization request through the provider's login form as
    /// `account_id` (skipped when this browser already has a session there), up
    /// to the redirect to the request's `redirect_uri`: returns that URL without
    /// requesting it. A refusal the provider sends there (`error=`) is returned
    /// too; one it answers itself is an error.
    pub async fn sign_in_at_provider(
        &self,
        authorization_url: &str,
        account_id: &str,
    ) -> Result<Url, String> {
        let mut url = Url::parse(authorization_url)
            .map_err(|e| format!("authorization URL {authorization_url}: {e}"))?;
        let target = url
            .query_pairs()
            .find(|(key, _)| key == "redirect_uri")
            .and_then(|(_, value)| Url::parse(&value).ok())
            .ok_or_else(|| format!("no redirect_uri in {authorization_url}"))?;
        let mut submitted = false;
        for _ in 0..MAX_HOPS {
            let mut response = self.send(self.client.get(url.clone())).await?;
            if response.status().is_success() && is_login_form(&url) && !submitted {
                let form = [("login", account_id)];
                let submit = format!("{}/login", url.as_str().trim_end_matches('/'));
                response = self.send(self.client.post(submit).form(&form)).await?;
                submitted = true;
            }
            if !response.status().is_redirection() {
                let status = response.status().as_u16();
                let body = response.text().await.unwrap_or_default();
                return Err(format!("{url} answered {status}: {body}"));
            }
            url = location(&response)?;
            if same_endpoint(&url, &target) {
                return Ok(url);
            }
        }
        Err(format!("no redirect to {target} within {MAX_HOPS} hops"))
    }

    /// `GET url` with this browser's cookies; the answer is not followed.
    pub async fn get(&self, url: &str) -> Result<GatewayResponse, String> {
        let response = self.send(self.client.get(url)).await?;
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let set_cookies = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect();
        let body = response
            .text()
            .await
            .map_err(|e| format!("reading {url}: {e}"))?;
        Ok(GatewayResponse {
            status,
            location,
            set_cookies,
            body,
        })
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, String> {
        request
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))
    }
}

/// A new browser signs in at the gateway as `account_id`: from its login route
/// through the provider and back to its callback, sent with the cookies the
/// gateway set. Returns the callback's answer.
pub async fn browser_sign_in(
    gateway_base_url: &str,
    account_id: &str,
) -> Result<GatewayResponse, String> {
    let browser = Browser::new()?;
    let callback = browser
        .reach_gateway_callback(gateway_base_url, account_id)
        .await?;
    browser.get(callback.as_str()).await
}

/// The `Location` of a redirect, made absolute.
fn location(response: &reqwest::Response) -> Result<Url, String> {
    let from = response.url();
    let value = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| format!("{from} redirected without a Location"))?;
    from.join(value)
        .map_err(|e| format!("{from} redirected to {value}: {e}"))
}

/// The provider's login page: `/interaction/<uid>`.
fn is_login_form(url: &Url) -> bool {
    url.path_segments()
        .is_some_and(|segments| segments.collect::<Vec<_>>().len() == 2)
        && url.path().starts_with("/interaction/")
}

fn same_endpoint(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
        && a.path() == b.path()
}
