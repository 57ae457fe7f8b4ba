//! User roles.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a user is allowed to be. Stored with every user and carried in every token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Every agent, and user management.
    Admin,
    /// Clinical staff.
    Clinician,
    /// Billing and coding staff.
    Billing,
}

impl Role {
    /// Every role, in a stable order (for messages listing the valid ones).
    pub const ALL: [Role; 3] = [Role::Admin, Role::Clinician, Role::Billing];

    /// The lowercase name used in config, the database and tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Clinician => "clinician",
            Role::Billing => "billing",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of [`Role::ALL`].
#[derive(Debug, thiserror::Error)]
#[error("unknown role `{0}`, expected one of admin, clinician, billing")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

/// The agents one role may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentGrant {
    /// Every agent (`["*"]` in configuration).
    All,
    /// These agents, by name (compared ignoring ASCII case).
    Only(Vec<String>),
}

impl AgentGrant {
    fn only(names: &[&str]) -> Self {
        AgentGrant::Only(names.iter().map(|n| (*n).to_owned()).collect())
    }

    /// Whether `agent` is granted.
    pub fn allows(&self, agent: &str) -> bool {
        match self {
            AgentGrant::All => true,
            AgentGrant::Only(names) => names.iter().any(|n| n.eq_ignore_ascii_case(agent)),
        }
    }
}

/// Which agents each role may use. Defaults follow the original deployment's teams:
/// `admin` everything, `clinician` Chat/MedicalQA/Documentation/Clinical, `billing`
/// Chat/Billing/Claims.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolePolicy {
    admin: AgentGrant,
    clinician: AgentGrant,
    billing: AgentGrant,
}

impl Default for RolePolicy {
    fn default() -> Self {
        RolePolicy {
            admin: AgentGrant::All,
            clinician: AgentGrant::only(&["Chat", "MedicalQA", "Documentation", "Clinical"]),
            billing: AgentGrant::only(&["Chat", "Billing", "Claims"]),
        }
    }
}

impl RolePolicy {
    /// Replaces `role`'s grant.
    pub fn set(&mut self, role: Role, grant: AgentGrant) {
        *self.slot(role) = grant;
    }

    fn slot(&mut self, role: Role) -> &mut AgentGrant {
        match role {
            Role::Admin => &mut self.admin,
            Role::Clinician => &mut self.clinician,
            Role::Billing => &mut self.billing,
        }
    }

    /// `role`'s grant.
    pub fn grant(&self, role: Role) -> &AgentGrant {
        match role {
            Role::Admin => &self.admin,
            Role::Clinician => &self.clinician,
            Role::Billing => &self.billing,
        }
    }

    /// Whether `role` may use `agent`.
    pub fn allows(&self, role: Role, agent: &str) -> bool {
        self.grant(role).allows(agent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_follows_the_teams() {
        let policy = RolePolicy::default();
        for agent in [
            "Chat",
            "MedicalQA",
            "Documentation",
            "Billing",
            "Claims",
            "Clinical",
        ] {
            assert!(policy.allows(Role::Admin, agent));
        }
        assert!(policy.allows(Role::Clinician, "clinical"));
        assert!(!policy.allows(Role::Clinician, "Billing"));
        assert!(!policy.allows(Role::Billing, "Clinical"));
        assert!(policy.allows(Role::Billing, "Claims"));
    }

    #[test]
    fn names_round_trip() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().ok(), Some(role));
        }
        assert!("root".parse::<Role>().is_err());
    }
}
