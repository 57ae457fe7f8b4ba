//! Asking a model server whether it takes a key, before the gateway relies on it.

use std::time::Duration;

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use secrecy::{ExposeSecret, SecretString};
use si_core::BackendConfig;

const TIMEOUT: Duration = Duration::from_secs(5);

/// `Ok` when `backend` answers `GET /v1/models` with 200 to `key` (current
/// llama-server builds require the key there), else why not.
pub async fn accepts_key(backend: &BackendConfig, key: &SecretString) -> Result<(), String> {
    let request = http::Request::get(format!("{}/v1/models", backend.url))
        .header(AUTHORIZATION, format!("Bearer {}", key.expose_secret()))
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let client = Client::builder(TokioExecutor::new()).build_http();
    let response = tokio::time::timeout(TIMEOUT, client.request(request))
        .await
        .map_err(|_| {
            format!(
                "{} did not answer within {} s",
                backend.url,
                TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| format!("cannot reach {}: {e}", backend.url))?;
    match response.status().as_u16() {
        200 => Ok(()),
        401 => Err(format!(
            "{} answers 401 (Invalid API Key) to the new key",
            backend.url
        )),
        503 => Err(format!("{} is still loading its model", backend.url)),
        status => Err(format!("{} answers {status}", backend.url)),
    }
}

#[cfg(test)]
mod tests {
    use si_core::Config;
    use wiremock::matchers::{header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;

    #[tokio::test]
    async fn only_a_200_to_the_key_counts() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/v1/models"))
            .and(header("authorization", "Bearer good-key"))
            .respond_with(ResponseTemplate::new(200))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(401))
            .mount(&server)
            .await;
        let mut backend = Config::builtin().unwrap().backends.remove(0);
        let address = server.address();
        backend.url.host = address.ip().to_string();
        backend.url.port = address.port();
        assert_eq!(
            accepts_key(&backend, &"good-key".to_owned().into()).await,
            Ok(())
        );
        let refused = accepts_key(&backend, &"old-key".to_owned().into())
            .await
            .unwrap_err();
        assert!(refused.contains("401"), "{refused}");
        backend.url.port = 1;
        assert!(
            accepts_key(&backend, &"good-key".to_owned().into())
                .await
                .unwrap_err()
                .contains("cannot reach")
        );
    }
}
