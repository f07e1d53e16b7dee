//! The approval's domain types: a gateway's claim, an approval from its
//! first claim to its use or end, approvers' decisions, the signed grant
//! and what a claim is answered, serialised as `approvals.json` and the
//! API have always held them.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// What a gateway sends when a call needs approval.
#[derive(Debug, Clone, Deserialize)]
pub struct Claim {
    pub tenant: String,
    pub principal: String,
    pub server: String,
    pub tool: String,
    pub args_digest: String,
    /// Canonical arguments after the gateway's redactions.
    #[serde(default)]
    pub arguments: String,
    pub risk: String,
    pub reason: String,
    #[serde(default)]
    pub justification: Option<String>,
    pub required: u8,
    /// How long the approval may wait for approvers, in seconds.
    pub pending_secs: u64,
    /// How long an approved call stays usable, in seconds.
    pub grant_secs: u64,
    pub gateway: String,
    #[serde(default)]
    pub trace_id: Option<String>,
    /// The gateway's one-time value, echoed in the signed grant.
    #[serde(default)]
    pub nonce: Option<String>,
    /// The tenants whose own rules asked for this approval (a tenant's
    /// layer on the server it owns, when another tenant's principal calls
    /// it): only approvers who see each of them decide it.
    #[serde(default)]
    pub for_tenants: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Approve,
    Deny,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Decision {
    pub approver: String,
    pub verdict: Verdict,
    #[serde(with = "rfc3339")]
    pub at: SystemTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// An approver the approvers file does not hold (signed in through
    /// the identity provider): the principals they also were and the
    /// tenants they saw when they decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decider: Option<Decider>,
}

/// Who an approver outside the approvers file was when they decided.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Decider {
    pub principals: Vec<String>,
    pub tenants: Vec<String>,
}

/// One approval, from the first claim to its use or end.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Approval {
    pub id: String,
    pub binding: String,
    pub tenant: String,
    pub principal: String,
    pub server: String,
    pub tool: String,
    pub args_digest: String,
    pub arguments: String,
    pub risk: String,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
    pub required: u8,
    #[serde(with = "rfc3339")]
    pub requested_at: SystemTime,
    /// Pending until then; afterwards it lapses.
    #[serde(with = "rfc3339")]
    pub pending_until: SystemTime,
    pub grant_secs: u64,
    pub requested_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// See [`Claim::for_tenants`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub for_tenants: Vec<String>,
    pub decisions: Vec<Decision>,
    /// When enough approvers said yes.
    #[serde(default, with = "opt_rfc3339")]
    pub approved_at: Option<SystemTime>,
    /// When a gateway took it (single use), and which.
    #[serde(default, with = "opt_rfc3339")]
    pub used_at: Option<SystemTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_by: Option<String>,
    /// A denial is told to the caller once; the next claim starts anew.
    #[serde(default)]
    pub denial_told: bool,
    /// The webhooks (`--notify`) that took the notification of this held
    /// call: none is sent twice, whichever agent of a fleet sends it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notified: Vec<String>,
    /// A just-in-time grant's request (`POST /v1/grants`), not a held
    /// call: once approved it is listed to gateways until it expires, and
    /// no gateway's claim takes it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub jit: bool,
}

/// Where an approval stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Approved,
    Denied,
    Used,
    Expired,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Approved => "approved",
            State::Denied => "denied",
            State::Used => "used",
            State::Expired => "expired",
        }
    }
}

impl Approval {
    /// Whether it still answers a claim or a request of its binding:
    /// pending, approved, or denied within its pending time (a denial
    /// holds until then).
    pub fn in_play(&self, now: SystemTime) -> bool {
        match self.state(now) {
            State::Pending | State::Approved => true,
            State::Denied => now <= self.pending_until,
            State::Used | State::Expired => false,
        }
    }

    pub fn state(&self, now: SystemTime) -> State {
        if self.used_at.is_some() {
            State::Used
        } else if self.decisions.iter().any(|d| d.verdict == Verdict::Deny) {
            State::Denied
        } else if let Some(at) = self.approved_at {
            if now > at + Duration::from_secs(self.grant_secs) {
                State::Expired
            } else {
                State::Approved
            }
        } else if now > self.pending_until {
            State::Expired
        } else {
            State::Pending
        }
    }

    pub(super) fn approvers(&self) -> Vec<&str> {
        self.decisions
            .iter()
            .filter(|d| d.verdict == Verdict::Approve)
            .map(|d| d.approver.as_str())
            .collect()
    }

    /// The view approvers and gateways see.
    pub fn view_of(&self, now: SystemTime) -> ApprovalView {
        ApprovalView {
            state: self.state(now),
            approvals: self.approvers().len(),
            usable_until: self
                .approved_at
                .map(|at| fmt(at + Duration::from_secs(self.grant_secs))),
            waiting_secs: now
                .duration_since(self.requested_at)
                .unwrap_or_default()
                .as_secs(),
            approval: self.clone(),
        }
    }
}

/// One approval as approvers and gateways see it: the approval, where it
/// stands, how many approved, until when it is usable (once approved) and
/// how long it has waited.
#[derive(Debug, Clone, Serialize)]
pub struct ApprovalView {
    #[serde(flatten)]
    pub approval: Approval,
    pub state: State,
    pub approvals: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usable_until: Option<String>,
    pub waiting_secs: u64,
}

/// The signed answer a gateway forwards a held call on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Grant {
    pub id: String,
    pub binding: String,
    pub approvers: Vec<Decision>,
    #[serde(with = "rfc3339")]
    pub used_at: SystemTime,
    pub gateway: String,
    /// The claim's nonce: a grant answers one claim only.
    #[serde(default)]
    pub nonce: Option<String>,
}

/// The answer to a claim.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum ClaimAnswer {
    /// Taken: forward the call. `grant` is the signed [`Grant`] (absent
    /// when the agent has no signing key, like its bundles).
    Approved {
        id: String,
        approvers: Vec<Decision>,
        grant: Option<String>,
    },
    Pending {
        id: String,
        required: u8,
        approvals: usize,
        #[serde(with = "rfc3339")]
        expires_at: SystemTime,
        created: bool,
    },
    Denied {
        id: String,
        by: Decision,
    },
}

impl ClaimAnswer {
    /// `approved`, `pending` or `denied`, as the answer's `state` says.
    pub fn state(&self) -> &'static str {
        match self {
            ClaimAnswer::Approved { .. } => "approved",
            ClaimAnswer::Pending { .. } => "pending",
            ClaimAnswer::Denied { .. } => "denied",
        }
    }

    /// The approval the claim is answered by.
    pub fn id(&self) -> &str {
        match self {
            ClaimAnswer::Approved { id, .. }
            | ClaimAnswer::Pending { id, .. }
            | ClaimAnswer::Denied { id, .. } => id,
        }
    }

    /// Whether this claim opened the approval (the first claim of a call).
    pub fn created(&self) -> bool {
        matches!(self, ClaimAnswer::Pending { created: true, .. })
    }
}

pub(super) fn fmt(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

pub(super) mod rfc3339 {
    use std::time::SystemTime;
    pub fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(*t))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s: String = serde::Deserialize::deserialize(d)?;
        humantime::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}

pub(super) mod opt_rfc3339 {
    use std::time::SystemTime;
    pub fn serialize<S: serde::Serializer>(
        t: &Option<SystemTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.collect_str(&humantime::format_rfc3339_millis(*t)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<SystemTime>, D::Error> {
        let s: Option<String> = serde::Deserialize::deserialize(d)?;
        s.map(|s| humantime::parse_rfc3339(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}
