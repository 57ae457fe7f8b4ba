//! From a provider's claims to a user here: the name, the role its groups map to,
//! and the location.

use serde_json::{Map, Value};
use si_core::Role;
use si_core::config::OidcConfig;

use crate::OidcError;

/// Who the provider says the caller is, in this gateway's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The user's name (the configured username claim).
    pub username: String,
    /// The role the user's groups map to.
    pub role: Role,
    /// The user's location.
    pub location: String,
    /// The token's own id (`jti`), if it has one.
    pub token_id: Option<String>,
    /// The token's `iat` (Unix seconds), or 0.
    pub issued_at: u64,
    /// The token's `exp` (Unix seconds).
    pub expires_at: u64,
}

/// The identity `claims` give under `config`'s mapping.
pub(crate) fn map(config: &OidcConfig, claims: &Map<String, Value>) -> Result<Identity, OidcError> {
    let username = claims
        .get(&config.username_claim)
        .and_then(Value::as_str)
        .ok_or_else(|| {
            OidcError::BadIdentity(format!(
                "the identity provider's token has no `{}` claim to name you by; an \
                 administrator sets auth.oidc.username_claim to one it sends",
                config.username_claim
            ))
        })?;
    if !si_auth::users::is_well_formed_username(username) {
        return Err(OidcError::BadIdentity(format!(
            "the identity provider's `{}` claim is not usable as a username here (1-64 ASCII \
             letters, digits, `.`, `_`, `-` or `@`)",
            config.username_claim
        )));
    }
    let groups = groups(claims.get(&config.groups_claim));
    let role = Role::ALL
        .into_iter()
        .find(|role| {
            groups
                .iter()
                .any(|group| config.roles.get(*group) == Some(role))
        })
        .ok_or_else(|| OidcError::NoRole {
            claim: config.groups_claim.clone(),
            count: groups.len(),
        })?;
    let location = location(config, claims, &groups)?;
    let seconds = |name: &str| claims.get(name).and_then(Value::as_u64);
    Ok(Identity {
        username: username.to_owned(),
        role,
        location,
        token_id: claims.get("jti").and_then(Value::as_str).map(str::to_owned),
        issued_at: seconds("iat").unwrap_or(0),
        expires_at: seconds("exp").unwrap_or(0),
    })
}

/// The group names of a groups claim: a list of strings, or one string.
fn groups(claim: Option<&Value>) -> Vec<&str> {
    match claim {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        Some(Value::String(one)) => vec![one.as_str()],
        _ => Vec::new(),
    }
}

/// The location claim, else the first location group, else the configured default.
fn location(
    config: &OidcConfig,
    claims: &Map<String, Value>,
    groups: &[&str],
) -> Result<String, OidcError> {
    let from_claim = config
        .location_claim
        .as_ref()
        .and_then(|name| claims.get(name))
        .and_then(Value::as_str);
    let from_group = config.location_group_prefix.as_ref().and_then(|prefix| {
        groups
            .iter()
            .find_map(|group| group.strip_prefix(prefix.as_str()))
    });
    let location = from_claim
        .or(from_group)
        .or(config.default_location.as_deref())
        .ok_or(OidcError::NoLocation)?;
    let well_formed = (1..=64).contains(&location.len())
        && location
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !well_formed {
        return Err(OidcError::BadIdentity(
            "the location the identity provider names is not usable here (1-64 letters, \
             digits, `.`, `_` or `-`)"
                .into(),
        ));
    }
    Ok(location.to_owned())
}

#[cfg(test)]
mod tests;
