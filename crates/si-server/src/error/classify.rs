//! How each library's error maps to a status, an OpenAI error type and a stable
//! code: the single sign-on, router and authentication errors.

use http::StatusCode;
use si_auth::AuthError;
use si_oidc::OidcError;
use si_router::{CutShort, RouterError};

use super::{AUTHN, INVALID, PERMISSION, SERVER, UNAVAILABLE, UPSTREAM};

pub(super) fn classify_oidc(error: &OidcError) -> (StatusCode, &'static str, &'static str) {
    match error {
        OidcError::Unreachable(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            UNAVAILABLE,
            "sso_unavailable",
        ),
        OidcError::InvalidToken(_) => (StatusCode::UNAUTHORIZED, AUTHN, "invalid_token"),
        OidcError::ExpiredToken => (StatusCode::UNAUTHORIZED, AUTHN, "token_expired"),
        OidcError::NoRole { .. } => (StatusCode::FORBIDDEN, PERMISSION, "no_role"),
        OidcError::NoLocation => (StatusCode::FORBIDDEN, PERMISSION, "no_location"),
        OidcError::BadIdentity(_) => (StatusCode::FORBIDDEN, PERMISSION, "unusable_identity"),
        OidcError::SignInFailed(_) => (StatusCode::BAD_REQUEST, INVALID, "sign_in_failed"),
    }
}

pub(super) fn classify_router(error: &RouterError) -> (StatusCode, &str, &str) {
    match error {
        RouterError::InvalidRequest(_) => (StatusCode::BAD_REQUEST, INVALID, "invalid_request"),
        RouterError::UnknownAgent { .. } => (StatusCode::BAD_REQUEST, INVALID, "unknown_agent"),
        RouterError::NoAgent { .. } => (StatusCode::BAD_REQUEST, INVALID, "missing_agent"),
        RouterError::ImagesNotAccepted { .. } => {
            (StatusCode::BAD_REQUEST, INVALID, "images_not_accepted")
        }
        RouterError::NoHealthyBackend { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            UNAVAILABLE,
            "no_healthy_backend",
        ),
        RouterError::Unreachable { .. } => {
            (StatusCode::BAD_GATEWAY, UPSTREAM, "backend_unreachable")
        }
        RouterError::KeyRejected { .. } => {
            (StatusCode::BAD_GATEWAY, UPSTREAM, "backend_key_rejected")
        }
        RouterError::Unavailable { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            UNAVAILABLE,
            "backend_unavailable",
        ),
        RouterError::Rejected { status, kind, .. } => (
            StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST),
            kind.as_str(),
            "backend_rejected_request",
        ),
        RouterError::Failed { .. } => (StatusCode::BAD_GATEWAY, UPSTREAM, "backend_failed"),
        RouterError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, UPSTREAM, "backend_timeout"),
        RouterError::Overloaded { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            UNAVAILABLE,
            "backend_overloaded",
        ),
        RouterError::UnusableKey { .. } => {
            (StatusCode::INTERNAL_SERVER_ERROR, SERVER, "bad_backend_key")
        }
        RouterError::FallbackForbidden { .. } => {
            (StatusCode::FORBIDDEN, PERMISSION, "agent_forbidden")
        }
        RouterError::CutShort {
            reason: CutShort::Timeout,
            ..
        } => (StatusCode::GATEWAY_TIMEOUT, UPSTREAM, "backend_timeout"),
        RouterError::CutShort {
            reason: CutShort::BrokeOff,
            ..
        } => (StatusCode::BAD_GATEWAY, UPSTREAM, "backend_failed"),
        RouterError::TooLarge { .. } => (
            StatusCode::BAD_GATEWAY,
            UPSTREAM,
            "backend_answer_too_large",
        ),
    }
}

pub(super) fn classify_auth(error: &AuthError) -> (StatusCode, &str, &str) {
    match error {
        AuthError::InvalidCredentials => (StatusCode::UNAUTHORIZED, AUTHN, "invalid_credentials"),
        AuthError::MissingToken => (StatusCode::UNAUTHORIZED, AUTHN, "missing_token"),
        AuthError::InvalidToken(_) => (StatusCode::UNAUTHORIZED, AUTHN, "invalid_token"),
        AuthError::ExpiredToken => (StatusCode::UNAUTHORIZED, AUTHN, "token_expired"),
        AuthError::RevokedToken => (StatusCode::UNAUTHORIZED, AUTHN, "token_revoked"),
        AuthError::RefreshReused { .. } => (StatusCode::UNAUTHORIZED, AUTHN, "refresh_reused"),
        AuthError::LoginLocked { .. } => (
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "login_locked",
        ),
        AuthError::UnknownUser(_) => (StatusCode::NOT_FOUND, "not_found_error", "unknown_user"),
        AuthError::UnknownApiKey(_) => {
            (StatusCode::NOT_FOUND, "not_found_error", "unknown_api_key")
        }
        AuthError::ApiKeyExists(_) => (StatusCode::CONFLICT, INVALID, "api_key_exists"),
        AuthError::InvalidForwardedUser(_) => {
            (StatusCode::BAD_REQUEST, INVALID, "invalid_forwarded_user")
        }
        AuthError::WrongLocation { .. } => (StatusCode::FORBIDDEN, PERMISSION, "wrong_location"),
        AuthError::LocationRequired(_) => (StatusCode::BAD_REQUEST, INVALID, "location_required"),
        // Like a missing location, not a wrong one: no user may log in at `*`.
        AuthError::LocationNotAPlace => (StatusCode::BAD_REQUEST, INVALID, "invalid_location"),
        AuthError::UserExists(_) | AuthError::UsernameTaken { .. } => {
            (StatusCode::CONFLICT, INVALID, "user_exists")
        }
        AuthError::LocalAccountExists(_) => (StatusCode::CONFLICT, INVALID, "local_account_exists"),
        AuthError::UserDisabled(_) => (StatusCode::FORBIDDEN, PERMISSION, "user_disabled"),
        AuthError::InvalidUser(_) => (StatusCode::BAD_REQUEST, INVALID, "invalid_user"),
        // A database that is down or restarting: retrying later works.
        AuthError::StoreUnreachable { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            UNAVAILABLE,
            "store_unavailable",
        ),
        AuthError::Store { .. } | AuthError::SecretFile { .. } | AuthError::Internal(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, SERVER, "internal")
        }
    }
}
