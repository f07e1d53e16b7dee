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
//! An approval binds the principal (tenant and id; an unauthenticated
//! caller's session or address, digested), the server, the tool and
//! a digest of the arguments as the upstream would receive them, in a
//! canonical text (members sorted, strings escaped one way, no whitespace,
//! numbers exactly as written): member order and whitespace do not make a
//! call new; any other change does, `1.0` for `1` and a digit past what a
//! double holds included (approvers see the numbers as the upstream will).
//! The rest of the params is bound too, as the server reads it: answers to
//! its input requests (`inputResponses`), `_meta` and any other member — a
//! released call carries nothing the approvers did not see — except the
//! per-request metadata a client sends anew on each attempt when it is a
//! short token ([`VOLATILE_META`]: a progress token, trace context).
//!
//! The number of approvers is the most any source asks: the policy, and
//! the tier of the tool's risk or any lower tier (`require: {HIGH: 1}`
//! holds CRITICAL calls too). A tool name the catalog knows only in
//! another case takes that entry's risk.

use std::collections::{BTreeMap, HashMap};

use sha2::{Digest, Sha256};
use warden_config::access::{Risk, ServerCatalog};
use warden_config::guards::Approvals;

use crate::chain::filter::{Acts, Decision, Exchange, McpFilter, Message, Methods, Notes};
use crate::protocol::jsonrpc::Kind;

pub use crate::chain::notes::ApprovalNeed;

/// Where a call may carry answers to a server's input requests.
static INPUT_RESPONSES: crate::chain::filter::Word =
    crate::chain::filter::Word::new("inputResponses");

/// `_meta` members a client makes anew for each request (a progress token,
/// W3C trace context): left out of an approval's binding while each is a
/// number or a string of at most [`VOLATILE_MAX`] bytes, so that a retry
/// of an approved call is the same call. Longer, they are bound as any
/// member (data does not ride in them unseen).
pub const VOLATILE_META: [&str; 4] = ["progressToken", "traceparent", "tracestate", "baggage"];

/// The longest volatile `_meta` string left out of a binding.
pub const VOLATILE_MAX: usize = 128;

/// The params of a call beyond its name, its arguments, its answers
/// (bound on their own) and the server's own `requestState`, canonical:
/// `_meta` without its volatile tokens, and any other member. `Some(None)`:
/// nothing else. `None`: unreadable.
fn other_params(raw: &str) -> Option<Option<String>> {
    use serde_json::value::RawValue;
    let members: BTreeMap<String, &RawValue> = serde_json::from_str(raw).ok()?;
    let mut out = String::new();
    for (k, v) in &members {
        if matches!(
            k.as_str(),
            "name" | "arguments" | "inputResponses" | "requestState"
        ) {
            continue;
        }
        let text = if k == "_meta" && v.get().trim_start().starts_with('{') {
            let meta: BTreeMap<String, &RawValue> = serde_json::from_str(v.get()).ok()?;
            let mut kept = String::new();
            for (mk, mv) in &meta {
                let volatile = VOLATILE_META.contains(&mk.as_str())
                    && match serde_json::from_str::<serde_json::Value>(mv.get()).ok()? {
                        serde_json::Value::Number(_) => true,
                        serde_json::Value::String(t) => t.len() <= VOLATILE_MAX,
                        _ => false,
                    };
                if volatile {
                    continue;
                }
                kept.push(if kept.is_empty() { '{' } else { ',' });
                kept.push_str(&serde_json::to_string(mk).ok()?);
                kept.push(':');
                kept.push_str(&canonical_text(mv.get())?);
            }
            if kept.is_empty() {
                continue;
            }
            kept.push('}');
            kept
        } else {
            canonical_text(v.get())?
        };
        out.push(if out.is_empty() { '{' } else { ',' });
        out.push_str(&serde_json::to_string(k).ok()?);
        out.push(':');
        out.push_str(&text);
    }
    if out.is_empty() {
        return Some(None);
    }
    out.push('}');
    Some(Some(out))
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

/// Who an approval of this exchange's call is bound to (see
/// [`ApprovalNeed::holder`]): the principal's id; for an unauthenticated
/// caller, the handles' owner (its session, or its address without one),
/// digested so the claim carries no session id.
fn holder_of(ex: &Exchange<'_>) -> String {
    use crate::engines::identity::AuthMethod;
    // Each kind of holder is spelled so no other can spell it: a layer's
    // ends `~layer`; an unauthenticated caller's is `anonymous~<16 hex>`;
    // any other principal's is its id, or, when the id holds a `~` (a
    // token's `sub` of `alice~layer`), its id and `~principal`.
    match ex.principal.auth {
        // A key a tenant's layer minted is not the org's (or the identity
        // provider's) principal of the same name: its approvals are its own.
        AuthMethod::LayerKey => return format!("{}~layer", ex.principal.id),
        AuthMethod::Anonymous => {}
        _ if ex.principal.id.contains('~') => return format!("{}~principal", ex.principal.id),
        _ => return ex.principal.id.clone(),
    }
    let owner = match ex.session_id {
        Some(s) => format!("{}\0session\0{s}", ex.principal.owner()),
        None => crate::guards::cursor::owner_of(ex.principal, None, ex.source_ip).into_owned(),
    };
    let d = Sha256::digest(owner.as_bytes());
    format!("{}~{}", ex.principal.id, &hex::encode(d)[..16])
}

/// `raw` JSON in the canonical text an approval binds (see the module docs);
/// `None` if it is not JSON.
pub fn canonical_text(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    write_canonical(raw, &mut out)?;
    Some(out)
}

fn write_canonical(raw: &str, out: &mut String) -> Option<()> {
    use serde_json::value::RawValue;
    match raw.trim_start().as_bytes().first()? {
        b'{' => {
            // The parser refused duplicate (and case-folded) names already.
            let members: BTreeMap<String, &RawValue> = serde_json::from_str(raw).ok()?;
            out.push('{');
            for (i, (k, v)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k).ok()?);
                out.push(':');
                write_canonical(v.get(), out)?;
            }
            out.push('}');
        }
        b'[' => {
            let items: Vec<&RawValue> = serde_json::from_str(raw).ok()?;
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v.get(), out)?;
            }
            out.push(']');
        }
        b'"' => {
            let s: String = serde_json::from_str(raw).ok()?;
            out.push_str(&serde_json::to_string(&s).ok()?);
        }
        // Numbers as written; true, false, null.
        _ => {
            let t = raw.trim();
            serde_json::from_str::<&RawValue>(t).ok()?;
            out.push_str(t);
        }
    }
    Some(())
}

/// Notes the approval a `tools/call` needs (see the module docs).
#[derive(Debug)]
pub struct ApprovalFilter {
    approvals: Approvals,
    catalog: HashMap<String, ServerCatalog>,
    /// Tenants' `approvals.require`, for calls in each tenant's scope.
    tenants: Vec<(String, [u8; 4])>,
    scope: std::sync::Arc<crate::guards::tenants::Scope>,
}

impl ApprovalFilter {
    /// `None` when nothing can need approval: no tier requires it and no
    /// policy can ask (`policy_asks`: the bundle has a policy).
    pub fn new(
        approvals: &Approvals,
        catalog: &HashMap<String, ServerCatalog>,
        policy_asks: bool,
    ) -> Option<Self> {
        Self::with_tenants(
            approvals,
            catalog,
            policy_asks,
            Vec::new(),
            Default::default(),
        )
    }

    /// As [`ApprovalFilter::new`], with tenants' tiers: a call in a
    /// tenant's scope needs the higher of the org's and the tenant's.
    pub fn with_tenants(
        approvals: &Approvals,
        catalog: &HashMap<String, ServerCatalog>,
        policy_asks: bool,
        tenants: Vec<(String, [u8; 4])>,
        scope: std::sync::Arc<crate::guards::tenants::Scope>,
    ) -> Option<Self> {
        let tenants: Vec<_> = tenants
            .into_iter()
            .filter(|(_, r)| r.iter().any(|n| *n > 0))
            .collect();
        (policy_asks || !tenants.is_empty() || approvals.require.iter().any(|n| *n > 0)).then(
            || ApprovalFilter {
                approvals: approvals.clone(),
                catalog: catalog.clone(),
                tenants,
                scope,
            },
        )
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
        let asked = notes.approval_asked.take();
        let mut require = self.approvals.require;
        let applying: smallvec::SmallVec<[&(String, [u8; 4]); 2]> = self
            .tenants
            .iter()
            .filter(|(t, _)| self.scope.applies(t, ex))
            .collect();
        for (_, r) in &applying {
            for (mine, theirs) in require.iter_mut().zip(r) {
                *mine = (*mine).max(*theirs);
            }
        }
        if asked.is_none() && require.iter().all(|n| *n == 0) {
            return Decision::Pass;
        }
        let tool = env.name.as_deref().unwrap_or_default();
        let risk = match self.catalog.get(ex.server) {
            None => ServerCatalog::default().default_risk,
            Some(c) if c.tools.contains_key(tool) => c.risk(tool),
            // Known only in another case: that entry's risk, or the
            // default if it is higher.
            Some(c) => c
                .tools
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(tool))
                .filter_map(|(_, t)| t.risk)
                .chain([c.default_risk])
                .max()
                .unwrap_or(c.default_risk),
        };
        // A tier asks at least what every lower tier asks.
        let by_tier = [Risk::Low, Risk::Medium, Risk::High, Risk::Critical]
            .into_iter()
            .filter(|r| *r <= risk)
            .map(|r| require[r as usize])
            .max()
            .unwrap_or(0);
        let by_policy = asked.as_ref().map_or(0, |a| a.approvers);
        if by_tier == 0 && by_policy == 0 {
            return Decision::Pass;
        }
        let reason = match &asked {
            Some(a) if a.approvers >= by_tier => a.reason.to_string(),
            _ => format!("risk_tier:{}", risk.as_str()),
        };
        let arguments = match msg.arguments_raw() {
            Some(raw) => match canonical_text(raw) {
                Some(t) => t,
                None => {
                    return Decision::Reject(crate::chain::filter::Denial::error(
                        crate::protocol::error::JsonRpcError::new(
                            crate::protocol::error::codes::INVALID_PARAMS,
                            "The arguments of a call that needs approval could not be read",
                        ),
                        "approval_arguments_unreadable",
                    ))
                }
            },
            None => "{}".to_owned(),
        };
        // A retry that answers the server's input requests
        // (`inputResponses`, 2026-07-28) is another call: the server acts
        // on the answers as on the arguments. Approvers see them, and an
        // approval of the call without them does not release it.
        let answers = if msg.may_hold(&INPUT_RESPONSES) {
            msg.value()
                .and_then(|v| v.get("params"))
                .and_then(|p| p.get("inputResponses"))
                .filter(|a| !a.is_null())
        } else {
            None
        };
        let arguments = match answers.map(|a| canonical_text(&a.to_string())) {
            None => arguments,
            Some(Some(a)) => format!("{{\"arguments\":{arguments},\"inputResponses\":{a}}}"),
            Some(None) => {
                return Decision::Reject(crate::chain::filter::Denial::error(
                    crate::protocol::error::JsonRpcError::new(
                        crate::protocol::error::codes::INVALID_PARAMS,
                        "The input answers of a call that needs approval could not be read",
                    ),
                    "approval_arguments_unreadable",
                ))
            }
        };
        // `_meta` and any other member reach the server as well, and so
        // does the URL's query: bound, and shown to approvers.
        let query = ex
            .query
            .filter(|q| !q.is_empty())
            .and_then(|q| serde_json::to_string(q).ok());
        let arguments = match (msg.params_raw().map(other_params), query) {
            (None | Some(Some(None)), None) => arguments,
            (None | Some(Some(None)), Some(q)) => {
                format!("{{\"call\":{arguments},\"query\":{q}}}")
            }
            (Some(Some(Some(rest))), None) => {
                format!("{{\"call\":{arguments},\"params\":{rest}}}")
            }
            (Some(Some(Some(rest))), Some(q)) => {
                format!("{{\"call\":{arguments},\"params\":{rest},\"query\":{q}}}")
            }
            (Some(None), _) => {
                return Decision::Reject(crate::chain::filter::Denial::error(
                    crate::protocol::error::JsonRpcError::new(
                        crate::protocol::error::codes::INVALID_PARAMS,
                        "The params of a call that needs approval could not be read",
                    ),
                    "approval_arguments_unreadable",
                ))
            }
        };
        let args_digest = crate::chain::plan::args_digest(&arguments);
        let holder = holder_of(ex);
        // A tenant whose own tier at this risk asks for approvers (its
        // layer, on a call in its scope) has its approvers decide it.
        let tier = |r: &[u8; 4]| {
            [Risk::Low, Risk::Medium, Risk::High, Risk::Critical]
                .into_iter()
                .filter(|x| *x <= risk)
                .map(|x| r[x as usize])
                .max()
                .unwrap_or(0)
        };
        // The caller's own tenant's approvers decide by default; listing it
        // would ask one approver to see every tenant named.
        // A tenant whose Rego asked (on a call in its scope) decides too.
        // A layer applies to the caller's tenant by its canonical form
        // (`financé` is held to `finance`'s rules: merging spellings only
        // adds rules), but whose call it is to read and decide goes by the
        // strict key (`financé` is not `finance`'s): such a layer's hold
        // is the caller's own tenant's to decide, unless it owns the
        // server called.
        let own = warden_config::person::tenant_key(&ex.principal.tenant);
        let theirs = |t: &str| {
            warden_config::person::tenant_key(t) != own
                && (self.scope.owner(ex.server) == Some(t) || t != ex.principal.canonical_tenant())
        };
        let mut for_tenants: Vec<String> = applying
            .iter()
            .filter(|(t, r)| tier(r) > 0 && theirs(t))
            .map(|(t, _)| t.clone())
            .collect();
        for t in asked.iter().flat_map(|a| a.tenants.iter()) {
            if theirs(t) && !for_tenants.iter().any(|x| **x == **t) {
                for_tenants.push(t.to_string());
            }
        }
        // When the org's own rules hold the call too (its tier at this
        // risk, its Rego, its flows), the caller's tenant's approvers
        // decide beside the tenants named: naming them must not take the
        // org's hold out of its approvers' hands.
        let org_asks = tier(&self.approvals.require) > 0 || asked.as_ref().is_some_and(|a| a.org);
        if org_asks && !for_tenants.is_empty() && !for_tenants.contains(&ex.principal.tenant) {
            for_tenants.push(ex.principal.tenant.clone());
        }
        notes.approval = Some(ApprovalNeed {
            approvers: by_tier.max(by_policy),
            reason,
            risk,
            tool: tool.to_owned(),
            binding: binding(&ex.principal.tenant, &holder, ex.server, tool, &args_digest),
            args_digest,
            arguments,
            holder,
            for_tenants,
        });
        Decision::Pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engines::identity::Principal;
    use crate::protocol::jsonrpc::{parse, ParseLimits, Parsed};

    fn need(f: &ApprovalFilter, who: &Principal, body: &str) -> Option<ApprovalNeed> {
        need_at(f, who, body, None)
    }

    /// As [`need`], the request's URL carrying `query`.
    fn need_at(
        f: &ApprovalFilter,
        who: &Principal,
        body: &str,
        query: Option<&str>,
    ) -> Option<ApprovalNeed> {
        let Ok(Parsed::Single(env)) = parse(body.as_bytes(), ParseLimits::default()) else {
            panic!("parse {body}")
        };
        let ex = Exchange {
            query,
            ..Exchange::new(who, "ops")
        };
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
                ..Default::default()
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
        // Order and whitespace make no new call.
        let b = need(&f, &alice, &call(r#"{ "n" : 1, "env":"prod"}"#)).expect("critical");
        assert_eq!(a.binding, b.binding);
        assert_eq!(b.arguments, r#"{"env":"prod","n":1}"#);
        // Numbers are bound as written: no two values share a digest by
        // rounding to the same double.
        let big = need(
            &f,
            &alice,
            &call(r#"{"env":"prod","n":10000000000000000001}"#),
        )
        .expect("c");
        let big2 = need(
            &f,
            &alice,
            &call(r#"{"env":"prod","n":10000000000000000000}"#),
        )
        .expect("c");
        assert_ne!(big.binding, big2.binding);
        assert!(big.arguments.contains("10000000000000000001"));
        let float = need(&f, &alice, &call(r#"{"env":"prod","n":1.0}"#)).expect("c");
        assert_ne!(a.binding, float.binding);
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
        // Answers to the server's input requests make another call, and
        // approvers see them beside the arguments.
        let answered = |answers: &str| {
            format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"deploy","arguments":{{"env":"prod","n":1}},"requestState":"wm1.x","inputResponses":{answers}}}}}"#
            )
        };
        let held = |answers: &str| need(&f, &alice, &answered(answers)).expect("critical");
        let g = held(r#"{"confirm":{"action":"accept","content":{"amount":50000}}}"#);
        assert_ne!(a.binding, g.binding);
        assert!(g.arguments.contains("50000"), "{}", g.arguments);
        assert!(g
            .arguments
            .starts_with(r#"{"arguments":{"env":"prod","n":1},"inputResponses":"#));
        let h = held(r#"{"confirm":{"action":"accept","content":{"amount":5}}}"#);
        assert_ne!(g.binding, h.binding);
        // The same answers in another order or spacing: the same call.
        let i = held(r#"{ "confirm" : {"content":{"amount":50000},"action":"accept"}}"#);
        assert_eq!(g.binding, i.binding);
        // Another case of a known name keeps its risk.
        let upper = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"DEPLOY"}}"#;
        assert_eq!(need(&f, &alice, upper).map(|n| n.approvers), Some(2));
    }

    /// `_meta` and any other member of the params reach the server with
    /// the arguments: an approval binds them (a released call carries
    /// nothing approvers did not see), all but the short per-request
    /// tokens a client makes anew on a retry (progress, trace context).
    #[test]
    fn the_rest_of_the_params_is_bound_but_per_request_tokens() {
        let f = filter();
        let alice = named("acme", "alice");
        let call = |rest: &str| {
            format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"deploy","arguments":{{"env":"prod"}}{rest}}}}}"#
            )
        };
        let bind = |rest: &str| need(&f, &alice, &call(rest)).expect("critical");
        let plain = bind("");
        assert_eq!(plain.arguments, r#"{"env":"prod"}"#);
        for same in [
            r#","_meta":{"progressToken":7}"#,
            r#","_meta":{"progressToken":"p-2"}"#,
            r#","_meta":{"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","tracestate":"a=b"}"#,
            r#","_meta":{}"#,
        ] {
            assert_eq!(bind(same).binding, plain.binding, "{same}");
        }
        let long = "x".repeat(VOLATILE_MAX + 1);
        for other in [
            r#","_meta":{"note":"employee 7 salary 212000"}"#.to_owned(),
            r#","_meta":{"progressToken":7,"note":"x"}"#.to_owned(),
            format!(r#","_meta":{{"progressToken":"{long}"}}"#),
            r#","_meta":{"progressToken":{"d":"employee 7"}}"#.to_owned(),
            r#","_meta":"employee 7""#.to_owned(),
            r#","task":{"ttl":60000}"#.to_owned(),
        ] {
            let b = bind(&other);
            assert_ne!(b.binding, plain.binding, "{other}");
            assert!(
                b.arguments
                    .starts_with(r#"{"call":{"env":"prod"},"params":{"#),
                "approvers see it: {}",
                b.arguments
            );
        }
        // The URL's query reaches the server too: bound, and shown.
        let q = need_at(&f, &alice, &call(""), Some("d=employee-7")).expect("critical");
        assert_ne!(q.binding, plain.binding);
        assert_eq!(
            q.arguments,
            r#"{"call":{"env":"prod"},"query":"d=employee-7"}"#
        );
        assert_eq!(
            need_at(&f, &alice, &call(""), Some("")).expect("c").binding,
            plain.binding
        );
        // Member order and escapes in `_meta` make no new call.
        assert_eq!(
            bind(r#","_meta":{"a":1,"b":2}"#).binding,
            bind(r#","_meta":{"b":2,"\u0061":1}"#).binding
        );
    }

    #[test]
    fn a_tier_asks_at_least_what_lower_tiers_ask() {
        let mut approvals = Approvals::default();
        approvals.require[Risk::High as usize] = 1;
        let f = ApprovalFilter::new(
            &approvals,
            &HashMap::from([("ops".into(), filter().catalog["ops"].clone())]),
            false,
        )
        .expect("filter");
        let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"deploy","arguments":{}}}"#;
        assert_eq!(
            need(&f, &Principal::anonymous(), call).map(|n| n.approvers),
            Some(1),
            "CRITICAL is held by the HIGH requirement"
        );
    }

    #[test]
    fn parts_cannot_run_into_each_other() {
        assert_ne!(
            binding("a", "bc", "s", "t", "d"),
            binding("ab", "c", "s", "t", "d")
        );
    }

    /// Unauthenticated callers are many under one id: an approval binds
    /// each to its session (or address), so one never takes an approval
    /// granted to another's identical call; named principals bind by id.
    #[test]
    fn anonymous_callers_are_bound_apart() {
        let f = filter();
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"deploy","arguments":{"env":"prod"}}}"#;
        let Ok(Parsed::Single(env)) = parse(body.as_bytes(), ParseLimits::default()) else {
            panic!("parse")
        };
        let anon = Principal::anonymous();
        let bind = |session: Option<&str>, ip: &str| {
            let ex = Exchange {
                session_id: session,
                source_ip: Some(ip.parse().expect("ip")),
                ..Exchange::new(&anon, "ops")
            };
            let mut notes = Notes::default();
            f.on_request(&Message::new(&env, body.as_bytes()), &ex, &mut notes);
            let n = notes.approval.expect("held");
            assert!(!n.holder.contains(session.unwrap_or("-")), "{}", n.holder);
            n.binding
        };
        assert_ne!(bind(Some("s1"), "10.0.0.1"), bind(Some("s2"), "10.0.0.1"));
        assert_ne!(bind(None, "10.0.0.1"), bind(None, "10.0.0.2"));
        assert_eq!(bind(Some("s1"), "10.0.0.1"), bind(Some("s1"), "10.0.0.9"));
        let alice = Principal {
            auth: crate::engines::identity::AuthMethod::ApiKey,
            ..named("acme", "alice")
        };
        let a = need(&f, &alice, body).expect("held");
        assert_eq!(a.holder, "alice");
        // A layer's key of that name is someone else.
        let minted = Principal {
            auth: crate::engines::identity::AuthMethod::LayerKey,
            ..named("acme", "alice")
        };
        let m = need(&f, &minted, body).expect("held");
        assert_ne!(m.binding, a.binding);
        // No token subject spells another kind's holder: `alice~layer`
        // from an identity provider is not the layer's `alice`, nor is
        // `anonymous~<digest>` an unauthenticated caller.
        let jwt = |tenant: &str, id: &str| Principal {
            auth: crate::engines::identity::AuthMethod::Jwt,
            ..named(tenant, id)
        };
        let forged = need(&f, &jwt("acme", "alice~layer"), body).expect("held");
        assert_ne!(forged.holder, m.holder);
        assert_ne!(forged.binding, m.binding);
        let anon = need(&f, &Principal::anonymous(), body).expect("held");
        let forged = need(&f, &jwt(&anon_tenant(), &anon.holder), body).expect("held");
        assert_ne!(forged.holder, anon.holder);
        assert_ne!(forged.binding, anon.binding);
    }

    fn anon_tenant() -> String {
        Principal::anonymous().tenant
    }

    /// A credential named as the unauthenticated caller opens none of its
    /// handles (its owner key is its own).
    #[test]
    fn a_principal_named_anonymous_is_not_the_anonymous_caller() {
        let anon = Principal::anonymous();
        for auth in [
            crate::engines::identity::AuthMethod::Jwt,
            crate::engines::identity::AuthMethod::ApiKey,
            crate::engines::identity::AuthMethod::Mtls,
        ] {
            let named = Principal {
                auth,
                ..Principal::anonymous()
            };
            assert_ne!(named.owner(), anon.owner(), "{auth:?}");
        }
        // Spelled another way it is still not the anonymous caller.
        let shouty = Principal {
            auth: crate::engines::identity::AuthMethod::Jwt,
            id: "ANONYMOUS".into(),
            tenant: "Default".into(),
            ..Principal::anonymous()
        };
        assert_ne!(shouty.owner(), anon.owner());
    }
}
