//! One module per endpoint, plus the bearer-token check they share.

pub(crate) mod chat;
pub(crate) mod health;
pub(crate) mod login;
pub(crate) mod models;
pub(crate) mod workflows;

use http::Request;
use http::header::AUTHORIZATION;
use si_auth::{AuthError, Claims};

use crate::Gateway;
use crate::audit::AuditDraft;
use crate::error::ApiError;

/// Who is calling: the verified token's claims, or `None` in insecure development mode.
pub(crate) fn authenticate<B>(
    gateway: &Gateway,
    request: &Request<B>,
) -> Result<Option<Claims>, ApiError> {
    if gateway.config().gateway.allow_insecure_dev {
        return Ok(None);
    }
    let header = request
        .headers()
        .get(AUTHORIZATION)
        .ok_or(AuthError::MissingToken)?;
    let value = header
        .to_str()
        .map_err(|_| AuthError::InvalidToken("authorization header is not ASCII"))?;
    let token = value
        .get(..7)
        .filter(|scheme| scheme.eq_ignore_ascii_case("bearer "))
        .map(|_| value[7..].trim())
        .filter(|token| !token.is_empty())
        .ok_or(AuthError::MissingToken)?;
    let claims = gateway.tokens().verify(token)?;
    gateway.inner.revocations.check(&claims)?;
    if let Some(draft) = request.extensions().get::<AuditDraft>() {
        draft.identify(&claims);
    }
    gateway
        .inner
        .limits
        .check_identity(&claims.sub, &claims.loc)
        .map_err(ApiError::RateLimited)?;
    Ok(Some(claims))
}

/// Refuses `agent` to a caller whose role does not grant it (everything is allowed
/// without a caller, in insecure development mode).
pub(crate) fn authorize(
    gateway: &Gateway,
    caller: Option<&Claims>,
    agent: &str,
) -> Result<(), ApiError> {
    let Some(caller) = caller else { return Ok(()) };
    let policy = &gateway.config().roles;
    if policy.allows(caller.role, agent) {
        return Ok(());
    }
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
