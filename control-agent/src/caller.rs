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
    Approver { name: String, tenants: Vec<String> },
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
        return Some(Caller::Approver { name, tenants });
    }
    of(known.viewers).map(|(name, tenants)| Caller::Viewer { name, tenants })
}

pub struct Tokens {
    /// SHA-256 of the admin token.
    admin: [u8; 32],
    /// SHA-256 of the fleet token (gateways).
    fleet: [u8; 32],
    /// Gateways with a token of their own (`--gateways`): SHA-256 of the
    /// token → the gateway id it speaks for, alone.
    gateways: std::collections::HashMap<[u8; 32], String>,
    /// SHA-256 of the token `/metrics` asks for (`--metrics-token`); `None`:
    /// `/metrics` is open.
    metrics: Option<[u8; 32]>,
}

/// Reads the gateways file (`--gateways`): a YAML map of gateway id →
/// SHA-256 (64 hex) of that gateway's token.
pub fn read_gateway_tokens(
    path: &std::path::Path,
) -> anyhow::Result<std::collections::BTreeMap<String, [u8; 32]>> {
    let text = std::fs::read_to_string(path)?;
    let raw: std::collections::BTreeMap<String, String> = serde_yaml_ng::from_str(&text)?;
    let empty: [u8; 32] = Sha256::digest(b"").into();
    raw.into_iter()
        .map(|(id, hexd)| {
            if !crate::audit::valid_gateway(&id) {
                anyhow::bail!(
                    "{}: gateway id `{id}` must be 1-128 visible ASCII characters",
                    path.display()
                );
            }
            let d: [u8; 32] = hex::decode(hexd.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .filter(|d| *d != empty)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "{}: `{id}` must map to the SHA-256 (64 hex) of the gateway's token",
                        path.display()
                    )
                })?;
            Ok((id, d))
        })
        .collect()
}

impl Tokens {
    pub fn new(admin: &str, fleet: &str) -> Tokens {
        Tokens {
            admin: Sha256::digest(admin.as_bytes()).into(),
            fleet: Sha256::digest(fleet.as_bytes()).into(),
            gateways: Default::default(),
            metrics: None,
        }
    }

    /// `/metrics` answers only with this token (or the admin's).
    pub fn with_metrics_token(mut self, token: Option<&str>) -> Self {
        self.metrics = token.map(|t| Sha256::digest(t.as_bytes()).into());
        self
    }

    /// Whether a request may read `/metrics`: any request while it is
    /// open; else one with the metrics token or the admin token.
    pub(crate) fn reads_metrics(&self, authorization: Option<&http::HeaderValue>) -> bool {
        let Some(want) = self.metrics else {
            return true;
        };
        authorization
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| <[u8; 32]>::from(Sha256::digest(t.trim().as_bytes())))
            .is_some_and(|d| d == want || d == self.admin)
    }

    /// Gateways that each have a token of their own: id → SHA-256 of it.
    /// Such an id can be spoken for by its token alone (never by the
    /// shared fleet token, nor another gateway's).
    pub fn with_gateways(mut self, gateways: impl IntoIterator<Item = (String, [u8; 32])>) -> Self {
        self.gateways = gateways.into_iter().map(|(id, d)| (d, id)).collect();
        self
    }

    /// Whether a fleet request of `role` may speak for gateway `id`: a
    /// gateway's own token for its id alone; the shared fleet token (and
    /// an admin) for any id without a token of its own.
    pub(crate) fn speaks_for(&self, caller: &Caller, id: &str) -> Result<(), String> {
        match caller {
            Caller::Gateway(Some(own)) if own == id => Ok(()),
            Caller::Gateway(Some(own)) => Err(format!(
                "this token is gateway `{own}`'s: it cannot speak for gateway `{id}`"
            )),
            _ if self.gateways.values().any(|g| g == id) => Err(format!(
                "gateway `{id}` has a token of its own (--gateways): only that token speaks for it"
            )),
            _ => Ok(()),
        }
    }

    /// Whether `digest` is the admin token's.
    pub fn is_admin(&self, digest: &[u8; 32]) -> bool {
        *digest == self.admin
    }

    /// The gateway a token digest is: `Some(None)` the shared fleet
    /// token, `Some(Some(id))` gateway `id`'s own.
    pub(crate) fn gateway_of(&self, digest: &[u8; 32]) -> Option<Option<String>> {
        if *digest == self.fleet {
            Some(None)
        } else {
            self.gateways.get(digest).map(|id| Some(id.clone()))
        }
    }
}
