//! Human approval of risky calls: when a `tools/call` needs approvers, and
//! what an approval binds.
//!
//! A call needs approval when the policy's decision says `require_approval`
//! or its risk tier is named in `approvals.require` (the larger number of
//! approvers wins). The approval filter runs last in the chain, so a held
//! call has passed every other guard and its bytes are final; it notes the
//! need, and `plan_request` never forwards a noted call: the gateway asks
//! the control agent and either forwards those exact bytes (an approval was
//! claimed) or answers with where to approve.
//!
//! An approval binds the principal (tenant and id), the server, the tool and
//! a digest of the arguments as the upstream would receive them, compared as
//! JSON values (member order, whitespace and `1.0` vs `1` do not make a call
//! new; any other change does).

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use warden_config::access::{Risk, ServerCatalog};
use warden_config::guards::Approvals;

use crate::filter::{Acts, Decision, Exchange, McpFilter, Message, Methods, Notes};
use crate::jsonrpc::Kind;

/// A call that may go on only once approved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalNeed {
    /// Distinct approvers needed.
    pub approvers: u8,
    /// Why (the policy's reason, or `risk_tier:<TIER>`).
    pub reason: String,
    pub risk: Risk,
    pub tool: String,
    /// `sha256:<hex>` of the canonical arguments (`{}` when absent).
    pub args_digest: String,
    /// The canonical arguments, shown to approvers (after the chain's
    /// redactions: what the upstream would receive).
    pub arguments: String,
    /// `sha256:<hex>` binding principal, server, tool and arguments.
    pub binding: String,
}

/// The binding of a call: a digest of length-prefixed parts, so no two
/// tuples spell the same.
pub fn binding(
    tenant: &str,
    principal: &str,
    server: &str,
    tool: &str,
    args_digest: &str,
) -> String {
    let mut h = Sha256::new();
    for part in [tenant, principal, server, tool, args_digest] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// Notes the approval a `tools/call` needs (see the module docs).
#[derive(Debug)]
pub struct ApprovalFilter {
    approvals: Approvals,
    catalog: HashMap<String, ServerCatalog>,
}

impl ApprovalFilter {
    /// `None` when nothing can need approval: no tier requires it and no
    /// policy can ask (`policy_asks`: the bundle has a policy).
    pub fn new(
        approvals: &Approvals,
        catalog: &HashMap<String, ServerCatalog>,
        policy_asks: bool,
    ) -> Option<Self> {
        (policy_asks || approvals.require.iter().any(|n| *n > 0)).then(|| ApprovalFilter {
            approvals: approvals.clone(),
            catalog: catalog.clone(),
        })
    }
}

impl McpFilter for ApprovalFilter {
    fn name(&self) -> &'static str {
        "approval"
    }

    fn acts_on(&self) -> Acts {
        Acts {
            requests: Methods::Only(&["tools/call"]),
            responses: Methods::None,
        }
    }

    fn on_request(&self, msg: &Message<'_>, ex: &Exchange<'_>, notes: &mut Notes) -> Decision {
        let env = msg.envelope;
        if env.kind != Kind::Request || env.method.as_deref() != Some("tools/call") {
            return Decision::Pass;
        }
        let tool = env.name.as_deref().unwrap_or_default();
        let risk = self
            .catalog
            .get(ex.server)
            .map_or(ServerCatalog::default().default_risk, |c| c.risk(tool));
        let by_tier = self.approvals.required(risk);
        let asked = notes.approval_asked.take();
        let by_policy = asked.as_ref().map_or(0, |a| a.approvers);
        if by_tier == 0 && by_policy == 0 {
            return Decision::Pass;
        }
        let reason = match &asked {
            Some(a) if a.approvers >= by_tier => a.reason.to_string(),
            _ => format!("risk_tier:{}", risk.as_str()),
        };
        let arguments = match msg.arguments() {
            Some(v) => crate::runaway::canonical(v).to_string(),
            None => "{}".to_owned(),
        };
        let args_digest = crate::mrtr::args_digest(&arguments);
        notes.approval = Some(ApprovalNeed {
            approvers: by_tier.max(by_policy),
            reason,
            risk,
            tool: tool.to_owned(),
            binding: binding(
                &ex.principal.tenant,
                &ex.principal.id,
                ex.server,
                tool,
                &args_digest,
            ),
            args_digest,
            arguments,
        });
        Decision::Pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Principal;
    use crate::jsonrpc::{parse, ParseLimits, Parsed};

    fn need(f: &ApprovalFilter, who: &Principal, body: &str) -> Option<ApprovalNeed> {
        let Ok(Parsed::Single(env)) = parse(body.as_bytes(), ParseLimits::default()) else {
            panic!("parse {body}")
        };
        let ex = Exchange::new(who, "ops");
        let mut notes = Notes::default();
        assert_eq!(
            f.on_request(&Message::new(&env, body.as_bytes()), &ex, &mut notes),
            Decision::Pass
        );
        notes.approval
    }

    fn named(tenant: &str, id: &str) -> Principal {
        Principal {
            id: id.into(),
            tenant: tenant.into(),
            ..Principal::anonymous()
        }
    }

    fn filter() -> ApprovalFilter {
        let mut cat = ServerCatalog::default();
        cat.tools.insert(
            "deploy".into(),
            warden_config::access::ToolEntry {
                risk: Some(Risk::Critical),
                cost: 1,
                input_schema: None,
                output_schema: None,
                fingerprints: Vec::new(),
                url_arguments: Vec::new(),
                egress_allow: Vec::new(),
                scopes: Vec::new(),
            },
        );
        let mut approvals = Approvals::default();
        approvals.require[Risk::High as usize] = 1;
        approvals.require[Risk::Critical as usize] = 2;
        ApprovalFilter::new(&approvals, &HashMap::from([("ops".into(), cat)]), false)
            .expect("tiers require approval")
    }

    #[test]
    fn a_binding_follows_the_arguments_as_values_and_the_principal() {
        let f = filter();
        let alice = named("acme", "alice");
        let call = |args: &str| {
            format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"deploy","arguments":{args}}}}}"#
            )
        };
        let a = need(&f, &alice, &call(r#"{"env":"prod","n":1}"#)).expect("critical");
        assert_eq!(a.approvers, 2);
        assert_eq!(a.reason, "risk_tier:CRITICAL");
        // Order, whitespace and an integral float are the same call.
        let b = need(&f, &alice, &call(r#"{ "n" : 1.0, "env":"prod"}"#)).expect("critical");
        assert_eq!(a.binding, b.binding);
        // Another value, another principal: another binding.
        let c = need(&f, &alice, &call(r#"{"env":"prod","n":2}"#)).expect("critical");
        assert_ne!(a.binding, c.binding);
        let bob = named("acme", "bob");
        let d = need(&f, &bob, &call(r#"{"env":"prod","n":1}"#)).expect("critical");
        assert_ne!(a.binding, d.binding);
        // An escaped key is the same key to the upstream's parser.
        let e = need(&f, &alice, &call(r#"{"\u0065nv":"prod","n":1}"#)).expect("critical");
        assert_eq!(a.binding, e.binding);
        // A low-risk tool needs nothing.
        let low = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#;
        assert_eq!(need(&f, &alice, low), None);
    }

    #[test]
    fn parts_cannot_run_into_each_other() {
        assert_ne!(
            binding("a", "bc", "s", "t", "d"),
            binding("ab", "c", "s", "t", "d")
        );
    }
}
