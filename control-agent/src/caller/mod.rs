//! Who is calling the agent: one value, built in one place from a bearer
//! token ([`Api::caller`]), used by the API's route table, the console
//! and the change record. Every identity the agent knows is one of these:
//!
//! | caller | from | reaches |
//! |---|---|---|
//! | [`Caller::Gateway`] | `--fleet-token` (any gateway without a token of its own), `--gateways` (one gateway) | bundles, reports, audit ingest, approval claims |
//! | [`Caller::Admin`] | `--admin-token`, `--admins` (org admin, org reviewer, tenant admin of a tenant) | the API and the console as their [`Kind`](crate::admins::Kind) allows |
//! | [`Caller::Approver`] | `--approvers` | `/v1/approvals`, the console's approvals |
//! | [`Caller::Viewer`] | `--viewers` | the console, read only (never the API) |
//!
//! A later way of signing in (OIDC, a client certificate) builds the same
//! value; nothing past this module asks how the caller proved it.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

pub mod people;
mod tokens;

pub use people::People;
pub use tokens::{read_gateway_tokens, Tokens};

use crate::admins::{Actor, Admin};
use crate::approvals::Approver;

/// The shortest token the agent takes: the admin and fleet tokens are
/// refused at start below it, and a presented token below it is never
/// looked up (the approvers, viewers and admins files keep only digests,
/// whose tokens' length cannot be checked when the files are read).
pub const MIN_TOKEN_LEN: usize = 16;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A gateway: the shared fleet token (`None`), or a gateway's own
    /// token (`Some(id)`), which speaks for that id alone.
    Gateway(Option<String>),
    /// An administrator: the admin token's bearer or an entry of the
    /// admins file (org admin, org reviewer, tenant admin).
    Admin(Actor),
    /// An approver: decides held calls of `tenants` (empty: every tenant).
    /// `signed_in`: one the identity provider made (a CLI token minted in
    /// the console), not one of the approvers file.
    Approver {
        name: String,
        tenants: Vec<String>,
        signed_in: Option<crate::console::user::SignedIn>,
    },
    /// A console viewer: reads the console's pages of `tenants`.
    Viewer { name: String, tenants: Vec<String> },
}

impl Caller {
    /// The administrator, when the caller is one.
    pub fn actor(&self) -> Option<&Actor> {
        match self {
            Caller::Admin(a) => Some(a),
            _ => None,
        }
    }

    /// Whether the caller is an org admin (the admin token included).
    pub fn is_org_admin(&self) -> bool {
        self.actor().is_some_and(Actor::is_org_admin)
    }

    /// The caller a console user is, on a token the console minted for
    /// them ([`crate::console::user::User::cli`]).
    pub fn of_user(u: crate::console::user::User) -> Caller {
        use crate::console::user::Role;
        match (u.actor, u.role) {
            (Some(a), _) => Caller::Admin(a),
            (None, Role::Approver) => Caller::Approver {
                name: u.name,
                tenants: u.tenants,
                signed_in: u.oidc,
            },
            (None, _) => Caller::Viewer {
                name: u.name,
                tenants: u.tenants,
            },
        }
    }

    /// How the change record names the caller.
    pub fn label(&self) -> String {
        match self {
            Caller::Gateway(None) => "fleet".into(),
            Caller::Gateway(Some(id)) => format!("gateway:{id}"),
            Caller::Admin(a) => a.label(),
            Caller::Approver { name, .. } => format!("approver:{name}"),
            Caller::Viewer { name, .. } => format!("viewer:{name}"),
        }
    }
}

/// Everyone the agent knows by a token: what [`identify`] looks in.
pub struct Known<'a> {
    pub tokens: &'a Tokens,
    /// Org admins, org reviewers and tenant admins (`--admins`).
    pub admins: &'a BTreeMap<String, Admin>,
    /// Approvers (`--approvers`).
    pub approvers: &'a BTreeMap<String, Approver>,
    /// Console viewers (`--viewers`).
    pub viewers: &'a BTreeMap<String, Approver>,
}

/// Who a bearer token makes its bearer (`None`: nobody the agent knows).
/// The one place tokens are looked up: the admin token, the fleet token,
/// gateways' own tokens, the admins, approvers and viewers files, in that
/// order.
pub fn identify(token: &str, known: &Known<'_>) -> Option<Caller> {
    let token = token.trim();
    if token.len() < MIN_TOKEN_LEN {
        return None;
    }
    let d: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    if known.tokens.is_admin(&d) {
        return Some(Caller::Admin(Actor::root()));
    }
    if let Some(gateway) = known.tokens.gateway_of(&d) {
        return Some(Caller::Gateway(gateway));
    }
    if let Some((name, a)) = known.admins.iter().find(|(_, a)| a.token == d) {
        return Some(Caller::Admin(Actor {
            name: name.clone(),
            kind: a.kind.clone(),
        }));
    }
    let of = |file: &BTreeMap<String, Approver>| {
        file.iter()
            .find(|(_, a)| a.token == d)
            .map(|(name, a)| (name.clone(), a.tenants.clone()))
    };
    if let Some((name, tenants)) = of(known.approvers) {
        return Some(Caller::Approver {
            name,
            tenants,
            signed_in: None,
        });
    }
    of(known.viewers).map(|(name, tenants)| Caller::Viewer { name, tenants })
}
