//! Tenant layers at the gateway (`docs/governance.md`): which tenants'
//! rules apply to a call ([`Scope`]), a tenant's guards run only for calls
//! in its scope ([`Scoped`]), and a tenant's Rego decision composed with
//! the org's ([`TenantPolicies`]): a call is allowed only when the org and
//! every applicable tenant allow it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::chain::filter::{Acts, Decision, Exchange, McpFilter, Message, Notes};
use crate::engines::identity::Principal;
use crate::engines::policy::{PolicyDecision, PolicyEngine, PolicyInput};
use crate::protocol::error::{codes, JsonRpcError, Refusal};

/// The reason of [`Scope::withheld_refusal`].
pub const WITHHELD: &str = "tenant_layer_withheld";

/// 403, reason [`WITHHELD`]: `tenant`'s layer is withheld (`why`, as the
/// agent recorded it, is not shown to the caller: it names the org's
/// config).
fn withheld_refusal(tenant: &str, _why: &str) -> Refusal {
    Refusal::new(
        403,
        WITHHELD,
        JsonRpcError::new(
            codes::DENIED,
            format!(
                "tenant `{tenant}`'s layer is withheld: it does not compose with the org's configuration, and its principals' calls are refused until it does again"
            ),
        )
        .with_data(serde_json::json!({"reason": WITHHELD, "tenant": tenant})),
    )
}

/// Who owns which server, which tenants have layers, and which tenants'
/// layers are withheld.
#[derive(Debug, Default)]
pub struct Scope {
    /// Owning tenant by server name.
    owners: HashMap<String, String>,
    /// `<tenant>@<revision>` of each layer, by tenant.
    labels: Vec<(String, String)>,
    /// Tenants whose layer the bundle withholds (it did not compose with
    /// the org's config), and why.
    withheld: BTreeMap<String, String>,
}

impl Scope {
    pub fn new(owners: HashMap<String, String>, labels: Vec<(String, String)>) -> Self {
        Scope {
            owners,
            labels,
            withheld: BTreeMap::new(),
        }
    }

    /// With the tenants whose layer is withheld
    /// (`warden_config::tenants::Tenants::withheld`).
    pub fn with_withheld(mut self, withheld: BTreeMap<String, String>) -> Self {
        self.withheld = withheld;
        self
    }

    /// The refusal of a call by `principal` when the layer of the tenant
    /// whose rules would judge it is withheld: the principal's tenant in
    /// canonical form, as rules apply (`FINANCE`, `ﬁnance` are held to
    /// `finance`'s rules, so they are refused with `finance`'s principals).
    /// Without its layer the org's rules alone would judge the call: fewer
    /// rules than the tenant asked for. Nothing of the tenant is served
    /// until a bundle carries its layer again.
    pub fn withheld_refusal(&self, principal: &Principal) -> Option<Refusal> {
        if self.withheld.is_empty() {
            return None;
        }
        let tenant = principal.canonical_tenant();
        let why = self.withheld.get(tenant)?;
        Some(withheld_refusal(tenant, why))
    }

    /// The tenants whose layer is withheld, and why.
    pub fn withheld(&self) -> &BTreeMap<String, String> {
        &self.withheld
    }

    /// The tenant owning `server`, if a layer defines it.
    pub fn owner(&self, server: &str) -> Option<&str> {
        self.owners.get(server).map(String::as_str)
    }

    /// Whether `tenant`'s rules apply to the exchange: the caller is one of
    /// its principals (canonical tenant), or the server belongs to it.
    pub fn applies(&self, tenant: &str, ex: &Exchange<'_>) -> bool {
        ex.principal.canonical_tenant() == tenant || self.owner(ex.server) == Some(tenant)
    }

    /// The layers that apply to the exchange, as audit records name them
    /// (`<tenant>@<layer revision>`).
    pub fn applicable(&self, ex: &Exchange<'_>) -> Vec<String> {
        self.applicable_to(ex.principal.canonical_tenant(), ex.server)
    }

    /// As [`Scope::applicable`], from a principal's canonical tenant and a server.
    pub fn applicable_to(&self, tenant: &str, server: &str) -> Vec<String> {
        self.labels
            .iter()
            .filter(|(t, _)| t == tenant || self.owner(server) == Some(t.as_str()))
            .map(|(_, l)| l.clone())
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.owners.is_empty()
    }

    /// Every tenant server and its owner.
    pub fn owners(&self) -> impl Iterator<Item = (&str, &str)> {
        self.owners.iter().map(|(s, t)| (s.as_str(), t.as_str()))
    }
}

/// A tenant's guard (its DLP rules, egress list, quotas): called only for
/// messages in the tenant's scope. It runs beside the org's own guard of
/// the same kind, never instead of it, so the stricter of the two decides.
pub struct Scoped {
    tenant: String,
    scope: Arc<Scope>,
    inner: Arc<dyn McpFilter>,
}

impl Scoped {
    pub fn new(tenant: String, scope: Arc<Scope>, inner: Arc<dyn McpFilter>) -> Self {
        Scoped {
            tenant,
            scope,
            inner,
        }
    }
}

impl McpFilter for Scoped {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn acts_on(&self) -> Acts {
        self.inner.acts_on()
    }

    fn on_request(&self, msg: &Message<'_>, ex: &Exchange<'_>, notes: &mut Notes) -> Decision {
        if self.scope.applies(&self.tenant, ex) {
            self.inner.on_request(msg, ex, notes)
        } else {
            Decision::Pass
        }
    }

    fn on_response(&self, msg: &Message<'_>, ex: &Exchange<'_>, notes: &mut Notes) -> Decision {
        if self.scope.applies(&self.tenant, ex) {
            self.inner.on_response(msg, ex, notes)
        } else {
            Decision::Pass
        }
    }

    fn judges_again(&self) -> bool {
        self.inner.judges_again()
    }

    fn rewrites_content(&self) -> bool {
        self.inner.rewrites_content()
    }

    fn judges_reply_again(&self) -> bool {
        self.inner.judges_reply_again()
    }
}

/// Each tenant's Rego, compiled on its own, and the scope that says which
/// apply to a call.
pub struct TenantPolicies {
    pub scope: Arc<Scope>,
    /// By tenant, in tenant order.
    pub engines: Vec<(String, Arc<PolicyEngine>)>,
}

impl TenantPolicies {
    /// The engines of the tenants whose rules apply to the exchange.
    pub fn applicable<'a>(
        &'a self,
        ex: &'a Exchange<'_>,
    ) -> impl Iterator<Item = &'a (String, Arc<PolicyEngine>)> + 'a {
        self.engines
            .iter()
            .filter(move |(t, _)| self.scope.applies(t, ex))
    }

    /// The org's decision composed with every applicable tenant's: denied
    /// when any denies (the reason names the tenant's policy), the most
    /// approvers any asks, every scope any names.
    pub fn compose(
        &self,
        org: PolicyDecision,
        input: &PolicyInput<'_>,
        ex: &Exchange<'_>,
    ) -> PolicyDecision {
        if !org.allow {
            return org;
        }
        let mut out = org;
        for (tenant, engine) in self.applicable(ex) {
            let d = engine.decide(input);
            out = compose(out, tenant, d);
            if !out.allow {
                return out;
            }
        }
        out
    }
}

/// `org` (allowed so far) and one tenant's decision `d`.
pub fn compose(org: PolicyDecision, tenant: &str, d: PolicyDecision) -> PolicyDecision {
    if !org.allow {
        return org;
    }
    if !d.allow {
        return PolicyDecision {
            allow: false,
            reason: format!("tenant_policy:{tenant}:{}", d.reason).into(),
            scopes: None,
            approval: None,
        };
    }
    // The tenant's ask names the tenant: its approvers decide.
    let theirs = d.approval.map(|mut b| {
        b.tenants = vec![tenant.into()];
        b.org = false;
        b
    });
    let approval = match (org.approval, theirs) {
        (Some(a), Some(b)) => Some(a.stricter(b)),
        (a, b) => a.or(b),
    };
    let scopes = match (org.scopes, d.scopes) {
        (Some(a), Some(b)) => {
            let mut v: Vec<String> = a.iter().cloned().collect();
            for s in b.iter() {
                if !v.contains(s) {
                    v.push(s.clone());
                }
            }
            Some(v.into())
        }
        (a, b) => a.or(b),
    };
    PolicyDecision {
        allow: true,
        reason: org.reason,
        scopes,
        approval,
    }
}

#[cfg(test)]
#[path = "tenants_tests.rs"]
mod tests;
