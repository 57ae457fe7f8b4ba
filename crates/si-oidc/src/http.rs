//! Talking to the provider: TLS always verified (the system's roots and
//! `auth.oidc.ca_file`), no redirects, short timeouts, bounded answers.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::de::DeserializeOwned;

use crate::OidcError;

/// Largest answer read from the provider: its configuration, keys and tokens are
/// a few KiB.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const TIMEOUT: Duration = Duration::from_secs(10);

/// The client for one provider.
pub(crate) fn client(ca_file: Option<&Path>) -> Result<reqwest::Client, OidcError> {
    let mut roots = rustls::RootCertStore::empty();
    // Unreadable system certificates are skipped: the others, and the file's,
    // still count.
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(path) = ca_file {
        let extra = authorities(path)?;
        let (added, _) = roots.add_parsable_certificates(extra);
        if added == 0 {
            return Err(unusable(path, &"holds no usable certificate authority"));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| OidcError::Unreachable(format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(TIMEOUT)
        .user_agent(concat!(
            "synthetic-intelligence/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
        .map_err(|e| OidcError::Unreachable(format!("HTTP client setup failed: {e}")))
}

fn unusable(path: &Path, problem: &dyn std::fmt::Display) -> OidcError {
    OidcError::Unreachable(format!("auth.oidc.ca_file {}: {problem}", path.display()))
}

fn authorities(path: &Path) -> Result<Vec<CertificateDer<'static>>, OidcError> {
    let pem = std::fs::read(path).map_err(|e| unusable(path, &e))?;
    CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unusable(path, &e))
}

/// GETs `url` and parses its JSON answer.
pub(crate) async fn get_json<T: DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
) -> Result<T, OidcError> {
    let response = client
        .get(url)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| failed(&e))?;
    json_answer(url, response).await.map(|(_, value)| value)
}

/// The status and JSON body of `response`, read up to [`MAX_ANSWER_BYTES`]. Any
/// status is returned; the caller judges it. A body that is not JSON, or not the
/// shape asked for, is an error naming `url`.
pub(crate) async fn json_answer<T: DeserializeOwned>(
    url: &str,
    mut response: reqwest::Response,
) -> Result<(reqwest::StatusCode, T), OidcError> {
    let status = response.status();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| failed(&e))? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(OidcError::Unreachable(format!(
                "{url} answered more than {MAX_ANSWER_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    if !status.is_success()
        && status != reqwest::StatusCode::BAD_REQUEST
        && status != reqwest::StatusCode::UNAUTHORIZED
    {
        return Err(OidcError::Unreachable(format!("{url} answered {status}")));
    }
    serde_json::from_slice(&body)
        .map(|value| (status, value))
        .map_err(|e| {
            OidcError::Unreachable(format!("{url} answered {status} with unexpected JSON: {e}"))
        })
}

fn failed(error: &reqwest::Error) -> OidcError {
    // reqwest's Display omits the cause (connection refused, certificate...).
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message = format!("{message}: {cause}");
        source = cause.source();
    }
    OidcError::Unreachable(message)
}
