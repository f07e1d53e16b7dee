//! What a policy decides: [`PolicyDecision`] (allow, reason, step-up
//! scopes, the approval it asks for), read from the Rego value the
//! entrypoint returns.

use std::sync::Arc;

use regorus::Value;

/// The policy's verdict on one input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDecision {
    pub allow: bool,
    /// Stable reason from the policy (`rbac_role_missing` …) or from Warden
    /// (`policy_undefined`, `policy_error`, `policy_invalid_decision`).
    pub reason: Arc<str>,
    /// Step-up: OAuth scopes the caller's token must carry for an allowed
    /// call (the decision's `scopes`, an array, or `scope`, space-separated).
    pub scopes: Option<Arc<[String]>>,
    /// Human approval an allowed call needs first (`require_approval`:
    /// `true`, a number of approvers, or `{approvers, reason}`).
    pub approval: Option<ApprovalAsk>,
}

/// What a policy asks before an allowed call may go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalAsk {
    /// Distinct approvers needed (1 ..= `MAX_APPROVERS`).
    pub approvers: u8,
    pub reason: Arc<str>,
    /// The tenants whose own rules asked (their layer's Rego on a call in
    /// their scope); empty when only the org's did. Their approvers decide
    /// the call, not the caller's tenant's.
    pub tenants: Vec<Arc<str>>,
    /// Whether the org's own rules asked (its Rego, or its flows): then
    /// the caller's tenant's approvers decide beside any tenant's.
    pub org: bool,
}

impl ApprovalAsk {
    /// An ask of the org's rules.
    pub fn new(approvers: u8, reason: Arc<str>) -> Self {
        ApprovalAsk {
            approvers,
            reason,
            tenants: Vec::new(),
            org: true,
        }
    }

    /// Two asks of one call as one: the most approvers either asks (and
    /// that ask's reason), and every tenant either names.
    pub fn stricter(self, other: ApprovalAsk) -> ApprovalAsk {
        let (mut out, rest) = if other.approvers > self.approvers {
            (other, self)
        } else {
            (self, other)
        };
        out.org |= rest.org;
        for t in rest.tenants {
            if !out.tenants.contains(&t) {
                out.tenants.push(t);
            }
        }
        out
    }
}

impl PolicyDecision {
    /// The stricter of two decisions on one call: a denial (the first's
    /// when both deny), else an allow asking every approval and scope
    /// either asks.
    pub fn stricter(self, other: PolicyDecision) -> PolicyDecision {
        if !self.allow {
            return self;
        }
        if !other.allow {
            return other;
        }
        let approval = match (self.approval, other.approval) {
            (Some(a), Some(b)) => Some(a.stricter(b)),
            (a, b) => a.or(b),
        };
        let scopes = match (self.scopes, other.scopes) {
            (Some(a), Some(b)) => {
                let mut all = a.to_vec();
                all.extend(b.iter().filter(|s| !a.contains(s)).cloned());
                Some(all.into())
            }
            (a, b) => a.or(b),
        };
        PolicyDecision {
            allow: true,
            reason: self.reason,
            scopes,
            approval,
        }
    }

    pub(super) fn deny(reason: &str) -> Self {
        PolicyDecision {
            allow: false,
            reason: reason.into(),
            scopes: None,
            approval: None,
        }
    }
}

pub(super) fn decision_of(v: &Value) -> PolicyDecision {
    if matches!(v, Value::Undefined) {
        return PolicyDecision::deny("policy_undefined");
    }
    let Ok(obj) = v.as_object() else {
        return PolicyDecision::deny("policy_invalid_decision");
    };
    let allow = match obj.get(&Value::from("allow")) {
        Some(Value::Bool(b)) => *b,
        _ => return PolicyDecision::deny("policy_invalid_decision"),
    };
    let reason: Arc<str> = match obj.get(&Value::from("reason")) {
        Some(Value::String(s)) => s.as_ref().into(),
        _ if allow => "allowed".into(),
        _ => "denied".into(),
    };
    let scopes: Option<Arc<[String]>> = match (
        obj.get(&Value::from("scopes")),
        obj.get(&Value::from("scope")),
    ) {
        (Some(Value::Array(a)), _) => {
            let mut out = Vec::with_capacity(a.len());
            for s in a.iter() {
                match s {
                    Value::String(s) if scope_token(s) => out.push(s.to_string()),
                    _ => return PolicyDecision::deny("policy_invalid_decision"),
                }
            }
            Some(out.into())
        }
        (None, Some(Value::String(s))) => {
            let out: Vec<String> = s
                .split(' ')
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect();
            if !out.iter().all(|t| scope_token(t)) {
                return PolicyDecision::deny("policy_invalid_decision");
            }
            Some(out.into())
        }
        (None, None) => None,
        _ => return PolicyDecision::deny("policy_invalid_decision"),
    };
    let max = warden_config::guards::MAX_APPROVERS;
    let count = |v: &Value| match v.as_u64() {
        Ok(n) if (1..=u64::from(max)).contains(&n) => Some(n as u8),
        _ => None,
    };
    let approval = match obj.get(&Value::from("require_approval")) {
        None | Some(Value::Bool(false)) | Some(Value::Null) => None,
        Some(Value::Bool(true)) => Some(ApprovalAsk::new(1, reason.clone())),
        Some(n @ Value::Number(_)) => match count(n) {
            Some(approvers) => Some(ApprovalAsk::new(approvers, reason.clone())),
            None => return PolicyDecision::deny("policy_invalid_decision"),
        },
        Some(Value::Object(o)) => {
            let approvers = match o.get(&Value::from("approvers")) {
                None => Some(1),
                Some(n) => count(n),
            };
            let why = match o.get(&Value::from("reason")) {
                None => Some(reason.clone()),
                Some(Value::String(s)) => Some(s.as_ref().into()),
                Some(_) => None,
            };
            match (approvers, why) {
                (Some(approvers), Some(reason)) => Some(ApprovalAsk::new(approvers, reason)),
                _ => return PolicyDecision::deny("policy_invalid_decision"),
            }
        }
        Some(_) => return PolicyDecision::deny("policy_invalid_decision"),
    };
    PolicyDecision {
        allow,
        reason,
        scopes: scopes.filter(|s| !s.is_empty()),
        approval: approval.filter(|_| allow),
    }
}

/// An RFC 6749 scope token: visible ASCII but `"` and `\`.
pub(super) fn scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\')
}
