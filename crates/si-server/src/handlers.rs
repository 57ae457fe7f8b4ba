//! One module per endpoint, plus what they share: the bearer-token check, the
//! role check, and reading a request body.

pub(crate) mod chat;
pub(crate) mod health;
pub(crate) mod login;
pub(crate) mod models;
pub(crate) mod oidc;
pub(crate) mod openapi;
pub(crate) mod workflows;

use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http::header::AUTHORIZATION;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use si_auth::{AuthError, Claims};
use si_core::AgentConfig;

use crate::Gateway;
use crate::context::AuditNotes;
use crate::error::ApiError;

/// Who is calling: the verified token's claims, or `None` in insecure development
/// mode. Counts the request against the caller's rate limits.
pub(crate) async fn authenticate(
    gateway: &Gateway,
    headers: &HeaderMap,
    notes: &AuditNotes,
) -> Result<Option<Claims>, ApiError> {
    if gateway.config().gateway.allow_insecure_dev {
        return Ok(None);
    }
    let header = headers.get(AUTHORIZATION).ok_or(AuthError::MissingToken)?;
    let value = header
        .to_str()
        .map_err(|_| AuthError::InvalidToken("authorization header is not ASCII"))?;
    let token = value
        .get(..7)
        .filter(|scheme| scheme.eq_ignore_ascii_case("bearer "))
        .map(|_| value[7..].trim())
        .filter(|token| !token.is_empty())
        .ok_or(AuthError::MissingToken)?;
    let claims = if si_auth::api_keys::is_api_key(token) {
        let key = gateway
            .inner
            .api_keys
            .identify(token, si_auth::users::unix_now())?;
        notes.via_key(&key.name);
        crate::key_use::admit(gateway, &key).await?;
        let mut claims = key.claims();
        // Only a key made to may say whom it acts for; anyone else's headers are
        // not read at all.
        if key.forward_user
            && let Some(user) = si_auth::api_keys::forwarded_user(|name| {
                headers.get(name).map(|value| value.as_bytes().to_vec())
            })?
        {
            // Under the key's name, so that no one it names can pass for a
            // person with their own login, or for another key.
            claims.sub = format!("{}/{user}", claims.sub);
        }
        claims
    } else if let Some(provider) = gateway.inner.oidc.as_ref()
        && si_oidc::is_provider_token(token)
    {
        let claims = oidc::bearer_claims(gateway, provider, token).await?;
        // A user disabled here is refused whatever the provider says.
        gateway.inner.revocations.check(&claims)?;
        claims
    } else {
        let claims = gateway.tokens().verify(token)?;
        gateway.inner.revocations.check(&claims)?;
        claims
    };
    notes.identify(&claims);
    gateway
        .inner
        .limits
        .check_identity(&claims.sub, &claims.loc)
        .await?;
    Ok(Some(claims))
}

/// Refuses `agent` to a caller whose role does not grant it (everything is allowed
/// without a caller, in insecure development mode).
pub(crate) fn authorize(
    gateway: &Gateway,
    caller: Option<&Claims>,
    agent: &str,
) -> Result<(), ApiError> {
    if may_use(gateway, caller, agent) {
        return Ok(());
    }
    let Some(caller) = caller else { return Ok(()) };
    let policy = &gateway.config().roles;
    let allowed: Vec<&str> = gateway
        .router()
        .agents()
        .all()
        .iter()
        .filter(|a| policy.allows(caller.role, &a.name))
        .map(|a| a.name.as_str())
        .collect();
    Err(ApiError::Forbidden {
        role: caller.role,
        agent: agent.to_owned(),
        allowed: if allowed.is_empty() {
            "none".into()
        } else {
            allowed.join(", ")
        },
    })
}

/// Whether `caller` may use `agent`.
fn may_use(gateway: &Gateway, caller: Option<&Claims>, agent: &str) -> bool {
    caller.is_none_or(|c| gateway.config().roles.allows(c.role, agent))
}

/// The predicate [`si_router::Router::answer`] asks before a fallback agent answers.
pub(crate) fn may_use_agent<'a>(
    gateway: &'a Gateway,
    caller: Option<&'a Claims>,
) -> impl Fn(&AgentConfig) -> bool + 'a {
    move |agent| may_use(gateway, caller, &agent.name)
}

/// A client must finish sending its request body within this time, so a trickling
/// client cannot hold a connection and a buffer forever.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads a request body of at most `limit` bytes within [`BODY_READ_TIMEOUT`].
pub(crate) async fn read_limited(body: Incoming, limit: usize) -> Result<Bytes, ApiError> {
    let collected = tokio::time::timeout(BODY_READ_TIMEOUT, Limited::new(body, limit).collect())
        .await
        .map_err(|_| ApiError::BodyTimeout {
            seconds: BODY_READ_TIMEOUT.as_secs(),
        })?;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::BodyTooLarge { limit })
        }
        Err(e) => Err(ApiError::BadRequest(format!(
            "cannot read request body: {e}"
        ))),
    }
}
