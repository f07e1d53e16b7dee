//! Held calls: a gateway claims one (`POST /v1/approvals/claim`: pending,
//! approved and taken once, or denied), approvers list and decide them,
//! administrators read them (a tenant admin, their tenant's).

use std::time::SystemTime;

use axum::extract::Path;

use super::Agent;
use crate::approvals::{ApprovalView, Claim, Refused, Verdict};
use crate::caller::Caller;
use crate::server::error::{ok, ApiError, ApiResult};
use crate::server::extract::{JsonBody, JsonOrEmpty, QueryPairs, What};
use crate::server::Api;

pub async fn claim(agent: Agent, caller: Caller, JsonBody(c): JsonBody<Claim>) -> ApiResult {
    agent
        .tokens
        .speaks_for(&caller, &c.gateway)
        .map_err(ApiError::forbidden)?;
    let (gw, tool, principal) = (c.gateway.clone(), c.tool.clone(), c.principal.clone());
    // Off the runtime's workers: on a database, a claim waits for the
    // approvals' fleet-wide turn.
    let api = agent.0.clone();
    let a = tokio::task::spawn_blocking(move || {
        api.approvals
            .claim(c, api.store.signer(), SystemTime::now())
    })
    .await
    .map_err(ApiError::internal)??;
    let state = a.state();
    agent.metrics.claims.with_label_values(&[state]).inc();
    if state != "pending" || a.created() {
        agent.store.record(
            &format!("gateway:{gw}"),
            &format!("approval.claim.{state}"),
            None,
            true,
            &format!("{} {principal} {tool}", a.id()),
        );
    }
    ok(&a)
}

/// The approver asking (whose own calls and tenants shape what they see).
fn viewer(caller: &Caller) -> Option<&str> {
    match caller {
        Caller::Approver { name, .. } => Some(name),
        _ => None,
    }
}

/// An approver the identity provider made (not of the approvers file):
/// who it made them.
fn signed_in(caller: &Caller) -> Option<crate::approvals::Approver> {
    match caller {
        Caller::Approver {
            tenants,
            signed_in: Some(s),
            ..
        } => Some(crate::approvals::Approver {
            token: [0; 32],
            principals: s.principals.clone(),
            tenants: tenants.clone(),
        }),
        _ => None,
    }
}

pub async fn list(agent: Agent, caller: Caller, q: QueryPairs) -> ApiResult {
    let now = SystemTime::now();
    let all =
        q.0.iter()
            .any(|(k, v)| k == "all" && (v == "1" || v == "true"));
    let list = match (caller.actor().and_then(|a| a.tenant()), signed_in(&caller)) {
        (Some(t), _) => agent.approvals.list_in_view(all, &[t.to_owned()], now),
        (None, Some(w)) => agent.approvals.list_shown_to(&w, all, now),
        (None, None) => agent.approvals.list_view(all, viewer(&caller), now),
    };
    ok(&serde_json::json!({"approvals": list}))
}

pub async fn show(
    agent: Agent,
    caller: Caller,
    What(what): What,
    Path(id): Path<String>,
) -> ApiResult {
    let now = SystemTime::now();
    if let Some((a, t)) = caller.actor().and_then(|a| Some((a, a.tenant()?))) {
        match agent.approvals.tenant_of(&id) {
            None => return Err(ApiError::not_found("no such approval")),
            Some(other) if !crate::admins::same_tenant(&other, t) => {
                return Err(agent.refuse(
                    a,
                    &what,
                    &format!("approval `{id}` is not of {}'s tenant", a.label()),
                ))
            }
            Some(_) => {}
        }
    }
    match signed_in(&caller) {
        Some(w) => agent.approvals.get_shown_to(&id, &w, now),
        None => agent.approvals.get_view(&id, viewer(&caller), now),
    }
    .map_or_else(|| Err(ApiError::not_found("no such approval")), |v| ok(&v))
}

/// An approver's optional comment.
#[derive(serde::Deserialize, Default)]
pub struct Decision {
    #[serde(default)]
    comment: Option<String>,
}

pub async fn approve(
    agent: Agent,
    caller: Caller,
    Path(id): Path<String>,
    JsonOrEmpty(b): JsonOrEmpty<Decision>,
) -> ApiResult {
    decided(&agent, &caller, &id, Verdict::Approve, b).await
}

pub async fn deny(
    agent: Agent,
    caller: Caller,
    Path(id): Path<String>,
    JsonOrEmpty(b): JsonOrEmpty<Decision>,
) -> ApiResult {
    decided(&agent, &caller, &id, Verdict::Deny, b).await
}

async fn decided(
    agent: &Agent,
    caller: &Caller,
    id: &str,
    verdict: Verdict,
    b: Decision,
) -> ApiResult {
    let Caller::Approver {
        name,
        signed_in: via,
        ..
    } = caller
    else {
        return Err(ApiError::forbidden(
            "only an approver's token may approve or deny",
        ));
    };
    // A CRITICAL call may ask for a recent sign-in (`critical` of the
    // provider file), on a console-minted token as in the console.
    if verdict == Verdict::Approve
        && agent
            .approvals
            .get_view(id, None, SystemTime::now())
            .is_some_and(|v| v.approval.risk.eq_ignore_ascii_case("critical")) // not a name comparison: a risk tier
        && via.as_ref().is_some_and(|s| !agent.signed_in_fresh(s))
    {
        return Err(ApiError::forbidden(
            "a CRITICAL approval needs a recent sign-in at the identity provider: approve it in the console",
        ));
    }
    let w = signed_in(caller);
    let (api, name, id) = (agent.0.clone(), name.clone(), id.to_owned());
    let v =
        tokio::task::spawn_blocking(move || api.decide(&name, w.as_ref(), &id, verdict, b.comment))
            .await
            .map_err(ApiError::internal)??;
    ok(&v)
}

impl Api {
    /// An approver's answer to a held call, recorded and counted (the API
    /// and the console both decide through here).
    ///
    /// `signed_in`: an approver the approvers file does not hold, whom
    /// the identity provider made one (a console sign-in).
    pub fn decide(
        &self,
        approver: &str,
        signed_in: Option<&crate::approvals::Approver>,
        id: &str,
        verdict: Verdict,
        comment: Option<String>,
    ) -> Result<ApprovalView, Refused> {
        let now = SystemTime::now();
        let res =
            self.approvals
                .decision_by(id, approver, signed_in, verdict.clone(), comment, now);
        let (action, verb) = match verdict {
            Verdict::Approve => ("approval.approve", "approve"),
            Verdict::Deny => ("approval.deny", "deny"),
        };
        self.store.record(
            &format!("approver:{approver}"),
            action,
            None,
            res.is_ok(),
            &match &res {
                Ok(_) => id.to_owned(),
                Err(e) => format!("{id}: {e}"),
            },
        );
        if res.is_ok() {
            self.metrics.decisions.with_label_values(&[verb]).inc();
        }
        res
    }
}
