//! Who is signed in to the console: a user and their role, their
//! session, and the limits every session keeps (how many, how long).
//! The session table ([`super::session`]) and the sessions kept in the
//! database ([`super::shared`]) both hold these.

use std::time::{Duration, Instant};

/// Sessions at once, fleet-wide (operators, not agents, log in).
pub const MAX_SESSIONS: usize = 1024;
/// Sessions one user may hold at once (their oldest ends first).
pub const MAX_PER_USER: usize = 16;
/// A session unused this long ends.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session this old ends, used or not.
pub const MAX_AGE: Duration = Duration::from_secs(12 * 3600);

/// What a console user may do. Each role can do what the one before can.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Role {
    /// Reads the fleet, bundles, approvals, audit and live figures.
    Viewer,
    /// Also approves and denies held calls (an approver's token).
    Approver,
    /// Publishes, rolls back, pulls the kill switch; never approves (the
    /// rules of the CLI: only an approver's token decides a held call).
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Approver => "approver",
            Role::Admin => "admin",
        }
    }
}

/// A logged-in user.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct User {
    pub name: String,
    pub role: Role,
    /// Tenants whose calls, approvals and records this user sees (empty:
    /// every tenant).
    pub tenants: Vec<String>,
    /// The administrator they are (the admin token, or an entry of
    /// `--admins`): what the tenants and registry pages let them read and
    /// change ([`Actor::reads`], [`Actor::writes`]). `None` for approvers
    /// and viewers. A tenant admin's `role` is [`Role::Viewer`] and their
    /// `tenants` theirs alone: the org's actions stay out of reach.
    pub actor: Option<crate::admins::Actor>,
    /// How they signed in through the identity provider (`None`: with a
    /// token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<SignedIn>,
    /// A session the console minted for the CLI: its id is a bearer token
    /// of the API and never a console cookie (a browser's session id is
    /// never a bearer token).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cli: bool,
}

/// A sign-in through the identity provider ([`crate::oidc`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SignedIn {
    /// The provider's subject (the user's name is `oidc:<sub>`).
    pub sub: String,
    /// What the console shows for them (a user name, an e-mail).
    pub shown: String,
    /// The principals they also are (`principal_claims`): they never
    /// approve those principals' calls.
    pub principals: Vec<String>,
    /// When the provider last authenticated them (seconds since the
    /// epoch); 0 when its token did not say (never a fresh sign-in).
    pub auth_time: u64,
    /// The provider's authentication context class, when it named one.
    pub acr: Option<String>,
    /// When their roles are read again from the provider (seconds since
    /// the epoch).
    pub recheck_at: u64,
}

impl User {
    /// Whether `tenant` is one of this user's (compared as the audit store
    /// and the approvals compare it: [`warden_config::person::in_scope`]).
    pub fn sees(&self, tenant: &str) -> bool {
        warden_config::person::in_scope(&self.tenants, tenant)
    }

    /// Whether two users are one for the session budget: their name,
    /// role and administrator (a tenant admin's role is `Viewer`, so the
    /// name and role alone would make a viewer of the same name them; the
    /// agent refuses such files at start, [`crate::admins::check_names`]).
    pub fn same_user(&self, other: &User) -> bool {
        self.name == other.name && self.role == other.role && self.actor == other.actor
    }

    /// How the console names their role: the administrator's kind when
    /// they are one (`org admin`, `org reviewer`, `tenant admin`).
    pub fn role_label(&self) -> &'static str {
        use crate::admins::Kind;
        match self.actor.as_ref().map(|a| &a.kind) {
            Some(Kind::OrgAdmin) if self.actor.as_ref().is_some_and(|a| a.name != "admin") => {
                "org admin"
            }
            Some(Kind::OrgReviewer) => "org reviewer",
            Some(Kind::TenantAdmin(_)) => "tenant admin",
            _ => self.role.as_str(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Session {
    pub user: User,
    /// The token every form of this session carries.
    pub csrf: String,
    /// A message for the next page (what the last action did).
    pub flash: Option<String>,
    pub(super) created: Instant,
    pub(super) used: Instant,
}

impl Session {
    /// A session read back from where it is kept.
    pub(super) fn restored(
        user: User,
        csrf: String,
        flash: Option<String>,
        created: Instant,
        used: Instant,
    ) -> Session {
        Session {
            user,
            csrf,
            flash,
            created,
            used,
        }
    }
}
