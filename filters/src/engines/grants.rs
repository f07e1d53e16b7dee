//! Just-in-time grants: a role or a tool given to one principal for a
//! stated time, approved at the control agent like a held call. The
//! gateway holds the fleet's current grants ([`Grants`], replaced whole
//! from the agent every few seconds) and hands the policy those of the
//! calling principal that have not expired (`input.principal.grants`):
//! a grant ends at its `expires_at` on every gateway by its own clock,
//! whether or not the agent is reachable then.
//!
//! Grants are keyed by the principal's strict key
//! ([`Principal::owner`]): a grant to `alice` reaches `ALICE` of the same
//! tenant and never `ａｌｉｃｅ`, nor a principal a tenant's layer minted
//! under that name (access widens only for the exact principal it was
//! given to).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use super::identity::{AuthMethod, Principal};

use warden_config::model::{MemoryBudget, Table};

/// One grant, as the agent lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The approval that gave it (`ap_…`).
    pub id: String,
    pub tenant: String,
    pub principal: String,
    /// `role` or `tool`.
    pub kind: String,
    /// The role, or the tool's name.
    pub name: String,
    /// The tool's server (a `tool` grant), if it names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Seconds since the epoch.
    pub expires_at: u64,
}

impl Grant {
    /// The principal key a grant is held under ([`holder_key`]).
    fn key(&self) -> String {
        holder_key(&self.tenant, &self.principal)
    }

    /// Whether it still holds at `now`.
    pub fn live(&self, now: SystemTime) -> bool {
        now.duration_since(std::time::UNIX_EPOCH)
            .is_ok_and(|d| d.as_secs() < self.expires_at)
    }
}

/// The key a grant to `tenant`/`principal` is held under: the owner key
/// ([`Principal::owner`]) of the authenticated principal of that tenant
/// and id, spelled by that one function so the two never differ. A grant
/// to `default`/`anonymous` (a token whose subject is `anonymous` and
/// names no tenant) is keyed as that principal's, which is not the
/// unauthenticated caller's key: a strict key alone would hand it to
/// every caller who presents no credential. The agent compares the
/// principals an approver is by it (who may ask a grant for whom).
pub fn holder_key(tenant: &str, principal: &str) -> String {
    Principal {
        id: principal.to_owned(),
        tenant: tenant.to_owned(),
        auth: AuthMethod::ApiKey,
        ..Principal::anonymous()
    }
    .owner()
    .to_owned()
}

/// The fleet's grants, by principal key: at most `limit` of them and
/// `limit` times [`Table::Grants`]' entry size in bytes, the table's share
/// of the memory budget (`limits.memory`).
pub struct Grants {
    by_key: ArcSwap<HashMap<String, Vec<Grant>>>,
    limit: usize,
    byte_limit: usize,
}

impl Default for Grants {
    fn default() -> Self {
        Grants::new(MemoryBudget::default().entries(Table::Grants) as usize)
    }
}

/// What a grant costs in the table: its strings (twice its key's) beside
/// the fixed part, counted as [`Table::Grants`]' entry size is.
fn cost(g: &Grant) -> usize {
    160 + g.id.len()
        + 2 * (g.tenant.len() + g.principal.len())
        + g.kind.len()
        + g.name.len()
        + g.server.as_ref().map_or(0, String::len)
}

impl std::fmt::Debug for Grants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grants").field("held", &self.len()).finish()
    }
}

impl Grants {
    /// A table of at most `limit` grants (and `limit` entries' bytes).
    pub fn new(limit: usize) -> Grants {
        Grants {
            by_key: ArcSwap::default(),
            limit,
            byte_limit: limit.saturating_mul(Table::Grants.entry_bytes() as usize),
        }
    }

    /// The most grants it holds.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Replaces every grant with `all` (those already expired at `now`
    /// left out; past its bound in grants or in bytes, those ending last
    /// kept).
    pub fn replace(&self, mut all: Vec<Grant>, now: SystemTime) {
        all.retain(|g| g.live(now) && (g.kind == "role" || g.kind == "tool"));
        if all.len() > self.limit || all.iter().map(cost).sum::<usize>() > self.byte_limit {
            all.sort_by_key(|g| std::cmp::Reverse(g.expires_at));
            let mut bytes = 0;
            let keep = all
                .iter()
                .take(self.limit)
                .take_while(|g| {
                    bytes += cost(g);
                    bytes <= self.byte_limit
                })
                .count();
            all.truncate(keep);
        }
        let mut by_key: HashMap<String, Vec<Grant>> = HashMap::new();
        for g in all {
            by_key.entry(g.key()).or_default().push(g);
        }
        for v in by_key.values_mut() {
            v.sort_by(|a, b| a.id.cmp(&b.id));
        }
        self.by_key.store(Arc::new(by_key));
    }

    /// The grants of `p` that hold at `now`, in a stable order. An
    /// unauthenticated caller has none: no one asks a grant for whoever
    /// presents no credential.
    pub fn of(&self, p: &Principal, now: SystemTime) -> Vec<Grant> {
        if p.auth == AuthMethod::Anonymous {
            return Vec::new();
        }
        let all = self.by_key.load();
        match all.get(p.owner()) {
            Some(v) => v.iter().filter(|g| g.live(now)).cloned().collect(),
            None => Vec::new(),
        }
    }

    /// Grants held (a gauge).
    pub fn len(&self) -> usize {
        self.by_key.load().values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn grant(tenant: &str, principal: &str, name: &str, until: u64) -> Grant {
        Grant {
            id: format!("ap_{name}"),
            tenant: tenant.into(),
            principal: principal.into(),
            kind: "tool".into(),
            name: name.into(),
            server: None,
            expires_at: until,
        }
    }

    fn principal(tenant: &str, id: &str) -> Principal {
        crate::guards::tenant_fixture::principal(tenant, id, &[])
    }

    /// A grant reaches its principal (any ASCII case) until it expires,
    /// and no other principal, no look-alike, no other tenant's namesake.
    #[test]
    fn a_grant_reaches_its_principal_until_it_expires() {
        let g = Grants::default();
        let t = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        g.replace(
            vec![
                grant("acme", "alice", "deploy", 1_000),
                grant("acme", "alice", "old", 10),
                grant("acme", "bob", "x", 1_000),
            ],
            t(100),
        );
        assert_eq!(g.len(), 2, "the expired one is not kept");
        let names =
            |p: &Principal, now| g.of(p, now).into_iter().map(|x| x.name).collect::<Vec<_>>();
        assert_eq!(names(&principal("acme", "alice"), t(100)), ["deploy"]);
        assert_eq!(names(&principal("ACME", "Alice"), t(100)), ["deploy"]);
        assert!(names(&principal("acme", "alice"), t(1_000)).is_empty());
        assert!(names(&principal("acme", "\u{ff41}lice"), t(100)).is_empty());
        assert!(names(&principal("globex", "alice"), t(100)).is_empty());
        let minted = Principal {
            auth: crate::engines::identity::AuthMethod::LayerKey,
            ..principal("acme", "alice")
        };
        assert!(names(&minted, t(100)).is_empty());
        // Replaced whole: a revoked grant is gone.
        g.replace(vec![], t(100));
        assert!(names(&principal("acme", "alice"), t(100)).is_empty());
    }

    /// A grant asked for `default`/`anonymous` (a token whose subject is
    /// `anonymous` and names no tenant) is that principal's, never every
    /// unauthenticated caller's: the unauthenticated caller holds no
    /// grant, whatever the list says.
    #[test]
    fn no_grant_reaches_an_unauthenticated_caller() {
        let g = Grants::default();
        let now = UNIX_EPOCH + Duration::from_secs(1);
        g.replace(
            vec![
                grant(
                    warden_config::person::NO_TENANT,
                    "anonymous",
                    "deploy",
                    1_000,
                ),
                grant("DEFAULT", "Anonymous", "purge", 1_000),
            ],
            now,
        );
        assert!(g.of(&Principal::anonymous(), now).is_empty());
        assert!(g.of(&Principal::shared_anonymous(), now).is_empty());
        let named = Principal {
            auth: AuthMethod::Jwt,
            ..Principal::anonymous()
        };
        let names: Vec<String> = g.of(&named, now).into_iter().map(|x| x.name).collect();
        assert_eq!(names, ["deploy", "purge"]);
        // The key the agent compares an approver's principals by is the
        // one the table holds grants under.
        assert_eq!(
            holder_key("acme", "alice"),
            principal("ACME", "Alice").owner()
        );
        assert_eq!(
            holder_key(warden_config::person::NO_TENANT, "anonymous"),
            named.owner()
        );
        assert_ne!(
            holder_key("acme", "\u{ff41}lice"),
            principal("acme", "alice").owner()
        );
    }

    /// Past the bound the grants ending last are kept; a kind the policy
    /// contract does not name is not.
    #[test]
    fn the_table_is_bounded() {
        const MAX_GRANTS: usize = 1000;
        let g = Grants::new(MAX_GRANTS);
        let now = UNIX_EPOCH + Duration::from_secs(1);
        let mut all: Vec<Grant> = (0..MAX_GRANTS as u64 + 5)
            .map(|i| grant("t", &format!("p{i}"), "x", 100 + i))
            .collect();
        all.push(Grant {
            kind: "admin".into(),
            ..grant("t", "q", "x", 10_000_000)
        });
        g.replace(all, now);
        assert_eq!(g.len(), MAX_GRANTS);
        assert!(g.of(&principal("t", "p0"), now).is_empty());
        assert_eq!(
            g.of(&principal("t", &format!("p{}", MAX_GRANTS + 4)), now)
                .len(),
            1
        );
        assert!(g.of(&principal("t", "q"), now).is_empty());
    }

    /// Grants with long strings count for their bytes: a table of 1,000
    /// keeps fewer of them than 1,000, the ones ending last, within its
    /// bytes; the default table's bound is its share of the budget.
    #[test]
    fn the_table_is_bounded_in_bytes() {
        let g = Grants::new(1000);
        let now = UNIX_EPOCH + Duration::from_secs(1);
        let long = "x".repeat(4000);
        let all: Vec<Grant> = (0..1000u64)
            .map(|i| grant("t", &format!("p{i}"), &long, 100 + i))
            .collect();
        g.replace(all, now);
        let bytes = 1000 * Table::Grants.entry_bytes() as usize;
        assert!(g.len() < 1000 && !g.is_empty(), "{}", g.len());
        assert!(g.len() * (160 + 4000) <= bytes, "{}", g.len());
        assert_eq!(g.of(&principal("t", "p999"), now).len(), 1);
        assert!(g.of(&principal("t", "p0"), now).is_empty());
        assert_eq!(
            Grants::default().limit() as u64,
            MemoryBudget::default().entries(Table::Grants)
        );
    }
}
